"""Training checkpoints: everything a run needs to continue exactly, in one MindSpore ``.ckpt``.

A checkpoint holds the trained weights under MindFormers' names (all of them for full fine-tuning, with
``lm_head.weight`` as a copy of the tied embedding table; the adapters alone for LoRA, whose frozen base
comes from the run's ``load_checkpoint``), the optimizer state (``adam_m.*``, ``adam_v.*``, ``global_step``),
the loss scale (``scale_sense``), and as entries of their own the epoch, the step, the number of batches
of the epoch already used, and the resolved run config. The data order of an epoch follows from the seed
and the epoch alone, so the position in it is all the data state there is.

Files are ``<prefix>_rank_<rank>-<epoch>_<step>.ckpt`` in ``<output_dir>/checkpoint/rank_<rank>/``, written
under a temporary name and renamed into place; the oldest beyond ``keep_checkpoint_max`` are removed after
a new one lands.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import numpy as np

STATE_KEYS = ("epoch_num", "step_num", "batches_done", "run_config", "pet_config")
# Entries of a training checkpoint that are training state, not model weights: the optimizer's moments
# (and MindFormers' accumulated gradients) and the step's scalars
OPTIMIZER_PREFIXES = ("adam_m.", "adam_v.", "accu_grads.")
OPTIMIZER_SCALARS = {"global_step", "scale_sense", "learning_rate", "current_iterator_step",
                     "last_overflow_iterator_step"}
_NAME = re.compile(r"^(?P<prefix>.+)_rank_(?P<rank>\d+)-(?P<epoch>\d+)_(?P<step>\d+)\.ckpt$")


class TrainingCheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not belong to this run; the message names it."""


@dataclass
class TrainingState:
    """Where a run stands: the optimizer steps done, the epoch, and the batches of that epoch used."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0


def is_model_weight(name: str) -> bool:
    """Whether a training checkpoint's entry ``name`` is a model weight rather than optimizer state."""
    return not name.startswith(OPTIMIZER_PREFIXES) and name not in OPTIMIZER_SCALARS


def checkpoint_dir(output_dir: str | os.PathLike, rank: int = 0) -> Path:
    return Path(output_dir) / "checkpoint" / f"rank_{rank}"


def checkpoint_name(prefix: str, rank: int, epoch: int, step: int) -> str:
    return f"{prefix}_rank_{rank}-{epoch}_{step}.ckpt"


def list_checkpoints(directory: str | os.PathLike, prefix: str | None = None) -> list[Path]:
    """The finished checkpoints in ``directory``, oldest step first (temporary files are skipped)."""
    found = []
    for path in Path(directory).glob("*.ckpt"):
        match = _NAME.match(path.name)
        if match and not path.name.startswith(".") and (prefix is None or match["prefix"] == prefix):
            found.append((int(match["step"]), path))
    return [path for _, path in sorted(found)]


def save_training_checkpoint(path: Path, tensors: dict[str, np.ndarray | ms.Parameter], state: TrainingState,
                             run_config_text: str, pet_config: dict | None) -> Path:
    """Write ``tensors`` and ``state`` to ``path`` atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.partial.ckpt")  # MindSpore appends .ckpt to other names
    entries = [{"name": name, "data": value if isinstance(value, ms.Parameter) else ms.Tensor(value)}
               for name, value in tensors.items()]
    extra = {"epoch_num": state.epoch, "step_num": state.step, "batches_done": state.batches_done,
             "run_config": run_config_text, "pet_config": json.dumps(pet_config)}
    try:
        ms.save_checkpoint(entries, str(temporary), append_dict=extra)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def prune_checkpoints(directory: Path, prefix: str, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` checkpoints of ``prefix`` in ``directory``; returns the removed."""
    removed = list_checkpoints(directory, prefix)[:-keep] if keep > 0 else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def load_training_checkpoint(path: str | os.PathLike
                             ) -> tuple[dict[str, ms.Parameter], TrainingState, str, dict | None]:
    """Read a training checkpoint: its tensors, its :class:`TrainingState`, its run config text and its
    pet_config. Raises :class:`TrainingCheckpointError` naming the file when it is missing, unreadable or
    not a glm-train checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise TrainingCheckpointError(f"no checkpoint at {path}")
    try:
        loaded = ms.load_checkpoint(str(path))
    except Exception as error:  # MindSpore raises ValueError/RuntimeError with varying texts
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TrainingCheckpointError(f"{path}: not a readable MindSpore checkpoint ({reason})") from None
    missing = [key for key in STATE_KEYS if key not in loaded]
    if missing:
        raise TrainingCheckpointError(f"{path}: not a glm-train checkpoint (it lacks {', '.join(missing)}); "
                                      "to start from model weights, give it as --load_checkpoint without --resume")
    state = TrainingState(step=_as_int(loaded.pop("step_num")), epoch=_as_int(loaded.pop("epoch_num")),
                          batches_done=_as_int(loaded.pop("batches_done")))
    run_config_text = _as_str(loaded.pop("run_config"))
    pet_config = json.loads(_as_str(loaded.pop("pet_config")))
    return loaded, state, run_config_text, pet_config


def _as_int(value) -> int:
    return int(value.asnumpy()) if hasattr(value, "asnumpy") else int(value)


def _as_str(value) -> str:
    return value if isinstance(value, str) else str(value.asnumpy() if hasattr(value, "asnumpy") else value)


def latest_checkpoint(directory: Path, prefix: str) -> Path | None:
    found = list_checkpoints(directory, prefix)
    return found[-1] if found else None

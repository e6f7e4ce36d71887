"""``glm-train merge``: one full checkpoint from the per-rank checkpoints of a distributed run, or per-rank
checkpoints split from a full one, through ``mindspore.transform_checkpoints`` (the seed's recipe).

    output/checkpoint/rank_N/<newest .ckpt> ─► model weights only ─► transform_checkpoints(strategy file)
                                            ─► DST/rank_0/<prefix>0.ckpt  (merge: no --dst_strategy_file)
                                            ─► DST/rank_N/<prefix>N.ckpt  (split: --dst_strategy_file)

A model-parallel run's ranks hold slices whose layout its strategy file records (``strategy_ckpt_save_file``).
A data-parallel run has no strategy file: its ranks hold whole, identical replicas, so the merge checks that
every rank agrees bit for bit and takes rank 0's. Optimizer state and the run's bookkeeping entries are left
out: the output is model weights, with ``lm_head.weight`` as the copy of the word embeddings that glm-core
loads (strategy files do not list it: the training network ties the head to the table).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from glm_core.checkpoint import open_checkpoint
from glm_core.checkpoint_file import CheckpointWriter
from glm_train.checkpoints import is_model_weight, list_checkpoints
from glm_train.network import EMBEDDING, LM_HEAD

_RANK_FOLDER = re.compile(r"^rank_(\d+)$")


class MergeError(ValueError):
    """Checkpoints or strategy files that cannot be merged or split; the message names the file."""


def rank_checkpoints(directory: str | os.PathLike, step: int | None = None) -> list[Path]:
    """The checkpoint of each rank under ``directory`` (``rank_0/``, ``rank_1/`` …), in rank order.

    In each rank folder: glm-train's checkpoint at ``step`` (default: its newest), or the folder's only
    ``.ckpt``. Raises :class:`MergeError` for a folder without rank folders, a gap in the ranks, or a rank
    folder where the checkpoint cannot be chosen.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MergeError(f"--src_checkpoints_dir {directory}: no such folder")
    ranks = {int(match[1]): path for path in directory.iterdir()
             if path.is_dir() and (match := _RANK_FOLDER.match(path.name))}
    if not ranks:
        raise MergeError(f"--src_checkpoints_dir {directory}: no rank_N folders in it (a run's checkpoints are "
                         "in <output_dir>/checkpoint/rank_N)")
    if sorted(ranks) != list(range(len(ranks))):
        raise MergeError(f"--src_checkpoints_dir {directory}: rank folders {sorted(ranks)} are not rank_0 to "
                         f"rank_{len(ranks) - 1}")
    chosen = []
    for rank in range(len(ranks)):
        folder = ranks[rank]
        trained = list_checkpoints(folder)
        if trained:
            matching = [path for path in trained if step is None or path.stem.endswith(f"_{step}")]
            if not matching:
                raise MergeError(f"{folder}: no checkpoint of step {step} (it holds "
                                 f"{', '.join(path.name for path in trained)})")
            chosen.append(matching[-1])
            continue
        others = sorted(path for path in folder.glob("*.ckpt") if not path.name.startswith("."))
        if len(others) != 1:
            raise MergeError(f"{folder}: {'no' if not others else len(others)} checkpoint files"
                             f"{'' if not others else ' and none of them glm-train’s'}; keep one per rank folder")
        chosen.append(others[0])
    return chosen


def _model_entries(path: Path) -> list[str]:
    """The names of ``path``'s float tensors that are model weights."""
    try:
        with open_checkpoint(path) as reader:
            return [name for name, tensor in reader.tensors.items() if tensor.dtype is not None
                    and is_model_weight(name)]
    except (OSError, ValueError) as error:
        raise MergeError(str(error)) from None


def check_replicas_agree(checkpoints: list[Path]) -> None:
    """Raise :class:`MergeError` naming the first weight in which a rank differs from rank 0 (values,
    shape or presence), comparing one tensor at a time."""
    reference = checkpoints[0]
    names = _model_entries(reference)
    with open_checkpoint(reference) as first:
        for rank, path in enumerate(checkpoints[1:], 1):
            other_names = _model_entries(path)
            if set(other_names) != set(names):
                odd = sorted(set(other_names) ^ set(names))
                raise MergeError(f"{path}: rank {rank} holds other weights than rank 0 ({', '.join(odd[:4])}); "
                                 "a model-parallel run's checkpoints merge with --src_strategy_file")
            with open_checkpoint(path) as other:
                for name in names:
                    if not np.array_equal(first.array(name), other.array(name)):
                        raise MergeError(f"{path}: rank {rank}'s {name} differs from rank 0's; the replicas of a "
                                         "data-parallel run must agree (a model-parallel run needs "
                                         "--src_strategy_file)")


def _write_weights(source: Path, target: Path, tie_head: bool) -> bool:
    """Copy ``source``'s model weights to ``target`` (streamed), ``lm_head.weight`` made the embedding's copy
    when ``tie_head``, else left out. Returns whether ``source`` held an ``lm_head.weight``."""
    names = _model_entries(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open_checkpoint(source) as reader, CheckpointWriter(target) as writer:
        for name in names:
            if name != LM_HEAD:
                writer.add(name, reader.array(name))
        if tie_head and EMBEDDING in reader.tensors:
            writer.add(LM_HEAD, reader.array(EMBEDDING))
    return LM_HEAD in names


def _transform(checkpoints: list[Path], staging: Path, prefix: str, src_strategy_file: str | None,
               dst_strategy_file: str | None) -> None:
    """transform_checkpoints of ``checkpoints`` (rank order) into ``staging/output/rank_N/<prefix>N.ckpt``."""
    import mindspore as ms

    tied = False
    for rank, path in enumerate(checkpoints):  # weights only: transform_checkpoints takes tensors alone
        tied |= _write_weights(path, staging / "source" / f"rank_{rank}" / "weights.ckpt", tie_head=False)
    try:
        ms.transform_checkpoints(str(staging / "source"), str(staging / "transformed"), prefix,
                                 src_strategy_file, dst_strategy_file)
    except (ValueError, TypeError, KeyError, RuntimeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MergeError(f"transform_checkpoints with strategy {src_strategy_file or dst_strategy_file}: "
                         f"{reason}") from None
    for folder in (staging / "transformed").iterdir():
        for file in folder.glob("*.ckpt"):
            _write_weights(file, staging / "output" / folder.name / file.name, tie_head=tied)


def _check_strategy(path: str | None, flag: str) -> str | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise MergeError(f"{flag} {path}: no such file")
    return str(path)


def transform(src_checkpoints_dir: str | os.PathLike, dst_checkpoints_dir: str | os.PathLike,
              src_strategy_file: str | None = None, dst_strategy_file: str | None = None, prefix: str = "glm-6b",
              step: int | None = None, overwrite: bool = False) -> list[Path]:
    """Merge (no ``dst_strategy_file``) or split (``dst_strategy_file``) checkpoints; see the module docstring.

    ``src_strategy_file``: the layout of the source ranks (None: each rank holds the whole model, so ranks
    must agree and rank 0's weights are taken). Returns the written checkpoints, ``DST/rank_N/<prefix>N.ckpt``
    in rank order. The output folder is built beside ``dst_checkpoints_dir`` and renamed into place; an
    existing one is refused unless ``overwrite``, and then replaced whole. Raises :class:`MergeError`.
    """
    source, destination = Path(src_checkpoints_dir).resolve(), Path(dst_checkpoints_dir).resolve()
    if destination == source or source in destination.parents or destination in source.parents:
        raise MergeError(f"--dst_checkpoints_dir {dst_checkpoints_dir} overlaps --src_checkpoints_dir "
                         f"{src_checkpoints_dir}; write the output elsewhere")
    if destination.exists() and any(destination.iterdir()) and not overwrite:
        raise MergeError(f"--dst_checkpoints_dir {dst_checkpoints_dir} is not empty; choose another or give "
                         "--overwrite to replace it")
    src_strategy_file = _check_strategy(src_strategy_file, "--src_strategy_file")
    dst_strategy_file = _check_strategy(dst_strategy_file, "--dst_strategy_file")
    checkpoints = rank_checkpoints(source, step)
    if src_strategy_file is None:
        check_replicas_agree(checkpoints)
        checkpoints = checkpoints[:1]
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        output = staging / "output"
        if src_strategy_file is None and dst_strategy_file is None:  # replicas: rank 0's weights are the model
            _write_weights(checkpoints[0], output / "rank_0" / f"{prefix}0.ckpt", tie_head=True)
        else:
            _transform(checkpoints, staging, prefix, src_strategy_file, dst_strategy_file)
        written = [destination / folder.name / file.name
                   for folder in sorted(output.iterdir(), key=lambda p: int(p.name.split("_")[1]))
                   for file in folder.glob("*.ckpt")]
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(output, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


# ----------------------------------------------------------------------------------------- subcommand
def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--src_checkpoints_dir", required=True,
                        help="the run's checkpoint folder, holding rank_0/, rank_1/ … (<output_dir>/checkpoint)")
    parser.add_argument("--src_strategy_file",
                        help="the run's strategy file (strategy_ckpt_save_file); none for a data-parallel run")
    parser.add_argument("--dst_checkpoints_dir", required=True, help="where the result goes (DST/rank_N/…)")
    parser.add_argument("--dst_strategy_file",
                        help="split for this strategy instead of merging into one full checkpoint")
    parser.add_argument("--prefix", default="glm-6b", help="the output files' name prefix (default glm-6b)")
    parser.add_argument("--step", type=int, help="take each rank's checkpoint of this step (default: the newest)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --dst_checkpoints_dir")


def run_merge(args: argparse.Namespace) -> int:
    written = transform(args.src_checkpoints_dir, args.dst_checkpoints_dir, args.src_strategy_file,
                        args.dst_strategy_file, args.prefix, args.step, args.overwrite)
    for path in written:
        print(f"written: {path}")
    return 0

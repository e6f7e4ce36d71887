"""``glm-train merge-lora``: fold a LoRA adapter checkpoint into its base checkpoint.

    base.ckpt (MindFormers names) + adapter.ckpt (<linear>.mindpet_delta_lora_a/_b) ─► merged.ckpt
        <linear>.weight  ─►  W + B A · lora_alpha / lora_rank   (in float64, written in W's dtype)

The merged checkpoint holds the base model's weights (``transformer.*`` and ``lm_head.weight``; a base
without ``lm_head.weight`` gets the tied word embeddings under that name) and loads in glm-core as any
other, its Linears on the CPU kernels. The LoRA settings come from the ``pet_config`` that glm-train stores
in its checkpoints, else from the caller. The base is streamed one tensor at a time (ChatGLM-6B's 12.4 GB
never sits in memory); the output is written under a temporary name and renamed into place, and is never
one of the inputs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from glm_core.checkpoint import open_checkpoint, save_checkpoint
from glm_core.checkpoint_file import TENSOR_TYPES, CheckpointReader
from glm_core.lora import LoRAConfig, adapter_pairs, check_adapter_fits, fold_adapter, read_adapter, resolve_lora_config
from glm_train.network import EMBEDDING, LM_HEAD

MODEL_PREFIXES = ("transformer.", "lm_head.")  # a GLM checkpoint's model weights; the rest is training state


class _MergedWeights(Mapping):
    """The merged checkpoint as a mapping read on demand: each base weight from the file, the ones with an
    adapter folded, so that writing it holds one tensor in memory at a time."""

    def __init__(self, reader: CheckpointReader, pairs: dict[str, tuple[np.ndarray, np.ndarray]],
                 config: LoRAConfig, dtype: str | None):
        self.reader, self.pairs, self.config, self.dtype = reader, pairs, config, dtype
        self.sources = {name: name for name in reader.tensors if name.startswith(MODEL_PREFIXES)}
        if LM_HEAD not in self.sources and EMBEDDING in self.sources:
            self.sources[LM_HEAD] = EMBEDDING  # the head is the embedding table, as in training

    def __len__(self) -> int:
        return len(self.sources)

    def __iter__(self) -> Iterator[str]:
        return iter(self.sources)

    def __getitem__(self, name: str) -> np.ndarray:
        weight = self.reader.array(self.sources[name])
        linear = name.removesuffix(".weight")
        if name.endswith(".weight") and linear in self.pairs:
            weight = fold_adapter(weight, *self.pairs[linear], self.config, linear)
        return weight if self.dtype is None else weight.astype(self.dtype)


def merge_lora_checkpoint(base: str | os.PathLike, adapter: str | os.PathLike, output: str | os.PathLike,
                          lora_config: LoRAConfig | None = None, dtype: str | None = None) -> Path:
    """Write ``output``: the model weights of the ``base`` checkpoint with the adapters of the ``adapter``
    checkpoint folded in (see the module docstring). Returns ``output``.

    ``adapter`` may be a whole LoRA training checkpoint: its optimizer state, counters and run config are
    skipped, and its stored ``pet_config`` gives the LoRA settings; ``lora_config`` gives them for an adapter
    that stores none (when both are there, their rank and alpha must agree). Training state in ``base`` (a
    full fine-tuning checkpoint's ``adam_m.*`` …) is left out. ``dtype`` (``"float16"``/``"float32"``) casts
    every tensor written; by default each keeps the base's dtype, so a float16 base rounds the merged weights
    to float16.

    Raises ``FileNotFoundError`` for a missing input and ``ValueError``, naming the file, for an output that
    is an input or does not end in ``.ckpt``, an unreadable checkpoint, an adapter without LoRA tensors or
    settings, or one that does not fit the base; nothing is written then.
    """
    base, adapter, output = Path(base), Path(adapter), Path(output)
    for role, path in (("base", base), ("adapter", adapter)):
        if not path.is_file():
            raise FileNotFoundError(f"no {role} checkpoint at {path}")
        if output.resolve() == path.resolve() or (output.exists() and output.samefile(path)):
            raise ValueError(f"the output {output} is the {role} checkpoint: write the merged checkpoint to a new "
                             "file")
    if output.suffix != ".ckpt":
        raise ValueError(f"the output {output} must end in .ckpt")
    if dtype is not None and dtype not in TENSOR_TYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(TENSOR_TYPES)}")
    tensors, stored = read_adapter(adapter)
    config = resolve_lora_config(stored, lora_config, str(adapter))
    try:
        pairs = adapter_pairs(tensors)
    except ValueError as error:
        raise ValueError(f"{adapter}: {error}") from None
    with open_checkpoint(base) as reader:
        for linear, (lora_a, lora_b) in pairs.items():
            weight = reader.tensors.get(f"{linear}.weight")
            if weight is None or weight.dtype is None:
                raise ValueError(f"{adapter} holds an adapter for {linear}, but the base checkpoint {base} has no "
                                 f"float {linear}.weight: is it the base this adapter was trained on?")
            check_adapter_fits(weight.shape, lora_a, lora_b, config, f"{linear} in {adapter}")
        save_checkpoint(_MergedWeights(reader, pairs, config, dtype), output)
    return output


def add_merge_lora_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``glm-train merge-lora``."""
    parser.description = ("Fold a LoRA adapter checkpoint into its base checkpoint: W + B A · lora_alpha / "
                          "lora_rank for every Linear with an adapter. The output loads in glm-core like any "
                          "model checkpoint.")
    parser.add_argument("--base", required=True, type=Path, metavar="CKPT",
                        help="the base model checkpoint the adapter was trained on (MindFormers names)")
    parser.add_argument("--adapter", required=True, type=Path, metavar="CKPT",
                        help="a LoRA run's checkpoint (its optimizer state and counters are skipped)")
    parser.add_argument("--output", required=True, type=Path, metavar="CKPT",
                        help="the merged checkpoint to write (.ckpt; never one of the inputs)")
    parser.add_argument("--lora_rank", type=int, metavar="R",
                        help="for an adapter that stores no pet_config (glm-train's checkpoints store it): the "
                             "rank it was trained with; give --lora_alpha too")
    parser.add_argument("--lora_alpha", type=float, metavar="ALPHA",
                        help="for an adapter that stores no pet_config: the alpha it was trained with")
    parser.add_argument("--dtype", choices=list(TENSOR_TYPES),
                        help="dtype of the merged tensors (default: each keeps the base's; float32 keeps the "
                             "adapter's update unrounded in a float16 base)")


def run_merge_lora(args: argparse.Namespace) -> int:
    """Run ``glm-train merge-lora`` with parsed ``args``; prints where the merged checkpoint went and returns 0.

    Raises ``ValueError``/``FileNotFoundError`` (one line each, naming the flag or file) for the caller to
    report with exit status 2.
    """
    if (args.lora_rank is None) != (args.lora_alpha is None):
        given, missing = ("--lora_rank", "--lora_alpha") if args.lora_alpha is None else ("--lora_alpha",
                                                                                          "--lora_rank")
        raise ValueError(f"{given} needs {missing} as well: together they give an adapter's scaling alpha / rank")
    lora_config = (None if args.lora_rank is None
                   else LoRAConfig(lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=0.0))
    output = merge_lora_checkpoint(args.base, args.adapter, args.output, lora_config, args.dtype)
    print(f"merged {args.adapter} into {args.base}: {output}")
    return 0

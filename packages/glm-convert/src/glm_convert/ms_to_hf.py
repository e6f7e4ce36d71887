"""A MindSpore ``.ckpt`` (fine-tuned, LoRA-merged...) → a Hugging Face ChatGLM-6B folder.

The folder holds ``pytorch_model-0000N-of-0000M.bin`` shards and ``pytorch_model.bin.index.json`` (or
``model-*.safetensors`` and ``model.safetensors.index.json``), THUDM's ``config.json`` and the tokenizer
files found beside the checkpoint. Each layer's ``rotary_emb.inv_freq`` buffer, which the MindSpore
checkpoint drops, is put back, so ``transformers`` loads the folder without missing-key warnings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file as save_safetensors
from tqdm import tqdm

from glm_convert.errors import UnreadableFileError
from glm_convert.hf_weights import SAFETENSORS_INDEX, TORCH_INDEX
from glm_convert.layout import (
    LM_HEAD,
    WORD_EMBEDDINGS,
    check_weights,
    hf_weight_shapes,
    inv_freq,
    mindspore_weight_shapes,
)
from glm_convert.model_folder import (
    CONFIG_NAME,
    TOKENIZER_FILES,
    ConfigSource,
    config_file,
    folder_of,
    hf_config,
    load_config,
)
from glm_convert.staging import StagedFiles, check_destination, refuse_overwriting_inputs
from glm_convert.summary import ConversionSummary
from glm_core.checkpoint_file import CheckpointReader, UnreadableCheckpointError
from glm_core.config import GLMConfig
from glm_core.names import mindformers_name

logger = logging.getLogger("glm_convert")

DEFAULT_MAX_SHARD_BYTES = 2_000_000_000  # transformers' "2GB"
# The weights files of a Hugging Face folder, by the names transformers (and hf_weights) look for.
EXPORT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", SAFETENSORS_INDEX, TORCH_INDEX)
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str | int) -> int:
    """Bytes in ``"2GB"``, ``"500MB"``, ``"1GiB"`` or a plain number (units as transformers reads them)."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", str(text), re.IGNORECASE)
        if not match:
            raise ValueError(f"not a size: {text!r}; write e.g. 2GB, 500MB or 1GiB")
        value = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").upper()])
    if value < 1:
        raise ValueError(f"a shard size must be positive, got {text!r}")
    return value


def plan_shards(sizes: dict[str, int], max_shard_bytes: int) -> list[list[str]]:
    """Split names (in order) into shards as transformers does: a new shard starts when the next tensor
    would take the current one past ``max_shard_bytes``; a tensor larger than that gets a shard of its own.
    """
    shards: list[list[str]] = [[]]
    filled = 0
    for name, size in sizes.items():
        if shards[-1] and filled + size > max_shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += size
    return shards


def _sources(config: GLMConfig, stored: dict[str, tuple[int, ...]]) -> dict[str, str | None]:
    """Hugging Face name → the checkpoint tensor holding it, in the model's order; None for ``inv_freq``
    (computed from the config) and the word embeddings for a head the checkpoint lacks."""
    sources = {name: mindformers_name(name) for name in hf_weight_shapes(config)}
    if LM_HEAD not in stored:
        sources[LM_HEAD] = mindformers_name(WORD_EMBEDDINGS)
    return sources


def convert_ms_to_hf(ckpt: str | os.PathLike, dst_dir: str | os.PathLike, *, config: ConfigSource = None,
                     safetensors: bool = False, max_shard_size: str | int = DEFAULT_MAX_SHARD_BYTES,
                     progress: bool = False) -> ConversionSummary:
    """Convert a MindSpore checkpoint (MindFormers' names) to a Hugging Face ChatGLM-6B folder ``dst_dir``.

    Tensors keep their dtype. ``config``: a :class:`GLMConfig` or the path of a config.json, model folder
    or MindFormers YAML; default: the ``config.json`` beside ``ckpt``, else ChatGLM-6B's. ``safetensors``
    writes ``model-*.safetensors`` instead of torch ``.bin`` shards; ``max_shard_size`` (bytes or "2GB")
    bounds each shard. ``ice_text.model`` and ``tokenizer_config.json`` are copied when beside ``ckpt``.
    A missing ``lm_head.weight`` is filled from the word embeddings. Files are written under temporary
    names and renamed into place at the end; the weights files of an earlier export in ``dst_dir`` are
    removed then (see :class:`~glm_convert.staging.StagedFiles`), other files there are left alone.

    Raises ``FileNotFoundError`` for a missing checkpoint, :class:`~glm_convert.errors.UnreadableFileError`
    for a truncated or corrupt one, :class:`~glm_convert.errors.WeightsMismatchError` listing every unknown,
    missing or mis-shaped tensor, :class:`~glm_convert.errors.ConversionError` for a ``dst_dir`` that is a
    file or would overwrite an input (the checkpoint's own folder), ``ValueError`` for a bad size or config.
    """
    started = time.perf_counter()
    ckpt, dst_dir = Path(ckpt), Path(dst_dir)
    max_shard_bytes = parse_size(max_shard_size)
    check_destination(dst_dir, folder=True)
    try:
        reader = CheckpointReader(ckpt)
    except UnreadableCheckpointError as error:
        raise UnreadableFileError(str(error)) from None
    used_config = config_file(config, ckpt)
    config = load_config(config, ckpt)
    stored = {name: tensor.shape for name, tensor in reader.tensors.items()}
    stored.update(dict.fromkeys(reader.unsupported, ()))
    dtypes = {name: tensor.dtype.name if tensor.dtype is not None else tensor.tensor_type
              for name, tensor in reader.tensors.items()}
    dtypes.update(dict.fromkeys(reader.unsupported, "a map tensor"))
    check_weights(stored, mindspore_weight_shapes(config), config, str(ckpt), dtypes=dtypes, optional=(LM_HEAD,))
    if LM_HEAD not in stored:
        logger.info("%s has no %s: filling it from the word embeddings (ChatGLM-6B ties them)", ckpt, LM_HEAD)
    sources = _sources(config, stored)
    rotary_buffer = inv_freq(config)

    def tensor(name: str) -> torch.Tensor:
        if sources[name] is None:
            return torch.from_numpy(rotary_buffer.copy())
        data = reader.array(sources[name])
        # The head filled from the embeddings gets its own copy: safetensors refuses tensors sharing memory.
        return torch.from_numpy(data.copy() if sources[name] != mindformers_name(name) else data)

    sizes = {name: rotary_buffer.nbytes if source is None else reader.tensors[source].nbytes
             for name, source in sources.items()}
    shards = plan_shards(sizes, max_shard_bytes)
    stem, suffix, index_name = ("model", "safetensors", SAFETENSORS_INDEX) if safetensors else \
        ("pytorch_model", "bin", TORCH_INDEX)
    shard_names = [f"{stem}-{number:05d}-of-{len(shards):05d}.{suffix}" for number in range(1, len(shards) + 1)]
    torch_dtype = reader.tensors[mindformers_name(WORD_EMBEDDINGS)].dtype.name
    tokenizer_files = [folder_of(ckpt) / name for name in TOKENIZER_FILES]
    # An earlier export in dst_dir is replaced as a whole: transformers (and hf-to-ms) read safetensors
    # before .bin, so its stale shards would hide the new weights.
    earlier_export = sorted({path for pattern in EXPORT_PATTERNS for path in dst_dir.glob(pattern)})
    outputs = [dst_dir / name for name in (*shard_names, index_name, CONFIG_NAME, *TOKENIZER_FILES)]
    refuse_overwriting_inputs([*outputs, *earlier_export],
                              [ckpt, *tokenizer_files, *([used_config] if used_config else [])], dst_dir)
    if earlier_export:
        logger.info("replacing the earlier export in %s (%s)", dst_dir, ", ".join(path.name for path in earlier_export))
    weight_bytes = 0
    with StagedFiles(replaces=earlier_export) as staged, tqdm(total=len(sizes), unit="tensor", disable=not progress,
                                       desc="ms-to-hf") as bar:
        for shard_name, names in zip(shard_names, shards):
            path = staged.temporary(dst_dir / shard_name)
            state = {}
            for name in names:
                state[name] = tensor(name)
                bar.update()
            if safetensors:
                save_safetensors(state, path, metadata={"format": "pt"})
            else:
                torch.save(state, path)
            del state
            weight_bytes += path.stat().st_size
        index = {"metadata": {"total_size": sum(sizes.values())},
                 "weight_map": {name: shard_name for shard_name, names in zip(shard_names, shards) for name in names}}
        staged.temporary(dst_dir / index_name).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        staged.temporary(dst_dir / CONFIG_NAME).write_text(
            json.dumps(hf_config(config, torch_dtype), indent=2) + "\n", encoding="utf-8")
        for path in tokenizer_files:
            if path.is_file():
                shutil.copyfile(path, staged.temporary(dst_dir / path.name))
        missing = [path.name for path in tokenizer_files if not path.is_file()]
        if missing:
            logger.info("no %s beside %s: copy the tokenizer files into %s yourself", " or ".join(missing), ckpt,
                        dst_dir)
    parameters = sum(int(np.prod(shape)) for shape in hf_weight_shapes(config).values())
    return ConversionSummary(dst_dir, len(sizes), parameters, weight_bytes, time.perf_counter() - started)

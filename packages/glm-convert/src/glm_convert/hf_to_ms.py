"""Hugging Face ChatGLM-6B weights → a MindSpore ``.ckpt`` with MindFormers' parameter names.

Two passes over the source files: the first reads only their headers and checks every name and shape
against the config (nothing is written when anything is wrong); the second converts shard by shard,
appending each tensor to the checkpoint as it goes, so memory holds about one shard.

``quantize="int8"`` or ``"int4"`` writes a checkpoint for glm-core's CPU kernels (:mod:`glm_core.quantize`):
each layer's Linear weights quantized as they stream, ``<name>.weight`` with its ``<name>.weight_scale``, the
LM head one step wider (float16 beside int8, int8 beside int4), the embeddings in float16 and the biases and
layernorms in float32. No float32 copy of the model is ever held.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from glm_convert.errors import ConversionError
from glm_convert.hf_weights import WeightsFile, find_weights_files, open_weights_file
from glm_convert.layout import LM_HEAD, WORD_EMBEDDINGS, check_weights, hf_weight_shapes
from glm_convert.model_folder import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    TOKENIZER_FILES,
    ConfigSource,
    config_file,
    folder_of,
    load_config,
)
from glm_convert.staging import StagedFiles, check_destination, refuse_overwriting_inputs
from glm_convert.summary import ConversionSummary
from glm_core import quantize as formats
from glm_core.checkpoint_file import TENSOR_TYPES, CheckpointWriter
from glm_core.config import GLMConfig
from glm_core.names import mindformers_name

QUANTIZATIONS = ("int8", "int4")

logger = logging.getLogger("glm_convert")


def _target_dtype(dtype: str | None) -> np.dtype | None:
    if dtype is None:
        return None
    if str(dtype) not in TENSOR_TYPES:
        raise ValueError(f"dtype must be one of {', '.join(TENSOR_TYPES)} (or None to keep the source's), "
                         f"got {dtype!r}")
    return np.dtype(str(dtype))


def _check_sources(files: list[WeightsFile], config: GLMConfig, source: Path) -> None:
    """Raise one error listing every unknown, missing, duplicated, mis-shaped or non-float tensor."""
    shapes, dtypes, where = {}, {}, {}
    duplicated = []
    for file in files:
        for name, shape in file.shapes.items():
            if name in where:
                duplicated.append(f"{name} ({where[name]} and {file.path.name})")
            shapes[name], dtypes[name], where[name] = shape, file.dtypes[name], file.path.name
    if duplicated:
        raise ConversionError(f"{source}: tensors stored twice: {', '.join(duplicated)}")
    check_weights(shapes, hf_weight_shapes(config), config, str(source), where=where, dtypes=dtypes,
                  optional=(LM_HEAD,))


def _check_quantization(quantize: str | None, group_size: int, dtype: str | None, config: GLMConfig) -> None:
    if quantize is None:
        return
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    if dtype is not None:
        raise ValueError(f"--dtype {dtype} and --quantize {quantize} exclude each other: a quantized checkpoint "
                         "stores its embeddings in float16 and its biases and layernorms in float32")
    for width in (config.hidden_size, config.inner_hidden_size):
        formats.check_storage(quantize, width, group_size)


class _TensorWriter:
    """Writes each converted tensor as the output wants it: cast to ``dtype``, or for ``quantize``, Linear
    weights in their storage (``glm_core.quantize.linear_storage``: the layers' ``quantize``, the LM head one
    step wider) with any scales after them, embeddings float16 and the rest float32."""

    def __init__(self, writer: CheckpointWriter, dtype: np.dtype | None, quantize: str | None, group_size: int):
        self.writer, self.dtype, self.quantize, self.group_size = writer, dtype, quantize, group_size

    def add(self, name: str, array: np.ndarray) -> None:
        storage = formats.linear_storage(name, self.quantize) if self.quantize is not None else None
        if self.quantize is None:
            self.writer.add(name, array, self.dtype)
        elif storage is not None:
            values, scales = formats.quantize(array, storage, self.group_size)
            self.writer.add(name, values)
            if scales is not None:
                self.writer.add(formats.scale_name(name), scales)
        else:
            self.writer.add(name, array, np.float16 if name.endswith("embedding_table") else np.float32)


def convert_hf_to_ms(src: str | os.PathLike, dst: str | os.PathLike, dtype: str | None = None, *,
                     config: ConfigSource = None, progress: bool = False, quantize: str | None = None,
                     group_size: int = formats.DEFAULT_GROUP_SIZE) -> ConversionSummary:
    """Convert Hugging Face ChatGLM-6B weights to a MindSpore checkpoint with MindFormers' names.

    ``src``: a Hugging Face model folder (``pytorch_model.bin.index.json`` + shards, ``pytorch_model.bin``
    or safetensors), or one weights file (``.bin``/``.pth`` state dict, ``.safetensors``).
    ``dst``: a ``.ckpt`` path, or a folder to receive a complete model folder (``model.ckpt``, our
    ``config.json``, ``ice_text.model``, ``tokenizer_config.json``).
    ``dtype``: ``"float16"`` or ``"float32"``; None keeps each tensor's source dtype.
    ``quantize``: ``"int8"`` or ``"int4"`` (``group_size`` inputs per int4 scale) writes a quantized checkpoint
    for glm-core's CPU kernels instead (see the module's docstring); excludes ``dtype``.
    ``config``: a :class:`GLMConfig` or the path of a config.json, model folder or MindFormers YAML;
    default: the ``config.json`` beside ``src``, else ChatGLM-6B's.

    ``rotary_emb.inv_freq`` is dropped (the model recomputes it) and a missing ``lm_head.weight`` is
    filled from the word embeddings, which ChatGLM-6B ties to it. Output is written under temporary names
    and renamed into place at the end: a failed run leaves nothing behind. An output that would overwrite
    an input (``dst`` the source folder) is refused.

    Raises ``FileNotFoundError`` for a missing source, :class:`~glm_convert.errors.UnreadableFileError`
    naming a truncated or corrupt file, :class:`~glm_convert.errors.WeightsMismatchError` listing every
    unknown, missing or mis-shaped tensor, :class:`~glm_convert.errors.ConversionError` for a destination
    that would overwrite an input or is a file where a folder goes (or the reverse), and ``ValueError`` for
    a bad ``dtype``, ``quantize`` or ``group_size``, or config.
    """
    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    target = _target_dtype(dtype)
    paths = find_weights_files(src)
    used_config = config_file(config, src)
    config = load_config(config, src)
    _check_quantization(quantize, group_size, dtype, config)
    folder_output = dst.suffix != ".ckpt"
    check_destination(dst, folder=folder_output)
    tokenizer_files = [folder_of(src) / name for name in TOKENIZER_FILES]
    ckpt_path = dst / CHECKPOINT_NAME if folder_output else dst
    outputs = [ckpt_path]
    if folder_output:
        outputs += [dst / CONFIG_NAME, *(dst / path.name for path in tokenizer_files)]
    refuse_overwriting_inputs(outputs, [*paths, *tokenizer_files, *([used_config] if used_config else [])], dst)
    if folder_output:
        missing = [str(path) for path in tokenizer_files if not path.is_file()]
        if missing:
            raise ConversionError(f"a model folder needs the tokenizer files, not found: {', '.join(missing)}; "
                                  "give a .ckpt destination to write the weights alone")
        others = sorted(path.name for path in dst.glob("*.ckpt") if path.name != CHECKPOINT_NAME)
        if others:
            raise ConversionError(f"{dst} already holds {', '.join(others)}: a model folder holds one .ckpt; "
                                  "convert into an empty folder")
    files = [open_weights_file(path) for path in paths]
    _check_sources(files, config, src)
    tie_lm_head = all(LM_HEAD not in file.shapes for file in files)
    if tie_lm_head:
        logger.info("%s has no %s: filling it from the word embeddings (ChatGLM-6B ties them)", src, LM_HEAD)

    order = {name: position for position, name in enumerate(hf_weight_shapes(config))}
    total = sum(mindformers_name(name) is not None for file in files for name in file.shapes) + tie_lm_head
    with StagedFiles() as staged, tqdm(total=total, unit="tensor", disable=not progress, desc="hf-to-ms") as bar:
        with CheckpointWriter(staged.temporary(ckpt_path)) as writer:
            output = _TensorWriter(writer, target, quantize, group_size)
            while files:
                file = files.pop(0)  # dropped after its tensors are written, which unmaps it
                # Within a file, the model's order: the checkpoint does not depend on how a file sorts its names.
                for name in sorted(file.shapes, key=order.__getitem__):
                    if mindformers_name(name) is None:
                        continue
                    output.add(mindformers_name(name), file.array(name))
                    bar.update()
                    if name == WORD_EMBEDDINGS and tie_lm_head:
                        output.add(LM_HEAD, file.array(name))
                        bar.update()
        if folder_output:
            staged.temporary(dst / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n",
                                                           encoding="utf-8")
            for path in tokenizer_files:
                shutil.copyfile(path, staged.temporary(dst / path.name))
    return ConversionSummary(dst, writer.tensors, writer.parameters, ckpt_path.stat().st_size,
                             time.perf_counter() - started)

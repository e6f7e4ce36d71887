"""Reading Hugging Face weights: a model folder (sharded or not), one torch file, or safetensors files.

Every file is memory-mapped, not read: opening one parses only its header (names, dtypes, shapes), and a
tensor's bytes are paged in when it is converted, so a conversion holds about one shard in memory.
"""

from __future__ import annotations

import json
import logging
import mmap
import struct
import zipfile
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from glm_convert.errors import ConversionError, UnreadableFileError

logger = logging.getLogger("glm_convert")

TORCH_INDEX = "pytorch_model.bin.index.json"
SAFETENSORS_INDEX = "model.safetensors.index.json"
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"  # pickle of torch's legacy MAGIC_NUMBER
_SAFETENSORS_DTYPES = {"F16": "float16", "F32": "float32", "BF16": "bfloat16", "F64": "float64",
                       "I8": "int8", "U8": "uint8", "I32": "int32", "I64": "int64", "BOOL": "bool"}


class WeightsFile(Protocol):
    """One weights file: ``shapes`` and ``dtypes`` by tensor name (file order), ``array(name)`` for the data.

    ``dtypes`` are names such as ``"float16"``; only float16 and float32 tensors can be read as arrays.
    """

    path: Path
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]

    def array(self, name: str) -> np.ndarray: ...


class TorchWeightsFile:
    """A ``torch.save``\\ d state dict (``pytorch_model*.bin``, ``*.pth``), loaded memory-mapped.

    Only tensors are unpickled (``weights_only=True``), so loading a file runs none of its code. Files in
    torch's legacy (pre-1.6, non-zip) format cannot be mapped and are read whole.
    """

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as file:
            start = file.read(len(_LEGACY_TORCH_MAGIC))
        if start.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
            raise UnreadableFileError(f"{path}: the torch checkpoint is truncated or corrupt (its zip directory "
                                      "is missing); download or copy it again")
        if not start.startswith(_ZIP_MAGIC) and start != _LEGACY_TORCH_MAGIC:
            hint = "; for a MindSpore checkpoint use ms-to-hf" if path.suffix == ".ckpt" else ""
            raise UnreadableFileError(f"{path}: not a torch checkpoint (neither torch.save's zip format nor its "
                                      f"legacy format){hint}")
        try:
            if start.startswith(_ZIP_MAGIC):
                state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            else:
                logger.info("%s is in torch's legacy format: reading it whole, not memory-mapped", path.name)
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError... with varying texts
            raise UnreadableFileError(f"{path}: not a readable torch checkpoint, truncated or corrupt? "
                                      f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
                                      ) from None
        if not isinstance(state, dict):
            raise UnreadableFileError(f"{path}: expected a state dict (tensor name → tensor), found "
                                      f"{type(state).__name__}")
        not_tensors = [name for name, value in state.items() if not isinstance(value, torch.Tensor)]
        if not_tensors:
            raise UnreadableFileError(f"{path}: expected a state dict (tensor name → tensor); these entries are "
                                      f"not tensors: {', '.join(map(str, not_tensors[:10]))}")
        self._state = state
        self.shapes = {name: tuple(tensor.shape) for name, tensor in state.items()}
        self.dtypes = {name: str(tensor.dtype).removeprefix("torch.") for name, tensor in state.items()}

    def array(self, name: str) -> np.ndarray:
        return self._state[name].numpy()


def _header_entry(entry: dict) -> tuple[tuple[int, ...], str, int, int]:
    """Shape, dtype and data offsets of one tensor of a safetensors header."""
    begin, end = (int(offset) for offset in entry["data_offsets"])
    return tuple(int(dim) for dim in entry["shape"]), str(entry["dtype"]), begin, end


class SafetensorsFile:
    """A ``*.safetensors`` file: an 8-byte header length, a JSON header, then the raw tensor bytes."""

    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        with open(path, "rb") as file:
            prefix = file.read(8)
            header_length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
            if header_length is None or 8 + header_length > size:
                raise UnreadableFileError(f"{path}: truncated safetensors file (its header does not fit in "
                                          f"{size} bytes)")
            try:
                header = json.loads(file.read(header_length))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise UnreadableFileError(f"{path}: corrupt safetensors header ({error})") from None
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            header.pop("__metadata__", None)
            entries = {name: _header_entry(entry) for name, entry in header.items()}
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise UnreadableFileError(f"{path}: corrupt safetensors header ({error!r})") from None
        data_start = 8 + header_length
        self.shapes, self.dtypes, self._offsets = {}, {}, {}
        for name, (shape, dtype, begin, end) in entries.items():
            if data_start + end > size:
                raise UnreadableFileError(f"{path}: truncated: tensor {name} needs bytes up to {data_start + end}, "
                                          f"the file has {size}; download or copy it again")
            self.shapes[name] = shape
            self.dtypes[name] = _SAFETENSORS_DTYPES.get(dtype, dtype.lower())
            self._offsets[name] = data_start + begin

    def array(self, name: str) -> np.ndarray:
        dtype = np.dtype(self.dtypes[name])
        count = int(np.prod(self.shapes[name]))
        return np.frombuffer(self._map, dtype, count, self._offsets[name]).reshape(self.shapes[name])


def open_weights_file(path: Path) -> WeightsFile:
    """Open ``path`` as safetensors (by its suffix) or as a torch state dict (anything else)."""
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    return SafetensorsFile(path) if path.suffix == ".safetensors" else TorchWeightsFile(path)


def _shards_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UnreadableFileError(f"{index}: not a Hugging Face weights index ({error!r})") from None
    shards = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise ConversionError(f"{index} lists shards that are not in {index.parent}: {', '.join(missing)}")
    return shards


def find_weights_files(source: Path) -> list[Path]:
    """The weights files of ``source``: the file itself, or the shards of a model folder.

    A folder is read through its ``model.safetensors.index.json`` or ``pytorch_model.bin.index.json``
    (safetensors first, as transformers does), else its single ``model.safetensors``/``pytorch_model.bin``,
    else all its ``*.safetensors`` files.
    """
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"no checkpoint at {source}: expected a Hugging Face model folder or a weights file")
    for index in (SAFETENSORS_INDEX, TORCH_INDEX):
        if (source / index).is_file():
            return _shards_from_index(source / index)
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (source / single).is_file():
            return [source / single]
    shards = sorted(source.glob("*.safetensors"))
    if shards:
        return shards
    raise FileNotFoundError(f"no weights in {source}: expected {TORCH_INDEX} with its shards, pytorch_model.bin "
                            "or *.safetensors files")

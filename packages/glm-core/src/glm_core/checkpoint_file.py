"""MindSpore ``.ckpt`` files, written and read one tensor at a time, without MindSpore.

``mindspore.save_checkpoint`` takes every tensor at once and ``mindspore.load_checkpoint`` reads the whole
file into memory (refusing one larger than the free memory); for the 12.4 GB ChatGLM-6B neither fits a
24 GB host. The format is simple enough to stream: a ``.ckpt`` is the protobuf message ``Checkpoint`` of
``mindspore/train/checkpoint_pb2.py``, whose repeated field ``value`` is written entry by entry::

    Checkpoint { repeated Value value = 1; }
    Value      { required string tag = 1; TensorProto tensor = 2; }
    TensorProto { repeated int64 dims = 1; required string tensor_type = 2; required bytes tensor_content = 3; }

A tensor over 512 MiB is split into several consecutive entries with the same tag, each holding the full
dims and the next part of the raw bytes; readers join them. :class:`CheckpointWriter` writes exactly the
bytes ``mindspore.save_checkpoint`` writes. :class:`CheckpointReader` parses only the entry headers;
:meth:`CheckpointReader.array` returns a tensor as a view of a memory map of the file (for converters,
which hand it on), :meth:`CheckpointReader.read_into` reads it straight into a caller's buffer (for
loading a model, so that memory holds the weights once, not the weights and the mapped file).

This module needs numpy only: glm-convert uses it without loading MindSpore.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

TENSOR_TYPES = {"float16": "Float16", "float32": "Float32"}  # numpy dtype → MindSpore tensor_type
NUMPY_DTYPES = {name: np.dtype(dtype) for dtype, name in TENSOR_TYPES.items()}
# The integer tensors of quantized checkpoints (glm_core.quantize: int8 values, int4 values two to a uint8),
# read and written as they are, never cast.
QUANTIZED_TENSOR_TYPES = {"int8": "Int8", "uint8": "UInt8"}
STORED_DTYPES = {**NUMPY_DTYPES, **{name: np.dtype(dtype) for dtype, name in QUANTIZED_TENSOR_TYPES.items()}}
SLICE_BYTES = 512 * 1024 * 1024  # MindSpore's largest tensor_content per entry
_CONVERSION_BYTES = 64 * 1024 * 1024  # dtype conversions run on pieces this size, not whole tensors
_CRC_TRAILER = 17  # b"crc_num" + 10-byte CRC that save_checkpoint(crc_check=True) appends

# Protobuf wire types
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class UnreadableCheckpointError(ValueError):
    """A file that is not a MindSpore checkpoint, or a truncated or corrupt one; the message names it."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field_number: int, length: int) -> bytes:
    """The key and length that precede a string, bytes or sub-message field of ``length`` bytes."""
    return _varint(field_number << 3 | _LENGTH_DELIMITED) + _varint(length)


def _entry_header(name: str, shape: tuple[int, ...], tensor_type: str, content_length: int) -> bytes:
    """Everything of one ``Checkpoint.value`` entry up to its raw tensor bytes."""
    tag, type_name = name.encode("utf-8"), tensor_type.encode("ascii")
    tensor = b"".join(_varint(1 << 3 | _VARINT) + _varint(dim) for dim in shape)
    tensor += _length_delimited(2, len(type_name)) + type_name + _length_delimited(3, content_length)
    value = _length_delimited(1, len(tag)) + tag + _length_delimited(2, len(tensor) + content_length) + tensor
    return _length_delimited(1, len(value) + content_length) + value


class CheckpointWriter:
    """Append tensors to a ``.ckpt`` file one at a time: ``with CheckpointWriter(path) as w: w.add(name, a)``.

    The file is written in place; callers wanting all-or-nothing output write to a temporary path (see
    :func:`glm_core.checkpoint.save_checkpoint`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "wb")  # noqa: SIM115 (closed by __exit__)
        self.tensors = 0
        self.parameters = 0

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self._file.close()

    def add(self, name: str, array: np.ndarray, dtype: np.dtype | None = None) -> None:
        """Write ``array`` (any layout; float16 or float32, or a quantized model's int8 or uint8) as tensor
        ``name``, cast to ``dtype`` if given (floats only).

        Reads ``array`` piece by piece, so a memory-mapped source is never copied whole.
        """
        target = np.dtype(dtype or array.dtype)
        written = {**TENSOR_TYPES, **QUANTIZED_TENSOR_TYPES}
        if target.name not in written or (target != array.dtype and target.name in QUANTIZED_TENSOR_TYPES):
            raise ValueError(f"{name}: cannot write {array.dtype.name} tensors as {target.name}; MindSpore "
                             f"checkpoints here hold {' or '.join(TENSOR_TYPES)} (and a quantized model's "
                             f"{' and '.join(QUANTIZED_TENSOR_TYPES)}, as they are)")
        flat = array.reshape(-1)
        per_entry = SLICE_BYTES // target.itemsize
        per_conversion = _CONVERSION_BYTES // target.itemsize
        for start in range(0, max(flat.size, 1), per_entry):
            entry = flat[start:start + per_entry]
            self._file.write(_entry_header(name, array.shape, written[target.name], entry.size * target.itemsize))
            for piece_start in range(0, entry.size, per_conversion):
                piece = np.ascontiguousarray(entry[piece_start:piece_start + per_conversion], dtype=target)
                self._file.write(piece.data)
        self.tensors += 1
        self.parameters += flat.size


@dataclass
class StoredTensor:
    """Where one tensor of a ``.ckpt`` lies: its type, shape and the file ranges of its raw bytes."""

    name: str
    tensor_type: str
    shape: tuple[int, ...]
    pieces: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) per entry

    @property
    def nbytes(self) -> int:
        return sum(length for _, length in self.pieces)

    @property
    def dtype(self) -> np.dtype | None:
        """The numpy dtype, or None for a tensor type this package does not convert."""
        return NUMPY_DTYPES.get(self.tensor_type)

    @property
    def stored_dtype(self) -> np.dtype | None:
        """The numpy dtype of the stored values, a quantized model's int8 and uint8 included; None for others."""
        return STORED_DTYPES.get(self.tensor_type)


class CheckpointReader:
    """The tensors of a ``.ckpt`` file, read lazily from a memory map.

    Opening parses only the entry headers (names, types, shapes); :meth:`array` returns a tensor's data.
    Raises :class:`UnreadableCheckpointError` naming the file when it is truncated or not a checkpoint.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no MindSpore checkpoint at {self.path}")
        self._file = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        # A private copy-on-write map: views of it are writable (torch wants that) but never touch the file.
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_COPY) if self.path.stat().st_size else b""
        self.tensors: dict[str, StoredTensor] = {}
        self.unsupported: list[str] = []  # entries that are not plain tensors (MindSpore map tensors)
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close the file; arrays :meth:`array` returned keep the memory map, and with it the data, alive."""
        self._file.close()
        if isinstance(self._map, mmap.mmap):
            # While views of it are in use, the map stays: it goes with the last of them.
            with contextlib.suppress(BufferError):
                self._map.close()

    def _fail(self, reason: str) -> UnreadableCheckpointError:
        return UnreadableCheckpointError(f"{self.path}: not a readable MindSpore checkpoint, truncated or corrupt? "
                                   f"({reason})")

    def _read_varint(self, position: int, end: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if position >= end:
                raise self._fail(f"a field runs past byte {end}")
            byte = self._map[position]
            position += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, position
            shift += 7

    def _fields(self, start: int, end: int):
        """Yield ``(field_number, wire_type, value, position)`` of a message in ``[start, end)``.

        ``value`` is the integer of a varint field and the length of a length-delimited one, whose bytes
        begin at ``position``.
        """
        position = start
        while position < end:
            key, position = self._read_varint(position, end)
            number, wire_type = key >> 3, key & 7
            if wire_type == _VARINT:
                value, position = self._read_varint(position, end)
                yield number, wire_type, value, position
            elif wire_type == _LENGTH_DELIMITED:
                length, position = self._read_varint(position, end)
                if position + length > end:
                    raise self._fail(f"field {number} at byte {position} needs {length} bytes, {end - position} left")
                yield number, wire_type, length, position
                position += length
            elif wire_type in (_FIXED64, _FIXED32):
                position += 8 if wire_type == _FIXED64 else 4
            else:
                raise self._fail(f"unknown protobuf wire type {wire_type} at byte {position}")

    def _parse(self) -> None:
        end = len(self._map)
        if end >= _CRC_TRAILER and self._map[end - _CRC_TRAILER:end - 10] == b"crc_num":
            end -= _CRC_TRAILER
        previous = None
        for number, wire_type, length, position in self._fields(0, end):
            if number != 1 or wire_type != _LENGTH_DELIMITED:
                raise self._fail(f"unexpected field {number} at byte {position}")
            name, tensor = self._parse_value(position, position + length)
            if tensor is None:
                self.unsupported.append(name)
            elif name == previous and name in self.tensors:
                self.tensors[name].pieces.extend(tensor.pieces)
            elif name in self.tensors:
                raise self._fail(f"tensor {name} appears twice")
            else:
                self.tensors[name] = tensor
            previous = name
        for tensor in self.tensors.values():
            dtype = tensor.stored_dtype
            if dtype is not None and tensor.nbytes != int(np.prod(tensor.shape)) * dtype.itemsize:
                raise self._fail(f"{tensor.name} holds {tensor.nbytes} bytes, its shape {tensor.shape} needs "
                                 f"{int(np.prod(tensor.shape)) * dtype.itemsize}")

    def _parse_value(self, start: int, end: int) -> tuple[str, StoredTensor | None]:
        name, tensor = None, None
        for number, wire_type, length, position in self._fields(start, end):
            if number == 1 and wire_type == _LENGTH_DELIMITED:
                name = bytes(self._map[position:position + length]).decode("utf-8", errors="replace")
            elif number == 2 and wire_type == _LENGTH_DELIMITED:
                tensor = self._parse_tensor(position, position + length)
        if name is None:
            raise self._fail(f"an entry at byte {start} has no name")
        if tensor is not None:
            tensor.name = name
        return name, tensor

    def _parse_tensor(self, start: int, end: int) -> StoredTensor:
        dims: list[int] = []
        tensor_type, content = None, None
        for number, wire_type, value, position in self._fields(start, end):
            if number == 1 and wire_type == _VARINT:
                dims.append(value)
            elif number == 1 and wire_type == _LENGTH_DELIMITED:  # packed dims
                packed = position
                while packed < position + value:
                    dim, packed = self._read_varint(packed, position + value)
                    dims.append(dim)
            elif number == 2 and wire_type == _LENGTH_DELIMITED:
                tensor_type = bytes(self._map[position:position + value]).decode("ascii", errors="replace")
            elif number == 3 and wire_type == _LENGTH_DELIMITED:
                content = (position, value)
        if tensor_type is None or content is None:
            raise self._fail(f"a tensor at byte {start} lacks its type or data")
        return StoredTensor("", tensor_type, tuple(dims), [content])

    def array(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a numpy array: a view of the file when stored in one piece, else a copy."""
        tensor = self.tensors[name]
        dtype = tensor.stored_dtype
        if dtype is None:
            raise ValueError(f"{self.path}: {name} is {tensor.tensor_type}, not one of {', '.join(STORED_DTYPES)}")
        if len(tensor.pieces) == 1:
            offset, length = tensor.pieces[0]
            data = np.frombuffer(self._map, dtype=dtype, count=length // dtype.itemsize, offset=offset)
        else:
            data = np.empty(tensor.nbytes // dtype.itemsize, dtype)
            raw, filled = data.view(np.uint8), 0
            for offset, length in tensor.pieces:
                raw[filled:filled + length] = np.frombuffer(self._map, np.uint8, length, offset)
                filled += length
        return data.reshape(tensor.shape)

    def read_into(self, name: str, out: np.ndarray) -> None:
        """Read tensor ``name`` into ``out``, a C-contiguous float16 or float32 array of its shape, casting
        when ``out``'s dtype is not the stored one (a quantized model's int8 and uint8 tensors: into an array of
        their own dtype).

        Reads with plain file reads, not through the memory map: mapped pages would count in the process's
        memory beside ``out``, doubling a model load's peak. A cast runs on pieces of 64 MiB.
        Raises ``ValueError`` for a tensor type other than float16/float32 or an ``out`` that does not fit,
        :class:`UnreadableCheckpointError` if the file has shrunk since it was opened.
        """
        tensor = self.tensors[name]
        if tensor.stored_dtype is None:
            raise ValueError(f"{self.path}: {name} is {tensor.tensor_type}, not one of {', '.join(STORED_DTYPES)}")
        castable = tensor.dtype is not None and out.dtype.name in TENSOR_TYPES
        if (tuple(out.shape) != tensor.shape or not out.flags.c_contiguous
                or not (castable or out.dtype == tensor.stored_dtype)):
            raise ValueError(f"{name}: cannot read a {tensor.stored_dtype.name} {tensor.shape} tensor into a "
                             f"{out.dtype.name} array of shape {tuple(out.shape)}"
                             f"{'' if out.flags.c_contiguous else ' (not contiguous)'}")
        if out.dtype == tensor.stored_dtype:
            raw, filled = out.reshape(-1).view(np.uint8), 0
            for offset, length in tensor.pieces:
                self._read_exactly(offset, raw[filled:filled + length])
                filled += length
            return
        flat, written = out.reshape(-1), 0
        scratch = np.empty(_CONVERSION_BYTES // tensor.dtype.itemsize, tensor.dtype)
        for offset, length in tensor.pieces:
            for start in range(0, length, scratch.nbytes):
                count = min(scratch.nbytes, length - start) // tensor.dtype.itemsize
                self._read_exactly(offset + start, scratch[:count].view(np.uint8))
                flat[written:written + count] = scratch[:count]
                written += count

    def _read_exactly(self, offset: int, buffer: np.ndarray) -> None:
        """Fill the uint8 array ``buffer`` with the file's bytes from ``offset`` on."""
        remaining = memoryview(buffer)
        while remaining.nbytes:
            count = os.preadv(self._file.fileno(), [remaining], offset)  # one read stops at 2 GiB on Linux
            if count == 0:
                raise self._fail(f"the file ends at byte {offset}, shorter than when it was opened")
            remaining, offset = remaining[count:], offset + count

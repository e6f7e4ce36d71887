"""How glm-core's CPU kernels store Linear weights: float32, float16, int8 and int4, and the conversions.

A decode step reads every weight once, so its speed is the bandwidth divided by the bytes of the weights:
narrower weights decode proportionally faster, and the real ChatGLM-6B (24.7 GB in float32) fits a CPU host.
The kernels (``kernels/linear.h``) convert the narrow values to float32 in registers as they stream and
compute in float32:

- ``float16``: the weights rounded to float16.
- ``int8``: symmetric, one float16 scale per output row (the original ChatGLM-6B's ``quantize(8)``):
  ``scale = max |w[j]| / 127``, ``q = round(w / scale)``; ``w ≈ q * scale``.
- ``int4``: symmetric, one float16 scale per group of :data:`DEFAULT_GROUP_SIZE` consecutive inputs of a row,
  ``q = round(w / scale)`` in ``[-8, 7]``, stored ``q + 8``, two to a byte: each 32 inputs of a row take 16
  bytes, byte ``t`` holding input ``t`` in its low nibble and input ``t + 16`` in its high one (so that the
  kernels widen 16 bytes into 16 lanes of either half alike). Each group's scale is the one of a few candidates
  that rounds the group with the least squared error (:data:`INT4_CLIP_LEVELS`): ``max |w| / 7``, and scales
  that put the group's weight of largest magnitude ``m`` at level -8 or a little beyond it (``scale = -m /
  level``, negative when ``m`` is positive), so that all 16 levels serve and the rare largest weights may be
  clipped for finer steps elsewhere.

A quantized model keeps its LM head one step wider than its layers (:data:`HEAD_STORAGE`): float16 beside int8
layers (as the original's ``quantize(8)``), int8 beside int4 ones. Its rounding lands on the logits directly,
with no layernorm after it, and among a vocabulary of 130k rows the top logits lie close together: on
``glm_bench``'s random weights, quantizing the head like the layers flipped more top tokens than all the layers
together (bench/decode.py prints the agreement).

A quantized checkpoint holds, for each quantized Linear, ``<name>.weight`` (int8 ``[out, in]``, or int4 as uint8
``[out, in / 2]``) and ``<name>.weight_scale`` (float16 ``[out]`` or ``[out, in / group]``), and a float16
``lm_head.weight`` beside int8 layers; its embeddings are float16 and its biases and layernorms float32. The
storage is read off the tensors' types and shapes (:func:`storage_of`): a checkpoint needs no other description.

Numpy only: glm-convert quantizes with it without loading MindSpore.
"""

from __future__ import annotations

import numpy as np

STORAGES = ("float32", "float16", "int8", "int4")
QUANTIZATION_BITS = {8: "int8", 4: "int4"}  # the original's quantize(bits)
# Inputs per int4 scale: a multiple of 32 (the kernels' unpacking unit). 32, as GGML's q4_0 (0.5625 bytes a
# weight): groups of 64 rounded glm_bench's weights with a tenth more error and flipped more top tokens.
# bench/decode.py --weights int4 --group-size N measures the speed of others.
DEFAULT_GROUP_SIZE = 32
SCALE_SUFFIX = "_scale"  # "<name>.weight" + this names its scales
INT8_LEVELS = 127
INT4_LEVELS = 7
# The levels an int4 group's largest weight m is tried at (its scale -m / level): -7 is max |w| / 7 (the
# original's formula at 4 bits), 8 spans all 16 levels, the larger ones clip m. The best of these rounds Gaussian
# weights with about 15 % less error than max |w| / 7 alone.
INT4_CLIP_LEVELS = (-7.0, *(8 / np.linspace(0.72, 1.0, 8)))
_ROWS_PER_PIECE = 2048  # rows quantized at a time: temporaries stay a small part of a 6B matrix

# The Linears of a layer, which a quantized model stores narrow (by the end of their checkpoint name), and the LM
# head; the embeddings stay float16.
LAYER_LINEARS = ("attention.query_key_value.weight", "attention.dense.weight", "mlp.dense_h_to_4h.weight",
                 "mlp.dense_4h_to_h.weight")
HEAD = "lm_head.weight"
# The LM head's storage in a model whose layers are in each storage (see the module's docstring).
HEAD_STORAGE = {"float16": "float16", "int8": "float16", "int4": "int8"}


def scale_name(weight_name: str) -> str:
    """The checkpoint name of a quantized weight's scales: ``<name>.weight`` → ``<name>.weight_scale``."""
    return weight_name + SCALE_SUFFIX


def linear_storage(name: str, storage: str) -> str | None:
    """The storage of the checkpoint tensor ``name`` in a model whose layers' Linears are in ``storage``: that
    for a layer's Linear, :data:`HEAD_STORAGE`'s for the LM head, None for any other tensor."""
    if name.endswith(HEAD):
        return HEAD_STORAGE[storage]
    return storage if name.endswith(LAYER_LINEARS) else None


def storage_of_bits(bits: int) -> str:
    """``"int8"`` for 8, ``"int4"`` for 4; raises ``ValueError`` for other bits."""
    if bits not in QUANTIZATION_BITS:
        raise ValueError(f"quantization bits must be 8 or 4, got {bits!r}")
    return QUANTIZATION_BITS[bits]


def check_storage(storage: str, in_features: int | None = None, group_size: int = DEFAULT_GROUP_SIZE) -> None:
    """Raise ``ValueError`` naming the value when ``storage`` is unknown or, for int4, ``group_size`` is not a
    positive multiple of 32 dividing ``in_features``."""
    if storage not in STORAGES:
        raise ValueError(f"weight storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    if storage != "int4":
        return
    if not isinstance(group_size, int) or group_size <= 0 or group_size % 32:
        raise ValueError(f"int4 group size must be a positive multiple of 32, got {group_size!r}")
    if in_features is not None and in_features % group_size:
        raise ValueError(f"int4 group size {group_size} does not divide a Linear's {in_features} inputs; "
                         "choose a group size that does")


def stored_shapes(storage: str, shape: tuple[int, int], group_size: int = DEFAULT_GROUP_SIZE
                  ) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """The shapes of the weights and of the scales (None: no scales) of a ``[out, in]`` Linear in ``storage``."""
    out_features, in_features = shape
    if storage == "int8":
        return (out_features, in_features), (out_features,)
    if storage == "int4":
        return (out_features, in_features // 2), (out_features, in_features // group_size)
    return (out_features, in_features), None


def storage_dtype(storage: str) -> np.dtype:
    """The numpy dtype of the stored weights (int4: uint8, two values to a byte)."""
    return np.dtype({"float32": np.float32, "float16": np.float16, "int8": np.int8, "int4": np.uint8}[storage])


def storage_of(weight_dtype: str, weight_shape: tuple[int, ...], scale_shape: tuple[int, ...] | None,
               in_features: int) -> tuple[str, int | None]:
    """The storage and int4 group size (else None) of stored weights of dtype ``weight_dtype`` (a numpy name)
    and shape ``weight_shape``, with scales of ``scale_shape`` (None: none), for a Linear of ``in_features``.

    Raises ``ValueError`` when they are no storage of the kernels.
    """
    if weight_dtype in ("float32", "float16") and scale_shape is None:
        return weight_dtype, None
    if weight_dtype == "int8" and scale_shape is not None and len(scale_shape) == 1:
        return "int8", None
    if (weight_dtype == "uint8" and scale_shape is not None and len(scale_shape) == 2 and scale_shape[1] > 0
            and in_features % scale_shape[1] == 0 and len(weight_shape) == 2 and weight_shape[1] * 2 == in_features):
        return "int4", in_features // scale_shape[1]
    raise ValueError(f"{weight_dtype} weights {tuple(weight_shape)} with "
                     f"{'no scales' if scale_shape is None else f'scales {tuple(scale_shape)}'} are none of "
                     f"{', '.join(STORAGES)} for a Linear of {in_features} inputs")


def quantize(weight: np.ndarray, storage: str, group_size: int = DEFAULT_GROUP_SIZE
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """``weight`` ``[out, in]`` (float16 or float32, any layout, a memory map say) in ``storage``: the stored
    weights and the float16 scales (None for float32 and float16). Works on pieces of rows, so that a large
    matrix costs little beyond its result.

    Raises ``ValueError`` for an unknown storage or an int4 group size that does not fit.
    """
    check_storage(storage, weight.shape[1], group_size)
    weight_shape, scale_shape = stored_shapes(storage, weight.shape, group_size)
    values = np.empty(weight_shape, storage_dtype(storage))
    scales = None if scale_shape is None else np.empty(scale_shape, np.float16)
    for start in range(0, weight.shape[0], _ROWS_PER_PIECE):
        rows = slice(start, start + _ROWS_PER_PIECE)
        piece = np.asarray(weight[rows], dtype=np.float32)
        if storage in ("float32", "float16"):
            values[rows] = piece
        elif storage == "int8":
            values[rows], scales[rows] = _quantize_int8(piece)
        else:
            values[rows], scales[rows] = _quantize_int4(piece, group_size)
    return values, scales


def _quantize_int8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values ``round(w / s)`` and float16 scales ``s = max |w| / 127`` of each row of ``weight``; the values
    divide by the float16 scale itself, the one the kernels multiply by; an all-zero row gets a zero scale and
    zero values."""
    scales = (np.abs(weight).max(axis=-1) / INT8_LEVELS).astype(np.float16)
    wide = scales.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(wide > 0, np.rint(weight / wide), 0.0)
    return np.clip(values, -128, 127).astype(np.int8), scales


def _quantize_int4(weight: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Packed values and float16 scales of ``weight`` in groups of ``group_size``: per group, the scale of
    :data:`INT4_CLIP_LEVELS` that rounds it with the least squared error (an all-zero group: scale 0, values
    0)."""
    rows, columns = weight.shape
    groups = weight.reshape(rows, columns // group_size, group_size)
    largest = np.take_along_axis(groups, np.abs(groups).argmax(axis=-1)[..., None], axis=-1)
    best_values = best_scales = best_error = None
    for level in INT4_CLIP_LEVELS:
        scales = (-largest / level).astype(np.float16)
        wide = scales.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(wide != 0, np.clip(np.rint(groups / wide), -8, 7), 0.0)
        error = np.square(values * wide - groups).sum(axis=-1, keepdims=True)
        if best_error is None:
            best_values, best_scales, best_error = values, scales, error
        else:
            better = error < best_error
            best_values = np.where(better, values, best_values)
            best_scales = np.where(better, scales, best_scales)
            best_error = np.minimum(error, best_error)
    nibbles = (best_values + 8).astype(np.uint8).reshape(rows, columns)
    return pack_int4(nibbles), best_scales[..., 0]


def pack_int4(nibbles: np.ndarray) -> np.ndarray:
    """Nibbles ``[out, in]`` (0..15, ``in`` a multiple of 32) as the kernels' bytes ``[out, in / 2]``."""
    rows, columns = nibbles.shape
    halves = nibbles.reshape(rows, columns // 32, 2, 16)
    return (halves[:, :, 0] | halves[:, :, 1] << 4).reshape(rows, columns // 2)


def unpack_int4(packed: np.ndarray) -> np.ndarray:
    """The nibbles ``[out, in]`` (0..15) of the kernels' bytes ``[out, in / 2]``: the inverse of :func:`pack_int4`."""
    rows, half = packed.shape
    blocks = packed.reshape(rows, half // 16, 1, 16)
    return np.concatenate([blocks & 15, blocks >> 4], axis=2).reshape(rows, half * 2)


def dequantize(values: np.ndarray, scales: np.ndarray | None, storage: str) -> np.ndarray:
    """The float32 weights ``[out, in]`` that stored ``values`` and ``scales`` stand for: exactly the values the
    kernels compute with (a value times a float16 scale has at most 19 significant bits)."""
    if storage in ("float32", "float16"):
        return values.astype(np.float32)
    if storage == "int8":
        return values.astype(np.float32) * scales.astype(np.float32)[:, None]
    rows = values.shape[0]
    signed = unpack_int4(values).astype(np.float32) - 8.0
    groups = scales.shape[1]
    return (signed.reshape(rows, groups, -1) * scales.astype(np.float32)[:, :, None]).reshape(rows, -1)


def weight_bytes(storage: str, shape: tuple[int, int], group_size: int = DEFAULT_GROUP_SIZE) -> int:
    """Bytes a ``[out, in]`` Linear's weights and scales take in ``storage`` (what a decode step reads)."""
    weight_shape, scale_shape = stored_shapes(storage, shape, group_size)
    total = int(np.prod(weight_shape)) * storage_dtype(storage).itemsize
    return total + (2 * int(np.prod(scale_shape)) if scale_shape is not None else 0)

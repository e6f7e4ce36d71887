"""The kernels with float16, int8 and int4 weights against numpy's dequantize-then-matmul, and the formats of
glm_core.quantize (the original ChatGLM-6B's quantize(8), grouped int4)."""

import ctypes

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from glm_core import kernels
from glm_core import quantize as formats

KERNEL_DTYPES = {"float32": "float32", "float16": "float16", "int8": "int8", "int4": "uint8"}


class Apply(nn.Cell):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def construct(self, *args):
        return self.function(*args)


def kernel_product(x, stored, scales, *rest, threads=2):
    """The linear operator in a graph: ``x @ w.T`` (and what ``rest`` asks for) with ``w`` as stored."""
    kernels.set_threads(threads)
    try:
        weights = (ms.Tensor(stored),) + ((ms.Tensor(scales),) if scales is not None else ())
        return Apply(kernels.linear_operator())(ms.Tensor(x), *weights, *map(ms.Tensor, rest)).asnumpy()
    finally:
        kernels.set_threads(kernels.default_threads())


def stored_weights(storage, out_features, in_features, seed, group_size=32):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out_features, in_features), dtype=np.float32) * np.exp(
        rng.uniform(-3, 1, (out_features, 1))).astype(np.float32)
    stored, scales = formats.quantize(weight, storage, group_size)
    return weight, stored, scales


# Odd sizes where the storage allows them: inputs off the 16-lane width and the two-vector int8 step, outputs
# off the 6-row tile and the 4-row decode tiles; int4 rows are whole 32-input blocks. A decode step over more than
# 4096 inputs reads 4 rows side by side in every storage (float32 included).
SHAPES = {"float32": [(1, 4160, 13), (1, 4097, 6)],
          "float16": [(1, 1024, 300), (7, 40, 37), (13, 33, 9), (5, 7, 1), (1, 4113, 11)],
          "int8": [(1, 1024, 300), (7, 40, 37), (13, 33, 9), (5, 7, 1), (2, 48, 11), (1, 4113, 11)],
          "int4": [(1, 1024, 300), (7, 64, 37), (13, 96, 9), (4, 32, 6), (1, 4160, 13)]}
CASES = [(storage, *shape) for storage, shapes in SHAPES.items() for shape in shapes]


@pytest.mark.parametrize("storage, rows, inner, out", CASES)
def test_product_equals_numpy_dequantize_then_matmul(storage, rows, inner, out):
    _, stored, scales = stored_weights(storage, out, inner, seed=rows * inner + out)
    x = np.random.default_rng(out).standard_normal((rows, inner), dtype=np.float32)
    reference = x.astype(np.float64) @ formats.dequantize(stored, scales, storage).T.astype(np.float64)
    result = kernel_product(x, stored, scales)
    # float32 rounding of a sum of `inner` products, relative to the sum of their magnitudes
    magnitude = np.abs(x).astype(np.float64) @ np.abs(formats.dequantize(stored, scales, storage)).T
    assert (np.abs(result - reference) <= 4 * np.finfo(np.float32).eps * magnitude + 1e-30).all()


@pytest.mark.parametrize("storage, rows, inner, out", [case for case in CASES if case[0] in ("float16", "int4")])
def test_float16_and_int4_give_the_float32_kernels_bits_over_the_dequantized_matrix(storage, rows, inner, out):
    """A float16 or int4 value times its scale is exact in float32, and the sums run in the float32 order."""
    _, stored, scales = stored_weights(storage, out, inner, seed=inner + out)
    x = np.random.default_rng(rows).standard_normal((rows, inner), dtype=np.float32)
    dequantized = formats.dequantize(stored, scales, storage)
    np.testing.assert_array_equal(kernel_product(x, stored, scales), kernel_product(x, dequantized, None))


@pytest.mark.parametrize("storage, inner", [("float16", 96), ("int8", 96), ("int4", 96), ("float32", 4160),
                                            ("float16", 4160), ("int8", 4160), ("int4", 4160)])
def test_each_row_is_bitwise_the_same_alone_in_a_batch_and_on_any_thread_count(storage, inner):
    """What makes a decode step give a whole prompt's logits: the order of the sums never depends on the tiling."""
    _, stored, scales = stored_weights(storage, 50, inner, seed=3)
    x = np.random.default_rng(0).standard_normal((11, inner), dtype=np.float32)
    full = kernel_product(x, stored, scales, threads=2)
    for row in range(len(x)):
        np.testing.assert_array_equal(kernel_product(x[row:row + 1], stored, scales, threads=1 + row % 3),
                                      full[row:row + 1])


@pytest.mark.parametrize("storage", ["float16", "int8", "int4"])
def test_bias_residual_and_layer_norm_epilogues_take_quantized_weights(storage):
    """The epilogues follow the scales: (x, w, scale, b, r, a, gamma, beta, epsilon) gives the float32 kernel's
    layernorm of r * a + (x W^T + b) over the same product."""
    rng = np.random.default_rng(4)
    _, stored, scales = stored_weights(storage, 128, 64, seed=4)
    x = rng.standard_normal((3, 64), dtype=np.float32)
    bias, residual = rng.standard_normal(128, dtype=np.float32), rng.standard_normal((3, 128), dtype=np.float32)
    gamma, beta = rng.standard_normal(128, dtype=np.float32), rng.standard_normal(128, dtype=np.float32)
    alpha, epsilon = np.array([7.483314773547883], np.float32), np.array([1e-5], np.float32)
    product = kernel_product(x, stored, scales, bias)
    np.testing.assert_array_equal(product, kernel_product(x, stored, scales) + bias)
    norm_inputs = (bias, residual, alpha, gamma, beta, epsilon)
    sum_ = residual * alpha + product
    mean, variance = sum_.mean(-1, keepdims=True), sum_.var(-1, keepdims=True)
    expected = (sum_ - mean) / np.sqrt(variance + epsilon) * gamma + beta
    np.testing.assert_allclose(kernel_product(x, stored, scales, *norm_inputs), expected, rtol=1e-4, atol=1e-4)


def test_operator_refuses_weights_whose_scales_do_not_fit():
    """An int4 matrix whose scales do not divide its inputs into groups of 32s is refused, not misread."""
    library = ctypes.CDLL(str(kernels._library()))
    x = np.ones((1, 64), np.float32)
    stored = np.zeros((4, 32), np.uint8)
    y = np.empty((1, 4), np.float32)
    for scales in (np.zeros((4, 3), np.float16), np.zeros((4, 4), np.float16), np.zeros((4, 2), np.float32)):
        arrays = [x, stored, scales, y]
        dtypes = ["float32", "uint8", scales.dtype.name, "float32"]
        shapes = [(ctypes.c_int64 * a.ndim)(*a.shape) for a in arrays]
        status = library.glm_linear(
            4, (ctypes.c_void_p * 4)(*[a.ctypes.data for a in arrays]), (ctypes.c_int * 4)(*[a.ndim for a in arrays]),
            (ctypes.POINTER(ctypes.c_int64) * 4)(*[ctypes.cast(s, ctypes.POINTER(ctypes.c_int64)) for s in shapes]),
            (ctypes.c_char_p * 4)(*[d.encode() for d in dtypes]), None, None)
        assert status != 0, scales.shape


# ----------------------------------------------------------------------------------------------- formats
def test_int8_is_the_originals_quantize_8():
    """scale = max |w| / 127 per row (float16), values = round(w / scale) as int8."""
    weight, stored, scales = stored_weights("int8", 6, 40, seed=1)
    expected_scales = (np.abs(weight).max(axis=1) / 127).astype(np.float16)
    np.testing.assert_array_equal(scales, expected_scales)
    np.testing.assert_array_equal(stored, np.rint(weight / expected_scales.astype(np.float32)[:, None]))
    assert stored.dtype == np.int8 and np.abs(stored).max() == 127


def absmax_rule_error(weight, group_size):
    """Squared error of each group under the plain rule scale = max |w| / 7 (float16), values round(w / scale)."""
    groups = weight.reshape(weight.shape[0], -1, group_size)
    scales = (np.abs(groups).max(axis=-1, keepdims=True) / 7).astype(np.float16).astype(np.float32)
    return np.square(np.rint(groups / scales) * scales - groups).sum(axis=-1)


@pytest.mark.parametrize("group_size", [32, 64])
def test_int4_scales_round_each_group_no_worse_than_max_over_7_and_use_all_16_levels(group_size):
    weight, stored, scales = stored_weights("int4", 64, 256, seed=2, group_size=group_size)
    assert stored.shape == (64, 128) and scales.shape == (64, 256 // group_size) and scales.dtype == np.float16
    groups = (formats.dequantize(stored, scales, "int4") - weight).reshape(64, -1, group_size)
    error = np.square(groups.astype(np.float64)).sum(axis=-1)
    plain = absmax_rule_error(weight, group_size)
    assert (error <= plain * (1 + 1e-5)).all()
    nibbles = formats.unpack_int4(stored)
    assert nibbles.min() == 0 and nibbles.max() == 15
    assert (scales < 0).any() and (scales > 0).any()  # the largest weight at -8, whichever its sign


def test_int4_scale_search_rounds_gaussian_weights_with_less_error_than_max_over_7():
    """About 15 % less in all (measured on Gaussian weights in groups of 32 and 64); 10 % is the bar."""
    weight = np.random.default_rng(5).standard_normal((256, 1024), dtype=np.float32) * 0.02
    for group_size in (32, 64):
        stored, scales = formats.quantize(weight, "int4", group_size)
        error = np.square(formats.dequantize(stored, scales, "int4") - weight).sum()
        assert error < 0.9 ** 2 * absmax_rule_error(weight, group_size).sum()


@pytest.mark.parametrize("storage, head", [("float16", "float16"), ("int8", "float16"), ("int4", "int8")])
def test_the_lm_head_is_stored_one_step_wider_than_the_layers(storage, head):
    assert formats.linear_storage("lm_head.weight", storage) == head
    assert formats.linear_storage("transformer.layers.3.mlp.dense_4h_to_h.weight", storage) == storage
    assert formats.linear_storage("transformer.layers.3.mlp.dense_4h_to_h.bias", storage) is None
    assert formats.linear_storage("transformer.word_embeddings.embedding_table", storage) is None


def test_int4_bytes_hold_input_t_and_t_plus_16_of_each_32():
    nibbles = np.tile(np.arange(32, dtype=np.uint8) % 16, (2, 2))
    packed = formats.pack_int4(nibbles)
    assert packed[0, 0] == 0 | 0 << 4 and packed[0, 3] == 3 | 3 << 4 and packed.shape == (2, 32)
    np.testing.assert_array_equal(formats.unpack_int4(packed), nibbles)


def test_all_zero_rows_quantize_to_zero():
    for storage in ("int8", "int4"):
        stored, scales = formats.quantize(np.zeros((2, 64), np.float32), storage, 32)
        assert not formats.dequantize(stored, scales, storage).any()


@pytest.mark.parametrize("storage, group_size, message", [
    ("int2", 32, "must be one of float32, float16, int8, int4"),
    ("int4", 48, "multiple of 32"),
    ("int4", 128, "does not divide a Linear's 64 inputs"),
])
def test_bad_storages_are_refused_naming_the_value(storage, group_size, message):
    with pytest.raises(ValueError, match=message):
        formats.quantize(np.zeros((2, 64), np.float32), storage, group_size)


def test_storage_is_read_off_a_checkpoints_types_and_shapes():
    assert formats.storage_of("int8", (8, 64), (8,), 64) == ("int8", None)
    assert formats.storage_of("uint8", (8, 32), (8, 2), 64) == ("int4", 32)
    assert formats.storage_of("float16", (8, 64), None, 64) == ("float16", None)
    with pytest.raises(ValueError, match="none of"):
        formats.storage_of("uint8", (8, 64), (8, 2), 64)

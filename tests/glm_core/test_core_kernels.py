"""glm_core.kernels: the C++ linear kernel, as MindSpore runs it in a graph (its build: test_kernel_build.py)."""

import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from glm_core import GLMConfig, kernels
from glm_core.kernel_model import runs_on_kernels
from glm_core.model import RotaryEmbedding2D


class KernelProduct(nn.Cell):
    def __init__(self):
        super().__init__()
        self.product = kernels.linear_operator()

    def construct(self, x, w):
        return self.product(x, w)


class KernelProductWithBias(nn.Cell):
    def __init__(self):
        super().__init__()
        self.product = kernels.linear_operator()

    def construct(self, x, w, b):
        return self.product(x, w, b)


@pytest.fixture(scope="module")
def product():
    assert kernels.linear_operator() is not None, "the kernel must build on the test machine"
    return KernelProduct()


def run(product, x, w, threads=2):
    kernels.set_threads(threads)
    try:
        return product(ms.Tensor(x), ms.Tensor(w)).asnumpy()
    finally:
        kernels.set_threads(kernels.default_threads())


# Odd sizes on purpose: inner sizes off the 16-lane width, outputs off the 6-row tile, rows off the 4-row tile.
@pytest.mark.parametrize("rows, inner, out", [(1, 1024, 3072), (7, 40, 37), (13, 33, 9), (4, 16, 6), (5, 7, 1)])
def test_product_equals_numpy(product, rows, inner, out):
    rng = np.random.default_rng(rows * inner + out)
    x = rng.standard_normal((rows, inner), dtype=np.float32)
    w = rng.standard_normal((out, inner), dtype=np.float32)
    np.testing.assert_allclose(run(product, x, w), x.astype(np.float64) @ w.T.astype(np.float64),
                               rtol=1e-5, atol=1e-4 * np.sqrt(inner))


def test_bias_is_added_to_every_row():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((3, 40), dtype=np.float32), rng.standard_normal((10, 40), dtype=np.float32)
    bias = rng.standard_normal(10, dtype=np.float32)
    with_bias = KernelProductWithBias()(ms.Tensor(x), ms.Tensor(w), ms.Tensor(bias)).asnumpy()
    np.testing.assert_array_equal(with_bias, KernelProduct()(ms.Tensor(x), ms.Tensor(w)).asnumpy() + bias)


def test_each_row_is_bitwise_the_same_alone_in_a_batch_and_on_any_thread_count(product):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((11, 100), dtype=np.float32)
    w = rng.standard_normal((50, 100), dtype=np.float32)
    full = run(product, x, w, threads=2)
    for row in range(len(x)):
        np.testing.assert_array_equal(run(product, x[row:row + 1], w, threads=1 + row % 3), full[row:row + 1])
        np.testing.assert_array_equal(run(product, x[:row + 1], w, threads=3), full[:row + 1])


def test_many_calls_of_changing_shapes_and_thread_counts_stay_exact(product):
    """Helpers claim chunks of each call as they wake; a late one must never touch the next call's work."""
    rng = np.random.default_rng(5)
    for call in range(60):
        rows, inner, out = int(rng.integers(1, 5)), int(rng.integers(1, 70)), int(rng.integers(1, 300))
        x = rng.standard_normal((rows, inner), dtype=np.float32)
        w = rng.standard_normal((out, inner), dtype=np.float32)
        alone = run(product, x, w, threads=1)
        np.testing.assert_array_equal(run(product, x, w, threads=2 + call % 3), alone)
        np.testing.assert_allclose(alone, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-5, atol=1e-3)


class Apply(nn.Cell):
    """Runs ``function`` in a graph."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def construct(self, *args):
        return self.function(*args)


def test_gelu_epilogue_is_the_originals_tanh_gelu():
    """The GELU of every output, its tanh good to an ulp, from 1e-5 to beyond tanh's saturation."""
    rng = np.random.default_rng(6)
    x = ms.Tensor(rng.standard_normal((3, 40), dtype=np.float32))
    w = ms.Tensor((rng.standard_normal((300, 40)) * np.exp(rng.uniform(-12, 1, (300, 1)))).astype(np.float32))
    bias = ms.Tensor(np.zeros(300, np.float32))
    y = Apply(kernels.linear_operator())(x, w, bias).asnumpy().astype(np.float64)
    assert np.abs(y).min() < 1e-4 and np.abs(y).max() > 10
    expected = 0.5 * y * (1.0 + np.tanh(0.7978845608028654 * y * (1.0 + 0.044715 * y * y)))
    # In float32, 1 + tanh(…) is good to an ulp of 1: for negative inputs the formula itself cancels.
    error = np.abs(Apply(kernels.linear_operator(gelu=True))(x, w, bias).asnumpy() - expected)
    assert (error <= 5e-7 * np.abs(expected) + 6e-8 * np.abs(y)).all(), error.max()


def residual_connection(residual, output):
    return residual * 7.483314773547883 + output


def residual_then_layer_norm(residual, output, gamma, beta):
    y, _, _ = ms.ops.LayerNorm(-1, -1, 1e-5)(residual_connection(residual, output), gamma, beta)
    return y


@pytest.mark.parametrize("rows", [1, 9])
def test_layer_norm_epilogue_gives_the_bits_of_mindspores_layer_norm(rows):
    """The kernel's layernorm of ``r * alpha + (x W^T + b)`` equals MindSpore's Mul, Add and LayerNorm on
    the kernel's product.

    Rows of very different scales and offsets: the variance, ``E[y^2] - mean^2``, loses digits where the
    offset dwarfs the spread, and only the same arithmetic (double sums, in order) rounds the same way.
    """
    rng = np.random.default_rng(9)
    inner, out = 64, 1024
    x = ms.Tensor(rng.standard_normal((rows, inner), dtype=np.float32))
    r = ms.Tensor((rng.standard_normal((rows, out)) * np.exp(rng.uniform(-6, 3, (rows, 1)))
                   + rng.standard_normal((rows, 1)) * np.exp(rng.uniform(-3, 4, (rows, 1)))).astype(np.float32))
    w = ms.Tensor(rng.standard_normal((out, inner), dtype=np.float32) * 0.01)
    b = ms.Tensor(rng.standard_normal(out, dtype=np.float32) * 0.01)
    gamma, beta = (ms.Tensor(rng.standard_normal(out, dtype=np.float32)) for _ in range(2))
    alpha, epsilon = ms.Tensor([7.483314773547883], ms.float32), ms.Tensor([1e-5], ms.float32)
    product = Apply(kernels.linear_operator())(x, w, b)
    expected = Apply(residual_then_layer_norm)(r, product, gamma, beta).asnumpy()
    fused = Apply(kernels.linear_operator())(x, w, b, r, alpha, gamma, beta, epsilon).asnumpy()
    np.testing.assert_array_equal(fused, expected)


def test_rotary_kernel_gives_the_bits_of_the_mindspore_ops_it_replaces():
    config = GLMConfig.from_name("glm_tiny")
    heads, dim = config.num_heads, config.head_dim
    rotary = RotaryEmbedding2D(config)
    rng = np.random.default_rng(8)
    batch, seq = 2, 5
    qkv = rng.standard_normal((batch, seq, heads * 3 * dim), dtype=np.float32)
    position_ids = ms.Tensor(rng.integers(0, config.seq_length + 1, (batch, 2, seq)), ms.int32)
    scale = 1 / (np.sqrt(dim) * 2)
    cos, sin = Apply(rotary)(position_ids)
    query, key, value = Apply(kernels.rotary_operator(heads, dim))(
        ms.Tensor(qkv), position_ids, rotary.cos_table, rotary.sin_table, ms.Tensor([scale], ms.float32))

    def with_ops(qkv, cos, sin):
        q, k, v = ms.ops.split(qkv.reshape(batch, seq, heads, 3 * dim), dim, axis=-1)
        return (rotary.rotate(q, cos, sin) * scale, rotary.rotate(k, cos, sin).transpose(1, 0, 2, 3),
                v.transpose(1, 0, 2, 3))

    expected = Apply(with_ops)(ms.Tensor(qkv), cos, sin)
    assert query.shape == (batch, seq, heads, dim) and key.shape == value.shape == (seq, batch, heads, dim)
    for got, want in zip((query, key, value), expected):
        np.testing.assert_array_equal(got.asnumpy(), want.asnumpy())


def test_rotary_kernel_refuses_positions_outside_its_tables():
    config = GLMConfig.from_name("glm_tiny")
    rotary = RotaryEmbedding2D(config)
    qkv = ms.Tensor(np.zeros((1, 2, config.num_heads * 3 * config.head_dim), np.float32))
    position_ids = ms.Tensor([[[0, config.seq_length + 1], [0, 1]]], ms.int32)  # the tables hold seq_length + 1
    with pytest.raises(RuntimeError, match="glm_rotary"):
        Apply(kernels.rotary_operator(config.num_heads, config.head_dim))(
            qkv, position_ids, rotary.cos_table, rotary.sin_table, ms.Tensor([1.0], ms.float32))


class KernelAttention(nn.Cell):
    def __init__(self):
        super().__init__()
        self.attention = kernels.attention_operator()

    def construct(self, q, k, v, mask, scale):
        return self.attention(q, k, v, mask, scale)


def reference_attention(q, k, v, mask, scale):
    """SelfAttention's formula in float64: q [B, S, H, D], k/v [L, B, H, D], mask [B, 1, S, L]."""
    scores = np.einsum("bshd,lbhd->bhsl", q.astype(np.float64), k.astype(np.float64))
    scores = np.where(mask, -10000.0, scores) * scale  # [B, H, S, L]; the mask broadcasts over heads
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhsl,lbhd->bshd", probs, v.astype(np.float64))


def attention_case(rng, batch=2, seq=3, heads=4, length=7, dim=20):
    q = rng.standard_normal((batch, seq, heads, dim), dtype=np.float32)
    k, v = (rng.standard_normal((length, batch, heads, dim), dtype=np.float32) for _ in range(2))
    mask = rng.random((batch, 1, seq, length)) < 0.4
    mask[..., 0] = False  # every query sees slot 0
    return q, k, v, mask


def run_attention(q, k, v, mask, scale):
    return KernelAttention()(ms.Tensor(q), ms.Tensor(k), ms.Tensor(v), ms.Tensor(mask),
                             ms.Tensor([scale], ms.float32)).asnumpy()


def test_attention_equals_the_formula():
    q, k, v, mask = attention_case(np.random.default_rng(2))
    np.testing.assert_allclose(run_attention(q, k, v, mask, 3.0), reference_attention(q, k, v, mask, 3.0),
                               rtol=1e-5, atol=1e-5)


def test_attention_over_extra_masked_slots_gives_the_same_bits():
    """What lets a decode step over a partly filled cache reproduce a full forward exactly."""
    rng = np.random.default_rng(3)
    q, k, v, mask = attention_case(rng)
    extra = 5
    k_long = np.concatenate([rng.standard_normal((extra, *k.shape[1:]), dtype=np.float32), k])
    v_long = np.concatenate([rng.standard_normal((extra, *v.shape[1:]), dtype=np.float32), v])
    mask_long = np.concatenate([np.ones((*mask.shape[:3], extra), bool), mask], axis=-1)
    np.testing.assert_array_equal(run_attention(q, k_long, v_long, mask_long, 2.0), run_attention(q, k, v, mask, 2.0))


@pytest.mark.parametrize("field", ["param_init_type", "compute_dtype", "layernorm_compute_type",
                                   "softmax_compute_type"])
def test_generation_runs_on_the_kernels_only_with_every_dtype_float32(field):
    """The kernels take float32 alone: float16 weights with float32 compute, say, stay on MindSpore's ops."""
    config = GLMConfig.from_name("glm_tiny")
    assert runs_on_kernels(config)
    assert not runs_on_kernels(GLMConfig.from_name("glm_tiny", **{field: "float16"}))


def test_layer_operator_inputs_are_the_librarys_by_name():
    """kernels/layer.cc names its inputs; layer_operator refuses a library whose list differs."""
    assert kernels.layer_operator() is not None
    assert kernels.LAYER_INPUTS[:3] == ("x", "position_ids", "mask") and len(kernels.LAYER_INPUTS) == 25


def test_without_a_compiler_the_model_falls_back_to_matmul_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("CXX", "")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("GLM_KERNEL_CACHE", "/nonexistent/cache")
    kernels._library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="glm_core.kernels"):
            assert not runs_on_kernels(GLMConfig.from_name("glm_tiny"))
        assert "no C++ compiler found" in caplog.text
    finally:
        kernels._library.cache_clear()


def test_thread_count_must_be_positive():
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        kernels.set_threads(0)

"""glm_core.kernels: the C++ linear kernel, as MindSpore runs it in a graph, and its build."""

import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from glm_core import kernels
from glm_core.model import Linear


class KernelProduct(nn.Cell):
    def __init__(self):
        super().__init__()
        self.product = kernels.linear_operator()

    def construct(self, x, w):
        return self.product(x, w)


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


def test_each_row_is_bitwise_the_same_alone_in_a_batch_and_on_any_thread_count(product):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((11, 100), dtype=np.float32)
    w = rng.standard_normal((50, 100), dtype=np.float32)
    full = run(product, x, w, threads=2)
    for row in range(len(x)):
        np.testing.assert_array_equal(run(product, x[row:row + 1], w, threads=1 + row % 3), full[row:row + 1])
        np.testing.assert_array_equal(run(product, x[:row + 1], w, threads=3), full[:row + 1])


def test_inference_linear_uses_the_kernel_and_training_linear_does_not():
    assert Linear(16, 8, inference=True).uses_kernel
    assert not Linear(16, 8, inference=False).uses_kernel
    assert not Linear(16, 8, inference=True, compute_dtype=ms.float16).uses_kernel


def test_build_is_cached_per_source_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("GLM_KERNEL_CACHE", str(tmp_path))
    library = kernels.build()
    assert library.parent == tmp_path and library.is_file()
    built_at = library.stat().st_mtime_ns
    assert kernels.build() == library
    assert library.stat().st_mtime_ns == built_at
    assert [p.name for p in tmp_path.iterdir()] == [library.name]  # no temporary file left behind


def test_failing_compiler_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("GLM_KERNEL_CACHE", str(tmp_path))
    with pytest.raises(kernels.KernelBuildError, match=r"failed on .*linear\.cc"):
        kernels.build(compiler="false")
    assert list(tmp_path.iterdir()) == []


def test_without_a_compiler_the_model_falls_back_to_matmul_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("CXX", "")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("GLM_KERNEL_CACHE", "/nonexistent/cache")
    kernels._library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="glm_core.kernels"):
            linear = Linear(16, 8, inference=True)
        assert not linear.uses_kernel
        assert "no C++ compiler found" in caplog.text
    finally:
        kernels._library.cache_clear()


def test_thread_count_must_be_positive():
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        kernels.set_threads(0)

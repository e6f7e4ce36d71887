"""The float16 compute path (for Ascend/GPU), checked for correctness on the tiny golden model."""

import mindspore as ms
import numpy as np
import pytest

from glm_core import GLMConfig, GLMForPreTraining
from glm_core.checkpoint import load_state


@pytest.fixture(scope="module")
def float16_logits(golden_config, golden_state, golden_case):
    config = GLMConfig(**{**golden_config.to_dict(), "compute_dtype": "float16", "param_init_type": "float16"})
    model = GLMForPreTraining(config)
    load_state(model, golden_state)
    return {case["name"]: model(ms.Tensor([case["input_ids"]], ms.int32)).asnumpy()[0]
            for case in golden_case("forward")}


@pytest.fixture(scope="module")
def reference_float16(golden_dir):
    return dict(np.load(golden_dir / "cases" / "forward_fp16.npz"))


def test_float16_logits_are_within_one_of_the_reference_float16_run(float16_logits, reference_float16):
    for name, logits in float16_logits.items():
        assert logits.dtype == np.float32
        assert np.abs(logits - reference_float16[name].astype(np.float32)).max() <= 1.0, name


def test_float16_top1_agrees_with_the_reference_at_95_percent_of_positions(float16_logits, reference_float16):
    """Over all 129 golden positions; single near-ties (top-2 within 0.1) may flip, as in the reference."""
    agree = np.concatenate([logits.argmax(-1) == reference_float16[name].argmax(-1)
                            for name, logits in float16_logits.items()])
    assert agree.size == 129
    assert agree.mean() >= 0.95


@pytest.mark.parametrize("dtype_field", ["compute_dtype", "softmax_compute_type"])
def test_unknown_dtype_is_refused(golden_config, dtype_field):
    with pytest.raises(ValueError, match=dtype_field):
        GLMConfig(**{**golden_config.to_dict(), dtype_field: "bfloat16"})

"""Every dtype combination a config can state, on CPU: which path generation takes, and what it generates.

A config states four dtypes (parameters, compute, layernorm, softmax), each float32 or float16. Generation
runs on glm-core's kernels only when all four are float32 (the kernels take float32 alone); every other
combination generates on MindSpore's operators. Each combination's generation is checked against the
MindSpore-ops path of the same model: a greedy decode by full forwards, without a cache.
"""

import itertools

import mindspore as ms
import numpy as np
import pytest

from glm_core import Generator, GLMConfig, GLMForPreTraining
from glm_core.checkpoint import load_state

DTYPE_FIELDS = ("param_init_type", "compute_dtype", "layernorm_compute_type", "softmax_compute_type")
COMBINATIONS = [dict(zip(DTYPE_FIELDS, dtypes)) for dtypes in itertools.product(("float32", "float16"), repeat=4)]
NEW_TOKENS = 4  # float16 matmul is slow on CPU: a few tokens on the tiny model


def combination_id(dtypes):
    return "-".join(f"{field.split('_')[0]}:{dtype[5:]}" for field, dtype in dtypes.items())


def build(golden_config, golden_state, dtypes):
    model = GLMForPreTraining(GLMConfig(**{**golden_config.to_dict(), **dtypes}))
    load_state(model, golden_state)
    return model


def greedy_by_full_forwards(model, prompt, new_tokens):
    """Greedy decoding on MindSpore's operators alone: a full forward of the whole sequence per token, left-
    padded to one length (padding is masked and changes nothing) so the forward compiles once. Returns the new
    tokens."""
    pad = model.config.pad_token_id
    sequence = list(prompt)
    width = len(prompt) + new_tokens - 1
    for _ in range(new_tokens):
        padded = [pad] * (width - len(sequence)) + sequence
        sequence.append(int(model(ms.Tensor([padded], ms.int32)).asnumpy()[0, -1].argmax()))
    return sequence[len(prompt):]


@pytest.fixture(scope="module")
def prompt(golden_case):
    return golden_case("generate")[0]["input_ids"][0]


@pytest.mark.parametrize("dtypes", COMBINATIONS, ids=combination_id)
def test_every_combination_generates_what_the_mindspore_ops_path_does(golden_config, golden_state, prompt, dtypes):
    """The generator takes the kernels exactly when all four dtypes are float32 (else MindSpore's operators with
    a KV cache), and chooses the tokens that greedy full forwards of the same model choose."""
    model = build(golden_config, golden_state, dtypes)
    generator = Generator(model)
    assert generator.uses_kernels == all(dtype == "float32" for dtype in dtypes.values())
    generated = generator.generate(np.array([prompt]), max_new_tokens=NEW_TOKENS)[0, len(prompt):].tolist()
    expected = greedy_by_full_forwards(model, prompt, NEW_TOKENS)
    assert generated == expected


def test_float16_parameters_with_float32_compute_generate_the_golden_ids(golden_config, golden_state, golden_case):
    """The case that sent every Linear to the float32-only kernel: it now runs on MindSpore's operators, and
    since the golden float16 weights cast to float32 exactly, it generates the reference's float32 ids."""
    model = build(golden_config, golden_state, {"param_init_type": "float16"})
    assert model.transformer.layers[0].attention.query_key_value.weight.dtype == ms.float16
    generator = Generator(model)
    assert not generator.uses_kernels
    for case in golden_case("generate")[:2]:
        output = generator.generate(np.array(case["input_ids"]), max_length=case["max_length"])
        assert output.tolist() == case["output_ids"]


def test_float16_parameters_with_float32_compute_give_the_float32_models_logits(golden_config, golden_state,
                                                                               golden_case):
    """Bit for bit: weights held in float16 are cast to the float32 compute dtype, exactly."""
    input_ids = ms.Tensor([golden_case("forward")[1]["input_ids"]], ms.int32)
    float16_weights = build(golden_config, golden_state, {"param_init_type": "float16"})(input_ids).asnumpy()
    float32_weights = build(golden_config, golden_state, {})(input_ids).asnumpy()
    np.testing.assert_array_equal(float16_weights, float32_weights)

"""The shape tables of glm_core.names (which glm-convert checks weights against) equal the shapes of glm-core's
model and of the real checkpoint."""

import numpy as np

from glm_core import GLMConfig, GLMForPreTraining
from glm_core.checkpoint import expected_shapes
from glm_core.names import hf_weight_shapes, inv_freq, mindspore_weight_shapes, parameter_count


def test_mindspore_shapes_match_glm_cores_model(golden_config):
    model = GLMForPreTraining(golden_config, inference=True)
    assert mindspore_weight_shapes(golden_config) == expected_shapes(model)


def test_hf_shapes_match_the_golden_checkpoint_in_order(golden_config, golden_torch_state):
    assert hf_weight_shapes(golden_config) == {name: tuple(t.shape) for name, t in golden_torch_state.items()}
    assert list(hf_weight_shapes(golden_config)) == list(golden_torch_state)


def test_inv_freq_is_the_references_float16_buffer(golden_config, golden_torch_state):
    expected = golden_torch_state["transformer.layers.0.attention.rotary_emb.inv_freq"].numpy()
    assert inv_freq(golden_config).dtype == np.float16
    np.testing.assert_array_equal(inv_freq(golden_config), expected)


def test_chatglm_6b_table_counts_6_2_billion_parameters_besides_the_tied_head():
    shapes = mindspore_weight_shapes(GLMConfig.from_name("glm_6b"))
    assert len(shapes) == 28 * 12 + 4
    untied = sum(int(np.prod(shape)) for name, shape in shapes.items() if name != "lm_head.weight")
    assert untied == 6_173_286_400  # per layer 201,379,840; embeddings 534,642,688; final layernorm 8,192
    assert parameter_count(GLMConfig.from_name("glm_6b")) == untied + 130528 * 4096  # the head stored apart
    assert shapes["transformer.word_embeddings.embedding_table"] == (130528, 4096)
    assert shapes["transformer.layers.27.mlp.dense_4h_to_h.weight"] == (4096, 16384)

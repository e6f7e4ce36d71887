"""Checkpoint loading: MindFormers names, both in-memory layouts, and errors that list what is wrong."""

import mindspore as ms
import numpy as np
import pytest

from glm_core import CheckpointMismatchError, GLMForPreTraining, load_checkpoint, save_model_checkpoint
from glm_core.checkpoint import read_checkpoint, save_checkpoint


def test_parameter_names_are_mindformers_names(golden_model):
    names = {p.name for p in golden_model.get_parameters()}
    assert "transformer.word_embeddings.embedding_table" in names
    assert "transformer.layers.1.attention.query_key_value.weight" in names
    assert "transformer.layers.0.post_attention_layernorm.gamma" in names
    assert "transformer.final_layernorm.beta" in names and "lm_head.weight" in names
    assert len(names) == 2 * 12 + 4


def test_load_checkpoint_gives_the_golden_model(golden_config, golden_ckpt, golden_model):
    model = GLMForPreTraining(golden_config, inference=True)
    load_checkpoint(model, golden_ckpt)
    ids = ms.Tensor([[261, 353, 394, 3001, 3004]], ms.int32)
    np.testing.assert_array_equal(model(ids).asnumpy(), golden_model(ids).asnumpy())


def test_saved_checkpoint_keeps_out_in_layout(golden_model, golden_state, tmp_path):
    path = save_model_checkpoint(golden_model, tmp_path / "saved.ckpt")
    saved = read_checkpoint(path)
    name = "transformer.layers.0.mlp.dense_h_to_4h.weight"
    assert saved[name].shape == (256, 64)
    np.testing.assert_array_equal(saved[name], golden_state[name].astype(np.float32))


def test_mismatched_checkpoint_lists_missing_unexpected_and_misshaped(golden_config, golden_state, tmp_path):
    broken = dict(golden_state)
    broken["transformer.layers.0.attention.dense.weightz"] = broken.pop("transformer.layers.0.attention.dense.weight")
    broken["lm_head.weight"] = broken["lm_head.weight"][:100]
    path = save_checkpoint(broken, tmp_path / "broken.ckpt")
    with pytest.raises(CheckpointMismatchError) as error:
        load_checkpoint(GLMForPreTraining(golden_config), path)
    text = str(error.value)
    assert "broken.ckpt" in text
    assert "missing (1): transformer.layers.0.attention.dense.weight" in text
    assert "unexpected (1): transformer.layers.0.attention.dense.weightz" in text
    assert "lm_head.weight: checkpoint (100, 64), model (3200, 64)" in text


def test_missing_and_corrupt_files_name_the_path(golden_config, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.ckpt"):
        load_checkpoint(GLMForPreTraining(golden_config), tmp_path / "nowhere.ckpt")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=r"corrupt\.ckpt"):
        load_checkpoint(GLMForPreTraining(golden_config), corrupt)

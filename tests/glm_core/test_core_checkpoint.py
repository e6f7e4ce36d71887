"""Checkpoint loading: MindFormers names, streaming into the model's dtype in bounded memory, and errors
that list what is wrong."""

import json
import os
import shutil
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from glm_core import (
    AutoModel,
    CheckpointMismatchError,
    GLMChatModel,
    GLMConfig,
    GLMForPreTraining,
    load_checkpoint,
    save_model_checkpoint,
)
from glm_core.checkpoint import expected_shapes, read_checkpoint, save_checkpoint
from glm_core.checkpoint_file import CheckpointWriter
from glm_core.model import skip_random_init
from glm_core.names import CHECKPOINT_NAME

MB = 1e6


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


def test_errors_are_one_line(golden_config, golden_state, tmp_path):
    broken = dict(golden_state)
    del broken["lm_head.weight"]
    with pytest.raises(CheckpointMismatchError) as error:
        load_checkpoint(GLMForPreTraining(golden_config), save_checkpoint(broken, tmp_path / "headless.ckpt"))
    assert "\n" not in str(error.value)
    assert str(error.value).endswith("headless.ckpt does not fit the model (2 layers, hidden 64, vocab 3200): "
                                     "missing (1): lm_head.weight")


def test_tensor_of_another_type_is_listed(golden_config, golden_state, tmp_path):
    path = tmp_path / "int_head.ckpt"
    entries = [{"name": name, "data": ms.Tensor(array)} for name, array in golden_state.items()]
    entries[-1]["data"] = ms.Tensor(np.zeros((3200, 64), np.int32))
    assert entries[-1]["name"] == "lm_head.weight"
    ms.save_checkpoint(entries, str(path))
    with pytest.raises(CheckpointMismatchError, match=r"not float16 or float32 \(1\): lm_head\.weight: Int32"):
        load_checkpoint(GLMForPreTraining(golden_config), path)


def test_skip_random_init_builds_zero_weights(golden_config):
    with skip_random_init():
        unloaded = GLMForPreTraining(golden_config)
    assert not unloaded.lm_head.weight.asnumpy().any()
    assert not unloaded.transformer.word_embeddings.embedding_table.asnumpy().any()
    assert GLMForPreTraining(golden_config).lm_head.weight.asnumpy().std() == pytest.approx(0.02, rel=0.05)


def test_from_pretrained_keeps_the_checkpoints_float16(model_dir, golden_state):
    model = AutoModel.from_pretrained(model_dir)
    assert model.config.param_init_type == "float16"
    assert {p.dtype for p in model.get_parameters()} == {ms.float16}
    np.testing.assert_array_equal(model.lm_head.weight.asnumpy(), golden_state["lm_head.weight"])


def test_from_pretrained_casts_to_the_dtype_asked_for(model_dir, golden_state):
    model = AutoModel.from_pretrained(model_dir, param_init_type="float32")
    assert {p.dtype for p in model.get_parameters()} == {ms.float32}
    name = "transformer.layers.1.mlp.dense_4h_to_h.weight"
    loaded = {p.name: p.asnumpy() for p in model.get_parameters()}[name]
    np.testing.assert_array_equal(loaded, golden_state[name].astype(np.float32))


def test_float32_checkpoint_loads_into_a_float16_model(golden_config, golden_state, tmp_path):
    widened = {name: array.astype(np.float32) + np.float32(1e-4) for name, array in golden_state.items()}
    path = save_checkpoint(widened, tmp_path / "float32.ckpt")
    config = GLMConfig(**{**golden_config.to_dict(), "param_init_type": "float16"})
    model = GLMForPreTraining(config)
    load_checkpoint(model, path)
    name = "transformer.word_embeddings.embedding_table"
    loaded = {p.name: p.asnumpy() for p in model.get_parameters()}[name]
    assert loaded.dtype == np.float16
    np.testing.assert_array_equal(loaded, widened[name].astype(np.float16))


# A checkpoint of about 1.2 GB: ChatGLM-6B's vocabulary at half its width, one layer.
BOUND_SHAPE = dict(vocab_size=130528, hidden_size=2048, num_layers=1, num_heads=16, inner_hidden_size=8192,
                   seq_length=64)
MEASURE_LOAD = r"""
import resource, sys
import mindspore as ms
ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
from glm_core import AutoModel
model = AutoModel.from_pretrained(sys.argv[1])
print(str(model.lm_head.weight.dtype), float(model.lm_head.weight[5, :4].asnumpy().astype("float32").sum()))
"""


def test_loading_holds_the_weights_once(model_dir, tmp_path):
    """Peak RSS of a fresh process loading a 1.2 GB float16 folder stays within 1.2 x its size + 500 MB
    (the bench/load.py bound; a load holding the file and the weights, or float32 weights, exceeds it)."""
    config = GLMConfig.from_name("glm_6b_chat", **BOUND_SHAPE)
    with skip_random_init():
        shapes = expected_shapes(GLMChatModel(config))
    folder = tmp_path / "wide"
    folder.mkdir()
    with CheckpointWriter(folder / CHECKPOINT_NAME) as writer:
        for name, shape in shapes.items():
            writer.add(name, np.full(shape, 0.25, np.float16))
    config.save_pretrained(folder)
    for name in ("ice_text.model", "tokenizer_config.json"):
        shutil.copy(model_dir / name, folder)
    size = (folder / CHECKPOINT_NAME).stat().st_size
    assert size > 1.1e9

    process = subprocess.Popen([sys.executable, "-c", MEASURE_LOAD, str(folder)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.stdout.read(), process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)  # this child's peak RSS alone
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, stderr[-2000:]
    assert stdout.split() == ["Float16", "1.0"]
    peak = usage.ru_maxrss * 1024
    assert peak <= 1.2 * size + 500 * MB, json.dumps({"peak_MB": peak / MB, "checkpoint_MB": size / MB})

"""Hugging Face → MindSpore → Hugging Face gives back the very same tensors, in the Hugging Face layout."""

import json
import shutil

import numpy as np
import pytest
import torch
from golden_layouts import read_torch_folder
from safetensors.torch import load_file

from glm_convert import convert_hf_to_ms, convert_ms_to_hf
from glm_convert.ms_to_hf import parse_size, plan_shards
from glm_core.checkpoint import read_checkpoint


@pytest.fixture(scope="module")
def golden_model_folder(golden_hf_dir, tmp_path_factory):
    """The golden weights converted to our model folder (checkpoint, config.json, tokenizer files)."""
    folder = tmp_path_factory.mktemp("roundtrip") / "glm_tiny"
    convert_hf_to_ms(golden_hf_dir, folder)
    return folder


def assert_same_tensors(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert actual[name].shape == tensor.shape, name
        assert torch.equal(actual[name], tensor), name


def test_roundtrip_gives_bit_identical_bin_shards(golden_model_folder, golden_torch_state, tmp_path):
    convert_ms_to_hf(golden_model_folder / "model.ckpt", tmp_path / "hf")
    assert_same_tensors(read_torch_folder(tmp_path / "hf"), golden_torch_state)


def test_roundtrip_gives_bit_identical_safetensors(golden_model_folder, golden_torch_state, tmp_path):
    convert_ms_to_hf(golden_model_folder / "model.ckpt", tmp_path / "hf", safetensors=True)
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(tmp_path / "hf" / shard))
    assert_same_tensors(tensors, golden_torch_state)


def test_ckpt_to_hf_to_ckpt_gives_the_same_checkpoint(golden_ckpt, golden_hf_dir, tmp_path):
    convert_ms_to_hf(golden_ckpt, tmp_path / "hf", config=golden_hf_dir)
    convert_hf_to_ms(tmp_path / "hf", tmp_path / "again.ckpt")
    assert (tmp_path / "again.ckpt").read_bytes() == golden_ckpt.read_bytes()


def test_hf_folder_has_index_config_and_tokenizer(golden_model_folder, golden_hf_dir, tmp_path):
    convert_ms_to_hf(golden_model_folder / "model.ckpt", tmp_path / "hf")
    folder = tmp_path / "hf"
    assert sorted(path.name for path in folder.iterdir()) == [
        "config.json", "ice_text.model", "pytorch_model-00001-of-00001.bin", "pytorch_model.bin.index.json",
        "tokenizer_config.json"]
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    golden_index = json.loads((golden_hf_dir / "pytorch_model.bin.index.json").read_text())
    assert index["metadata"]["total_size"] == golden_index["metadata"]["total_size"]
    assert list(index["weight_map"]) == list(golden_index["weight_map"])
    config = json.loads((folder / "config.json").read_text())
    golden_config = json.loads((golden_hf_dir / "config.json").read_text())
    for key in ("model_type", "architectures", "num_layers", "hidden_size", "num_attention_heads", "vocab_size",
                "inner_hidden_size", "max_sequence_length", "layernorm_epsilon", "position_encoding_2d",
                "bos_token_id", "eos_token_id", "mask_token_id", "gmask_token_id", "pad_token_id", "torch_dtype"):
        assert config[key] == golden_config[key], key
    for name in ("ice_text.model", "tokenizer_config.json"):
        assert (folder / name).read_bytes() == (golden_hf_dir / name).read_bytes()


def test_shards_follow_the_size_limit_in_model_order(golden_model_folder, golden_torch_state, tmp_path):
    convert_ms_to_hf(golden_model_folder / "model.ckpt", tmp_path / "hf", max_shard_size="300KB")
    folder = tmp_path / "hf"
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    shards = sorted(folder.glob("pytorch_model-*.bin"))
    assert [shard.name for shard in shards] == [f"pytorch_model-0000{n}-of-00003.bin" for n in (1, 2, 3)]
    for shard in shards:
        state = torch.load(shard, weights_only=True)
        assert all(index["weight_map"][name] == shard.name for name in state)
    # The embeddings (409,600 bytes) exceed the limit alone: they get a shard of their own, as in transformers.
    assert list(torch.load(shards[0], weights_only=True)) == ["transformer.word_embeddings.weight"]
    assert_same_tensors(read_torch_folder(folder), golden_torch_state)


def test_float32_checkpoint_converts_back_to_float32(golden_hf_dir, golden_torch_state, tmp_path):
    convert_hf_to_ms(golden_hf_dir, tmp_path / "glm", dtype="float32")
    convert_ms_to_hf(tmp_path / "glm" / "model.ckpt", tmp_path / "hf")
    back = read_torch_folder(tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "float32"
    for name, tensor in golden_torch_state.items():
        expected_dtype = torch.float16 if name.endswith("inv_freq") else torch.float32
        assert back[name].dtype == expected_dtype
        assert torch.equal(back[name].half(), tensor), name


def test_missing_lm_head_is_filled_from_the_word_embeddings(golden_hf_dir, golden_torch_state, tmp_path, caplog):
    folder = tmp_path / "untied"
    shutil.copytree(golden_hf_dir, folder)
    shard = folder / "pytorch_model-00002-of-00002.bin"
    state = torch.load(shard, weights_only=True)
    del state["lm_head.weight"]
    torch.save(state, shard)
    with caplog.at_level("INFO", logger="glm_convert"):
        summary = convert_hf_to_ms(folder, tmp_path / "glm.ckpt")
    assert "has no lm_head.weight: filling it from the word embeddings" in caplog.text
    tensors = read_checkpoint(summary.output)
    assert summary.tensors == len(tensors) == 28
    np.testing.assert_array_equal(tensors["lm_head.weight"], golden_torch_state["lm_head.weight"].numpy())


def test_mindspore_names_and_dropped_inv_freq(golden_ckpt, golden_torch_state):
    tensors = read_checkpoint(golden_ckpt)
    assert not any(name.endswith("inv_freq") for name in tensors)
    assert "transformer.word_embeddings.embedding_table" in tensors
    assert "transformer.layers.1.post_attention_layernorm.gamma" in tensors
    assert "transformer.final_layernorm.beta" in tensors
    # Linear weights keep Hugging Face's [out, in].
    np.testing.assert_array_equal(tensors["transformer.layers.0.mlp.dense_h_to_4h.weight"],
                                  golden_torch_state["transformer.layers.0.mlp.dense_h_to_4h.weight"].numpy())


@pytest.mark.parametrize(("text", "expected"), [("2GB", 2 * 10**9), ("500MB", 500 * 10**6), ("1GiB", 2**30),
                                                ("1.5 kb", 1500), ("4096", 4096), (123, 123)])
def test_shard_sizes_read_as_transformers_reads_them(text, expected):
    assert parse_size(text) == expected


def test_a_new_shard_starts_when_the_next_tensor_would_overflow():
    sizes = {"a": 6, "b": 4, "c": 1, "d": 20, "e": 3}
    assert plan_shards(sizes, 10) == [["a", "b"], ["c"], ["d"], ["e"]]

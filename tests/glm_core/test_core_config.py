"""GLMConfig: presets, the three file forms it reads, and validation errors."""

import json

import pytest

from glm_core import GLMConfig


def test_presets_hold_the_real_and_benchmark_shapes():
    six_b = GLMConfig.from_name("glm_6b")
    assert (six_b.vocab_size, six_b.hidden_size, six_b.num_layers, six_b.num_heads, six_b.inner_hidden_size) == (
        130528, 4096, 28, 32, 16384)
    assert not six_b.use_past and GLMConfig.from_name("glm_6b_chat").use_past
    bench = GLMConfig.from_name("glm_bench")
    assert (bench.vocab_size, bench.hidden_size, bench.num_layers, bench.num_heads, bench.inner_hidden_size) == (
        130528, 1024, 8, 16, 4096)


def test_hugging_face_config_json_is_read(golden_hf_dir):
    config = GLMConfig.from_pretrained(golden_hf_dir)
    assert (config.vocab_size, config.hidden_size, config.num_layers, config.num_heads) == (3200, 64, 2, 4)
    assert config.seq_length == 256  # max_sequence_length
    assert (config.bos_token_id, config.eos_token_id, config.gmask_token_id, config.pad_token_id) == (
        3004, 3005, 3001, 3)
    assert config == GLMConfig.from_name("glm_tiny")


def test_save_pretrained_round_trips(tmp_path):
    config = GLMConfig.from_name("glm_tiny", use_past=True)
    config.save_pretrained(tmp_path)
    assert GLMConfig.from_pretrained(tmp_path) == config


def test_mindformers_yaml_model_config_is_read(tmp_path):
    path = tmp_path / "run_glm_6b_finetune.yaml"
    path.write_text("model:\n  model_config:\n    type: GLMConfig\n    vocab_size: 130528\n    hidden_size: 4096\n"
                    "    num_layers: 28\n    num_heads: 32\n    inner_hidden_size: 16384\n    seq_length: 512\n"
                    "    use_past: True\n  arch:\n    type: GLMChatModel\n", encoding="utf-8")
    config = GLMConfig.from_yaml(path)
    assert config.seq_length == 512 and config.use_past and config.num_layers == 28


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 66}, "divisible by num_heads"),
        ({"hidden_size": 72, "num_heads": 4}, "divisible by 4"),
        ({"num_layers": 0}, "num_layers"),
        ({"compute_dtype": "bfloat16"}, "compute_dtype"),
    ],
)
def test_invalid_shapes_are_refused_with_the_field_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        GLMConfig.from_name("glm_tiny", **overrides)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="glm_6b_chat"):
        GLMConfig.from_name("glm_13b")


def test_broken_config_file_names_the_path(tmp_path):
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"config\.json"):
        GLMConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 66, "num_attention_heads": 4}))
    with pytest.raises(ValueError, match=r"config\.json.*divisible"):
        GLMConfig.from_pretrained(tmp_path)

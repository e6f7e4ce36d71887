"""Converted golden weights reproduce the original ChatGLM-6B code's logits and generations in glm-core."""

import mindspore as ms
import numpy as np
import pytest
import torch
from golden_layouts import PTH, SAFETENSORS, SINGLE_BIN

from glm_convert import convert_hf_to_ms
from glm_core import AutoModel, AutoTokenizer, GLMConfig, GLMForPreTraining, generate, load_checkpoint
from glm_core.checkpoint import read_checkpoint

# As glm-core's own golden test (tests/glm_core/test_core_forward.py): the golden weights amplify float32
# rounding, so the worst logit may move 1e-3 and the mean 5e-5; the top-1 token may not move at all.
MAX_ABS_TOLERANCE = 1e-3
MEAN_ABS_TOLERANCE = 5e-5


@pytest.fixture(scope="module")
def converted_model(golden_config, golden_ckpt) -> GLMForPreTraining:
    """The golden checkpoint loaded by glm-core, float32, inference layout."""
    model = GLMForPreTraining(golden_config, inference=True)
    load_checkpoint(model, golden_ckpt)
    return model


@pytest.mark.parametrize("case_index", range(6))
def test_converted_weights_reproduce_golden_logits(converted_model, golden_case, golden_dir, case_index):
    case = golden_case("forward")[case_index]
    expected = np.load(golden_dir / "cases" / "forward.npz")[case["name"]]
    logits = converted_model(ms.Tensor([case["input_ids"]], ms.int32)).asnumpy()[0]
    error = np.abs(logits - expected)
    assert error.max() <= MAX_ABS_TOLERANCE
    assert error.mean() <= MEAN_ABS_TOLERANCE
    assert (logits.argmax(-1) == expected.argmax(-1)).all()


@pytest.mark.parametrize("case_index", range(6))
def test_converted_weights_reproduce_golden_generations(converted_model, golden_case, case_index):
    case = golden_case("generate")[case_index]
    output = generate(converted_model, np.array(case["input_ids"]), max_length=case["max_length"])
    np.testing.assert_array_equal(output, np.array(case["output_ids"]))


@pytest.mark.parametrize("layout", [SINGLE_BIN, PTH, SAFETENSORS])
def test_every_source_layout_gives_the_same_checkpoint(golden_sources, golden_hf_dir, golden_ckpt, tmp_path, layout):
    """A merged .bin, a .pth state dict and safetensors shards convert to the sharded .bin's exact tensors."""
    converted = convert_hf_to_ms(golden_sources[layout], tmp_path / "out.ckpt", config=golden_hf_dir)
    expected = read_checkpoint(golden_ckpt)
    actual = read_checkpoint(converted.output)
    assert list(actual) == list(expected)
    for name, array in expected.items():
        assert actual[name].dtype == array.dtype
        np.testing.assert_array_equal(actual[name], array, err_msg=name)


def test_torch_legacy_format_is_read_too(golden_torch_state, golden_hf_dir, golden_ckpt, tmp_path):
    """State dicts saved by torch < 1.6 (not zip archives) cannot be memory-mapped but still convert."""
    legacy = tmp_path / "legacy.pth"
    torch.save(golden_torch_state, legacy, _use_new_zipfile_serialization=False)
    converted = convert_hf_to_ms(legacy, tmp_path / "out.ckpt", config=golden_hf_dir)
    assert converted.output.read_bytes() == golden_ckpt.read_bytes()


def test_model_folder_output_is_ready_for_auto_model(golden_hf_dir, golden_case, tmp_path):
    """The folder holds the checkpoint, our config.json and the tokenizer files; AutoModel runs it as is."""
    folder = tmp_path / "glm_tiny"
    convert_hf_to_ms(golden_hf_dir, folder, dtype="float32")
    assert sorted(path.name for path in folder.iterdir()) == [
        "config.json", "ice_text.model", "model.ckpt", "tokenizer_config.json"]
    assert GLMConfig.from_pretrained(folder) == GLMConfig.from_pretrained(golden_hf_dir)
    case = golden_case("generate")[0]
    assert AutoTokenizer.from_pretrained(folder).encode(case["texts"][0]) == case["input_ids"][0]
    model = AutoModel.from_pretrained(folder)
    output = generate(model, np.array(case["input_ids"]), max_length=case["max_length"])
    np.testing.assert_array_equal(output, np.array(case["output_ids"]))

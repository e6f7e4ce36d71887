"""glm-convert hf-to-ms --quantize int8|int4: a checkpoint for glm-core's CPU kernels, loaded as it is stored."""

import numpy as np
import pytest

from glm_convert.cli import main
from glm_core import AutoModel
from glm_core.checkpoint import model_parameters
from glm_core.checkpoint_file import CheckpointReader
from glm_core.quantized_model import weight_storage

QKV = "transformer.layers.0.attention.query_key_value"


@pytest.fixture(scope="module")
def plain_folder(golden_hf_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("plain") / "model"
    assert main(["hf-to-ms", str(golden_hf_dir), str(folder), "--quiet"]) == 0
    return folder


@pytest.mark.parametrize("storage, bits, weight_type, weight_shape, scale_shape, head_type", [
    ("int8", 8, "Int8", (192, 64), (192,), "Float16"),
    ("int4", 4, "UInt8", (192, 32), (192, 2), "Int8"),
])
def test_quantized_folder_holds_what_model_quantize_gives(golden_hf_dir, plain_folder, tmp_path, capsys, storage,
                                                          bits, weight_type, weight_shape, scale_shape, head_type):
    """The LM head one step wider than the layers: float16 beside int8 (no scales), int8 beside int4."""
    folder = tmp_path / storage
    arguments = ["--group-size", "32"] if storage == "int4" else []
    assert main(["hf-to-ms", str(golden_hf_dir), str(folder), "--quantize", storage, *arguments, "--quiet"]) == 0
    assert f"wrote {folder}" in capsys.readouterr().out
    with CheckpointReader(folder / "model.ckpt") as reader:
        tensors = reader.tensors
        assert tensors[f"{QKV}.weight"].tensor_type == weight_type and tensors[f"{QKV}.weight"].shape == weight_shape
        assert tensors[f"{QKV}.weight_scale"].tensor_type == "Float16"
        assert tensors[f"{QKV}.weight_scale"].shape == scale_shape
        assert tensors["lm_head.weight"].tensor_type == head_type
        assert ("lm_head.weight_scale" in tensors) == (head_type == "Int8")
        assert tensors["transformer.word_embeddings.embedding_table"].tensor_type == "Float16"
        assert tensors[f"{QKV}.bias"].tensor_type == "Float32"
        assert tensors["transformer.final_layernorm.gamma"].tensor_type == "Float32"
    loaded = AutoModel.from_pretrained(folder)
    assert weight_storage(loaded) == storage
    quantized = AutoModel.from_pretrained(plain_folder, quantization_bit=bits, group_size=32)
    expected = model_parameters(quantized)
    assert set(model_parameters(loaded)) == set(expected)
    for name, parameter in model_parameters(loaded).items():
        assert parameter.dtype == expected[name].dtype, name
        np.testing.assert_array_equal(parameter.asnumpy(), expected[name].asnumpy())


@pytest.mark.parametrize("arguments, message", [
    (["--quantize", "int4", "--dtype", "float32"], "--dtype float32 and --quantize int4 exclude each other"),
    (["--quantize", "int4", "--group-size", "48"], "int4 group size must be a positive multiple of 32, got 48"),
    (["--quantize", "int4", "--group-size", "128"], "int4 group size 128 does not divide a Linear's 64 inputs"),
])
def test_unusable_quantization_is_one_error_line_and_writes_nothing(golden_hf_dir, tmp_path, capsys, arguments,
                                                                    message):
    folder = tmp_path / "out"
    assert main(["hf-to-ms", str(golden_hf_dir), str(folder), *arguments, "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    assert not folder.exists()


def test_unknown_quantization_is_an_argument_error(golden_hf_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["hf-to-ms", str(golden_hf_dir), str(tmp_path / "out"), "--quantize", "int2"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'int2'" in capsys.readouterr().err

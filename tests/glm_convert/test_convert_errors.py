"""Bad input gives one error that names the problem (every bad tensor, or the bad file) and writes nothing."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from glm_convert import (
    ConversionError,
    UnreadableFileError,
    WeightsMismatchError,
    convert_hf_to_ms,
    convert_ms_to_hf,
)
from glm_core.checkpoint import read_checkpoint
from glm_core.checkpoint_file import CheckpointWriter

SHARD_1 = "pytorch_model-00001-of-00002.bin"
SHARD_2 = "pytorch_model-00002-of-00002.bin"


def rewrite_shard(folder, shard, change) -> None:
    """Load ``shard``, let ``change`` edit its state dict, save it back."""
    state = torch.load(folder / shard, map_location="cpu", weights_only=True)
    change(state)
    torch.save(state, folder / shard)


def files_under(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.fixture
def out(tmp_path):
    """An empty folder to convert into; tests assert it stays empty."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("destination", ["glm.ckpt", "model_folder"])
def test_renamed_key_is_listed_as_unknown_and_its_original_as_missing(hf_copy, out, destination):
    def rename(state):
        state["transformer.layers.1.attention.dense.weights"] = state.pop("transformer.layers.1.attention.dense.weight")

    rewrite_shard(hf_copy, SHARD_2, rename)
    with pytest.raises(WeightsMismatchError) as error:
        convert_hf_to_ms(hf_copy, out / destination)
    message = str(error.value)
    assert "nothing was written" in message
    assert f"unknown (1): transformer.layers.1.attention.dense.weights ({SHARD_2})" in message
    assert "missing (1): transformer.layers.1.attention.dense.weight (if the weights" in message
    assert files_under(out) == []


def test_wrong_shape_is_listed_with_both_shapes(hf_copy, out):
    def narrow(state):
        name = "transformer.layers.0.attention.query_key_value.weight"
        state[name] = state[name][:, :32].clone()

    rewrite_shard(hf_copy, SHARD_1, narrow)
    with pytest.raises(WeightsMismatchError) as error:
        convert_hf_to_ms(hf_copy, out / "glm.ckpt")
    assert (f"wrong shape (1): transformer.layers.0.attention.query_key_value.weight ({SHARD_1}): (192, 32), "
            "expected (192, 64)") in str(error.value)
    assert files_under(out) == []


def test_every_problem_is_listed_in_one_error(hf_copy, out):
    def damage(state):
        del state["transformer.final_layernorm.bias"]
        state["transformer.layers.1.mlp.dense_4h_to_h.bias"] = torch.zeros(65, dtype=torch.float16)
        state["transformer.extra"] = torch.zeros(1)

    rewrite_shard(hf_copy, SHARD_2, damage)
    with pytest.raises(WeightsMismatchError) as error:
        convert_hf_to_ms(hf_copy, out / "glm.ckpt")
    message = str(error.value)
    assert "unknown (1): transformer.extra" in message
    assert "missing (1): transformer.final_layernorm.bias" in message
    assert "wrong shape (1): transformer.layers.1.mlp.dense_4h_to_h.bias" in message


def test_truncated_shard_is_named(hf_copy, out):
    shard = hf_copy / SHARD_2
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(UnreadableFileError, match=re.escape(f"{shard}: the torch checkpoint is truncated or corrupt")):
        convert_hf_to_ms(hf_copy, out / "glm.ckpt")
    assert files_under(out) == []


def test_shard_that_is_not_a_torch_file_is_named(hf_copy, out):
    shard = hf_copy / SHARD_1
    shard.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(UnreadableFileError, match=re.escape(f"{shard}: not a torch checkpoint")):
        convert_hf_to_ms(hf_copy, out / "glm.ckpt")
    assert files_under(out) == []


def test_mindspore_checkpoint_given_as_torch_input_points_to_ms_to_hf(golden_ckpt, golden_hf_dir, out):
    with pytest.raises(UnreadableFileError, match="for a MindSpore checkpoint use ms-to-hf"):
        convert_hf_to_ms(golden_ckpt, out / "glm.ckpt", config=golden_hf_dir)


def test_shard_with_corrupt_records_is_named(hf_copy, out):
    shard = hf_copy / SHARD_1
    data = bytearray(shard.read_bytes())
    data[30:300] = bytes(270)  # inside the zip: the first record's name and pickle
    shard.write_bytes(bytes(data))
    with pytest.raises(UnreadableFileError, match=re.escape(f"{shard}: not a readable torch checkpoint")):
        convert_hf_to_ms(hf_copy, out / "glm.ckpt")
    assert files_under(out) == []


def test_truncated_safetensors_shard_is_named(golden_torch_state, golden_hf_dir, tmp_path, out):
    path = tmp_path / "model.safetensors"
    save_file(dict(golden_torch_state), path)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(UnreadableFileError, match=re.escape(f"{path}: truncated: tensor ") + ".* needs bytes up to"):
        convert_hf_to_ms(path, out / "glm.ckpt", config=golden_hf_dir)
    assert files_under(out) == []


def test_corrupt_safetensors_header_is_named(golden_hf_dir, tmp_path, out):
    path = tmp_path / "model.safetensors"
    header = json.dumps({"lm_head.weight": {"dtype": "F16", "shape": [3200, 64]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(UnreadableFileError, match=re.escape(f"{path}: corrupt safetensors header (KeyError(")):
        convert_hf_to_ms(path, out / "glm.ckpt", config=golden_hf_dir)


def test_shard_missing_from_folder_is_named(hf_copy, out):
    (hf_copy / SHARD_2).unlink()
    with pytest.raises(ConversionError, match=re.escape(f"lists shards that are not in {hf_copy}: {SHARD_2}")):
        convert_hf_to_ms(hf_copy, out / "glm.ckpt")


def test_bfloat16_tensors_are_refused(hf_copy, out):
    def to_bfloat16(state):
        state["transformer.word_embeddings.weight"] = state["transformer.word_embeddings.weight"].bfloat16()

    rewrite_shard(hf_copy, SHARD_1, to_bfloat16)
    expected = f"not float16 or float32 (1): transformer.word_embeddings.weight ({SHARD_1}): bfloat16"
    with pytest.raises(WeightsMismatchError, match=re.escape(expected)):
        convert_hf_to_ms(hf_copy, out / "glm.ckpt")


def test_state_dict_with_non_tensors_is_refused(golden_torch_state, golden_hf_dir, tmp_path, out):
    path = tmp_path / "trainer.pth"
    torch.save({**golden_torch_state, "epoch": 3}, path)
    with pytest.raises(UnreadableFileError, match="these entries are not tensors: epoch"):
        convert_hf_to_ms(path, out / "glm.ckpt", config=golden_hf_dir)


def test_weights_without_a_config_are_checked_against_chatglm_6b(golden_torch_state, tmp_path, out):
    path = tmp_path / "pt_glm_6b.pth"
    torch.save(golden_torch_state, path)
    with pytest.raises(WeightsMismatchError, match="28 layers, hidden 4096") as error:
        convert_hf_to_ms(path, out / "glm.ckpt")
    assert "--config" in str(error.value)


def test_model_folder_needs_the_tokenizer_files(golden_torch_state, golden_hf_dir, tmp_path):
    path = tmp_path / "pt_glm_6b.pth"
    torch.save(golden_torch_state, path)
    with pytest.raises(ConversionError, match=r"a model folder needs the tokenizer files, not found: .*ice_text"):
        convert_hf_to_ms(path, tmp_path / "model_folder", config=golden_hf_dir)
    assert not (tmp_path / "model_folder").exists()


def test_model_folder_holding_another_checkpoint_is_refused(golden_hf_dir, out):
    """glm-core's AutoModel reads the one .ckpt of a folder: a second one would make the folder unusable."""
    (out / "glm_6b.ckpt").write_bytes(b"old weights")
    with pytest.raises(ConversionError, match=re.escape(f"{out} already holds glm_6b.ckpt")):
        convert_hf_to_ms(golden_hf_dir, out)
    assert files_under(out) == ["glm_6b.ckpt"]


def test_unknown_dtype_is_refused(golden_hf_dir, out):
    with pytest.raises(ValueError, match="dtype must be one of float16, float32"):
        convert_hf_to_ms(golden_hf_dir, out / "glm.ckpt", dtype="bfloat16")


def test_missing_source_is_named(tmp_path, out):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        convert_hf_to_ms(tmp_path / "nowhere", out / "glm.ckpt")


def test_interrupted_conversion_leaves_no_checkpoint(golden_hf_dir, out, monkeypatch):
    written = []

    def add_then_interrupt(self, name, array, dtype=None):
        written.append(name)
        if len(written) == 10:
            raise KeyboardInterrupt

    monkeypatch.setattr(CheckpointWriter, "add", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        convert_hf_to_ms(golden_hf_dir, out / "glm.ckpt")
    assert files_under(out) == []


def test_existing_checkpoint_survives_a_failed_conversion(hf_copy, golden_ckpt, out):
    target = out / "glm.ckpt"
    target.write_bytes(golden_ckpt.read_bytes())
    (hf_copy / SHARD_2).write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(UnreadableFileError):
        convert_hf_to_ms(hf_copy, target)
    assert target.read_bytes() == golden_ckpt.read_bytes()
    assert files_under(out) == ["glm.ckpt"]


# ---------------------------------------------------------------- MindSpore checkpoint → Hugging Face


def test_truncated_ckpt_is_named(golden_ckpt, tmp_path, out):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(golden_ckpt.read_bytes()[:-500])
    with pytest.raises(UnreadableFileError, match=re.escape(f"{truncated}: not a readable MindSpore checkpoint")):
        convert_ms_to_hf(truncated, out)
    assert files_under(out) == []


def test_ckpt_with_a_renamed_and_a_misshaped_tensor_lists_both(golden_ckpt, golden_hf_dir, tmp_path, out):
    tensors = read_checkpoint(golden_ckpt)
    tensors["transformer.layers.0.attention.dense.kernel"] = tensors.pop("transformer.layers.0.attention.dense.weight")
    tensors["lm_head.weight"] = np.zeros((3200, 32), np.float16)
    damaged = tmp_path / "damaged.ckpt"
    with CheckpointWriter(damaged) as writer:
        for name, array in tensors.items():
            writer.add(name, array)
    with pytest.raises(WeightsMismatchError) as error:
        convert_ms_to_hf(damaged, out, config=golden_hf_dir)
    message = str(error.value)
    assert "unknown (1): transformer.layers.0.attention.dense.kernel" in message
    assert "missing (1): transformer.layers.0.attention.dense.weight" in message
    assert "wrong shape (1): lm_head.weight: (3200, 32), expected (3200, 64)" in message
    assert files_under(out) == []


def test_bad_shard_size_is_refused(golden_ckpt, golden_hf_dir, out):
    with pytest.raises(ValueError, match="not a size: '2 gigs'"):
        convert_ms_to_hf(golden_ckpt, out, config=golden_hf_dir, max_shard_size="2 gigs")


def test_index_json_that_is_not_an_index_is_named(hf_copy, out):
    (hf_copy / "pytorch_model.bin.index.json").write_text(json.dumps({"weights": {}}))
    with pytest.raises(UnreadableFileError, match=r"pytorch_model\.bin\.index\.json: not a Hugging Face weights index"):
        convert_hf_to_ms(hf_copy, out / "glm.ckpt")

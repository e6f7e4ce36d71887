"""The streaming .ckpt writer and reader agree byte for byte with MindSpore's own save and load."""

import re

import mindspore as ms
import numpy as np
import pytest

from glm_core import checkpoint_file
from glm_core.checkpoint_file import CheckpointReader, CheckpointWriter, UnreadableCheckpointError


@pytest.fixture
def tensors() -> dict:
    rng = np.random.default_rng(0)
    return {
        "transformer.word_embeddings.embedding_table": rng.standard_normal((300, 16)).astype(np.float16),
        "transformer.layers.0.input_layernorm.gamma": rng.standard_normal(16).astype(np.float32),
        "lm_head.weight": rng.standard_normal((300, 16)).astype(np.float16),
        "scalar": np.array(2.5, np.float32),
    }


def write(path, tensors, dtype=None):
    with CheckpointWriter(path) as writer:
        for name, array in tensors.items():
            writer.add(name, array, dtype)
    return path


def mindspore_save(path, tensors, **options):
    ms.save_checkpoint([{"name": name, "data": ms.Tensor(array)} for name, array in tensors.items()], str(path),
                       **options)
    return path


def test_writer_produces_mindspores_bytes(tensors, tmp_path):
    ours = write(tmp_path / "ours.ckpt", tensors)
    theirs = mindspore_save(tmp_path / "theirs.ckpt", tensors)
    assert ours.read_bytes() == theirs.read_bytes()


def test_mindspore_loads_what_the_writer_wrote(tensors, tmp_path):
    loaded = ms.load_checkpoint(str(write(tmp_path / "ours.ckpt", tensors)))
    assert list(loaded) == list(tensors)
    for name, array in tensors.items():
        assert loaded[name].asnumpy().dtype == array.dtype
        np.testing.assert_array_equal(loaded[name].asnumpy(), array)


def test_large_tensors_are_split_into_entries_mindspore_joins(tensors, tmp_path, monkeypatch):
    """MindSpore splits tensors over 512 MiB into consecutive same-name entries; so do we, at the same bytes."""
    monkeypatch.setattr(checkpoint_file, "SLICE_BYTES", 1000)
    monkeypatch.setattr(checkpoint_file, "_CONVERSION_BYTES", 256)
    path = write(tmp_path / "sliced.ckpt", tensors, np.float32)
    reader = CheckpointReader(path)
    assert len(reader.tensors["lm_head.weight"].pieces) == 20  # 300 × 16 × 4 bytes in 1000-byte entries
    loaded = ms.load_checkpoint(str(path))
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name].asnumpy(), array.astype(np.float32))
        np.testing.assert_array_equal(reader.array(name), array.astype(np.float32))


def test_reader_reads_mindspores_files(tensors, tmp_path):
    reader = CheckpointReader(mindspore_save(tmp_path / "theirs.ckpt", tensors))
    assert list(reader.tensors) == list(tensors)
    for name, array in tensors.items():
        assert reader.tensors[name].shape == array.shape
        assert reader.array(name).dtype == array.dtype
        np.testing.assert_array_equal(reader.array(name), array)


def test_reader_accepts_the_crc_trailer(tensors, tmp_path):
    reader = CheckpointReader(mindspore_save(tmp_path / "crc.ckpt", tensors, crc_check=True))
    np.testing.assert_array_equal(reader.array("lm_head.weight"), tensors["lm_head.weight"])


def test_reader_keeps_other_tensor_types_for_the_caller_to_refuse(tmp_path):
    path = mindspore_save(tmp_path / "steps.ckpt", {"global_step": np.array([7], np.int32)})
    reader = CheckpointReader(path)
    assert reader.tensors["global_step"].tensor_type == "Int32"
    assert reader.tensors["global_step"].dtype is None


def test_writer_casts_to_the_requested_dtype(tensors, tmp_path):
    reader = CheckpointReader(write(tmp_path / "half.ckpt", tensors, np.float16))
    assert {tensor.tensor_type for tensor in reader.tensors.values()} == {"Float16"}
    np.testing.assert_array_equal(reader.array("transformer.layers.0.input_layernorm.gamma"),
                                  tensors["transformer.layers.0.input_layernorm.gamma"].astype(np.float16))


def test_writer_reads_non_contiguous_arrays(tmp_path):
    transposed = np.arange(12, dtype=np.float32).reshape(3, 4).T
    reader = CheckpointReader(write(tmp_path / "t.ckpt", {"w": transposed}))
    np.testing.assert_array_equal(reader.array("w"), transposed)


@pytest.mark.parametrize("cut", [1, 100, 4000])
def test_truncated_file_is_named(tensors, tmp_path, cut):
    path = write(tmp_path / "whole.ckpt", tensors)
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(UnreadableCheckpointError, match=re.escape(f"{path}: not a readable MindSpore checkpoint")):
        CheckpointReader(path)


def test_other_files_are_not_checkpoints(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("these are not weights\n" * 20)
    with pytest.raises(UnreadableCheckpointError, match=r"notes\.ckpt: not a readable MindSpore checkpoint"):
        CheckpointReader(path)

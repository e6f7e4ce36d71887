"""``glm-train merge``: per-rank checkpoints of a distributed run → one full checkpoint, and back.

CPU cannot run semi-auto parallel, so the strategy file of a 2-way model-parallel run of the golden tiny model
is written here, in the JSON form MindSpore's ``strategy_ckpt_save_file`` takes, with Megatron's layout:
QKV and dense_h_to_4h split by output rows, dense and dense_4h_to_h by input columns, the embedding table by
vocabulary. The ranks' slices are cut from the golden weights with numpy, independently of MindSpore.
"""

import json

import mindspore as ms
import numpy as np
import pytest

from glm_train.checkpoints import TrainingState, checkpoint_name, save_training_checkpoint
from glm_train.cli import main
from glm_train.merge_checkpoints import MergeError, transform
from glm_train.network import LM_HEAD

MODEL_PARALLEL = 2


def tensor_map(name: str) -> list[int]:
    """Which axis of ``name`` the model-parallel dimension (0) splits; -1: not split."""
    if name.endswith("embedding_table"):
        return [0, -1]
    if any(part in name for part in ("query_key_value", "dense_h_to_4h")):
        return [0, -1] if name.endswith("weight") else [0]
    if name.endswith(("attention.dense.weight", "dense_4h_to_h.weight")):
        return [-1, 0]
    return [-1] * (2 if name.endswith("weight") else 1)


def slice_for(array: np.ndarray, name: str, rank: int) -> np.ndarray:
    for axis, dimension in enumerate(tensor_map(name)):
        if dimension == 0:
            return np.split(array, MODEL_PARALLEL, axis=axis)[rank]
    return array


@pytest.fixture
def weights(golden_state):
    """The golden weights as a training run's network holds them (the head is the tied table)."""
    return {name: array for name, array in golden_state.items() if name != LM_HEAD}


@pytest.fixture
def strategy_file(weights, tmp_path):
    layouts = {name: {"dev_matrix": [1, MODEL_PARALLEL], "tensor_map": tensor_map(name), "field": 0,
                      "opt_weight_shard_size": 0, "opt_weight_shard_step": 0} for name in weights}
    path = tmp_path / "ckpt_strategy.json"
    path.write_text(json.dumps({"parallel_layout_item": layouts}), encoding="utf-8")
    return path


def write_rank_checkpoint(folder, rank, tensors, step=10):
    """A glm-train training checkpoint of ``rank``: weights, the tied head, optimizer state, run state."""
    entries = dict(tensors)
    entries[LM_HEAD] = tensors["transformer.word_embeddings.embedding_table"]
    entries.update({f"adam_m.{name}": np.zeros_like(value, np.float32) for name, value in tensors.items()})
    entries["global_step"] = np.array(step, np.int32)
    entries["scale_sense"] = np.array(1.0, np.float32)
    path = folder / f"rank_{rank}" / checkpoint_name("glm-tiny", rank, 0, step)
    save_training_checkpoint(path, entries, TrainingState(step=step, batches_done=step), "seed: 0\n", None)
    return path


def read(path) -> dict:
    return {name: value.asnumpy() for name, value in ms.load_checkpoint(str(path)).items()}


def assert_same(actual: dict, expected: dict):
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype, name
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


def test_model_parallel_ranks_merge_into_the_unsplit_weights(weights, golden_state, strategy_file, tmp_path):
    source = tmp_path / "output" / "checkpoint"
    for rank in range(MODEL_PARALLEL):
        write_rank_checkpoint(source, rank, {name: slice_for(value, name, rank) for name, value in weights.items()})
    destination = tmp_path / "merged"
    assert main(["merge", "--src_checkpoints_dir", str(source), "--src_strategy_file", str(strategy_file),
                 "--dst_checkpoints_dir", str(destination), "--prefix", "glm-tiny"]) == 0
    assert [path.name for path in destination.rglob("*") if path.is_file()] == ["glm-tiny0.ckpt"]
    # model weights only, bit for bit, with lm_head.weight the table's copy: what glm-core loads
    assert_same(read(destination / "rank_0" / "glm-tiny0.ckpt"), golden_state)


def test_split_then_merge_round_trips(golden_state, weights, strategy_file, tmp_path):
    full = tmp_path / "full"
    write_rank_checkpoint(full, 0, weights)
    split = transform(full, tmp_path / "split", dst_strategy_file=str(strategy_file), prefix="part")
    assert [path.name for path in split] == ["part0.ckpt", "part1.ckpt"]
    for rank, path in enumerate(split):
        expected = {name: slice_for(value, name, rank) for name, value in weights.items()}
        expected[LM_HEAD] = expected["transformer.word_embeddings.embedding_table"]
        assert_same(read(path), expected)
    merged = transform(tmp_path / "split", tmp_path / "merged", src_strategy_file=str(strategy_file))
    assert_same(read(merged[0]), golden_state)


def test_merged_checkpoint_loads_into_glm_core(weights, golden_state, golden_config, strategy_file, tmp_path):
    from glm_core.checkpoint import load_checkpoint
    from glm_core.model import GLMForPreTraining

    source = tmp_path / "checkpoint"
    for rank in range(MODEL_PARALLEL):
        write_rank_checkpoint(source, rank, {name: slice_for(value, name, rank) for name, value in weights.items()})
    merged = transform(source, tmp_path / "merged", src_strategy_file=str(strategy_file))
    model = GLMForPreTraining(golden_config, inference=True)
    load_checkpoint(model, merged[0])
    for parameter in model.get_parameters():
        np.testing.assert_array_equal(parameter.asnumpy(), golden_state[parameter.name].astype(np.float32))


def test_data_parallel_replicas_merge_by_taking_rank_0(weights, golden_state, tmp_path):
    source = tmp_path / "checkpoint"
    for rank in range(2):
        write_rank_checkpoint(source, rank, weights, step=10)
        write_rank_checkpoint(source, rank, weights, step=20)
    written = transform(source, tmp_path / "merged", prefix="glm-tiny")
    assert_same(read(written[0]), golden_state)


def test_replicas_that_disagree_are_refused(weights, tmp_path):
    source = tmp_path / "checkpoint"
    write_rank_checkpoint(source, 0, weights)
    changed = dict(weights)
    name = "transformer.layers.1.mlp.dense_4h_to_h.bias"
    changed[name] = weights[name].copy()
    changed[name][3] += np.float16(1e-3)
    write_rank_checkpoint(source, 1, changed)
    with pytest.raises(MergeError, match=f"rank 1's {name} differs from rank 0's"):
        transform(source, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_existing_output_and_overlaps_are_refused(weights, tmp_path, capsys):
    source = tmp_path / "checkpoint"
    write_rank_checkpoint(source, 0, weights)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    assert main(["merge", "--src_checkpoints_dir", str(source), "--dst_checkpoints_dir", str(tmp_path / "taken")]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "taken" / "keep.txt").is_file()
    assert main(["merge", "--src_checkpoints_dir", str(source), "--dst_checkpoints_dir", str(source / "out")]) == 2
    assert "overlaps --src_checkpoints_dir" in capsys.readouterr().err
    assert main(["merge", "--src_checkpoints_dir", str(source), "--dst_checkpoints_dir", str(tmp_path / "taken"),
                 "--overwrite"]) == 0
    assert not (tmp_path / "taken" / "keep.txt").exists()


def test_missing_ranks_and_steps_are_named(weights, tmp_path, capsys):
    source = tmp_path / "checkpoint"
    write_rank_checkpoint(source, 0, weights)
    write_rank_checkpoint(source, 2, weights)
    assert main(["merge", "--src_checkpoints_dir", str(source), "--dst_checkpoints_dir", str(tmp_path / "m")]) == 2
    assert "rank folders [0, 2] are not rank_0 to rank_1" in capsys.readouterr().err
    (source / "rank_2").rename(source / "rank_1")
    assert main(["merge", "--src_checkpoints_dir", str(source), "--dst_checkpoints_dir", str(tmp_path / "m"),
                 "--step", "7"]) == 2
    assert "no checkpoint of step 7" in capsys.readouterr().err

"""scripts/run_distribute.sh, MindFormers' launcher: its CPU path (msrun, two ranks), a failing rank of its
rank-table path, and bad arguments."""

import json
import subprocess
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "run_distribute.sh"


def run_script(*args, cwd):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def train_file(make_train_file):
    return make_train_file(16)


@pytest.mark.slow
def test_two_cpu_ranks_train_identical_replicas(golden_model_dir, train_file, tmp_path):
    output = tmp_path / "out"
    result = run_script("none", "run_glm_tiny_finetune", "[0,2)", "finetune", "--load_checkpoint", golden_model_dir,
                        "--train_dataset_dir", train_file, "--output_dir", output, "--device_target", "CPU",
                        "--set", "runner_config.batch_size=4", "--set", "runner_config.epochs=1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    tensors = []
    for rank in (0, 1):
        log = output / "checkpoint" / f"rank_{rank}" / "train_log.jsonl"
        assert len(log.read_text().splitlines()) == 2  # 16 records, a global batch of 8
        (checkpoint,) = (output / "checkpoint" / f"rank_{rank}").glob("*.ckpt")
        tensors.append({name: value.asnumpy() for name, value in ms.load_checkpoint(str(checkpoint)).items()
                        if not isinstance(value, str)})
    for name in tensors[0]:
        np.testing.assert_array_equal(tensors[0][name], tensors[1][name], err_msg=name)


def test_a_failing_rank_ends_the_run_naming_rank_and_log(tmp_path):
    """With a rank table on a machine without Ascend, every rank fails to join: the script reports one and
    stops the others."""
    table = tmp_path / "hccl_2p.json"
    table.write_text(json.dumps({"version": "1.0", "server_count": "1", "server_list": [], "status": "completed"}))
    result = run_script(table, "run_glm_tiny_finetune", "[0,2)", "finetune", "--device_target", "CPU",
                        cwd=tmp_path)
    assert result.returncode == 1
    assert "failed (exit status" in result.stderr and "output/log/rank_" in result.stderr
    assert (tmp_path / "output" / "log" / "rank_0" / "glm_train.log").is_file()


@pytest.mark.parametrize("args, message", [
    (["none", "run_glm_tiny_finetune", "0-8", "finetune"], "is not [start,end)"),
    (["none", "run_glm_tiny_finetune", "[4,4)", "finetune"], "holds no device"),
    (["none", "run_glm_tiny_finetune", "[0,2)", "fine-tune"], "RUN_STATUS fine-tune"),
    (["missing.json", "run_glm_tiny_finetune", "[0,2)", "finetune"], "does not exist"),
    (["none", "run_glm_tiny_finetune"], "usage:"),
])
def test_bad_arguments_exit_2(args, message, tmp_path):
    result = run_script(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr

"""Data-parallel fine-tuning through msrun (``glm-train launch``) on CPU, against a one-process run.

Real ``glm-train`` processes on the golden tiny model: 32 records, 4 steps of a global batch of 8 (one process
with batch_size 8; two ranks with 4 each), a checkpoint every 2 steps. The data order gives the two ranks the
halves of the one process's batches, so the loss curves must agree to float32 rounding of the reductions.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

pytestmark = pytest.mark.slow

RECORDS, GLOBAL_BATCH, EVERY = 32, 8, 2
STEPS = RECORDS // GLOBAL_BATCH
LOSS_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def train_file(make_train_file):
    return make_train_file(RECORDS)


def run_flags(model_dir, train_file, output_dir, batch_size):
    return ["--config", "run_glm_tiny_finetune", "--no-progress", "--load_checkpoint", str(model_dir),
            "--train_dataset_dir", str(train_file), "--output_dir", str(output_dir),
            "--set", "runner_config.epochs=1", "--set", f"runner_config.batch_size={batch_size}",
            "--set", "lr_schedule.warmup_steps=1",
            "--set", f"callbacks=[{{type: CheckpointMonitor, prefix: run, save_checkpoint_steps: {EVERY}, "
                     "keep_checkpoint_max: 5}]"]


def glm_train(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "glm_train.cli", *args], capture_output=True, text=True,
                          timeout=600, **kwargs)


def losses(output_dir: Path, rank: int) -> list:
    log = output_dir / "checkpoint" / f"rank_{rank}" / "train_log.jsonl"
    return [json.loads(line)["loss"] for line in log.read_text().splitlines()]


def checkpoint_tensors(path: Path) -> dict:
    return {name: value.asnumpy() for name, value in ms.load_checkpoint(str(path)).items()
            if not isinstance(value, str)}


@pytest.fixture(scope="module")
def single_run(golden_model_dir, train_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("single")
    result = glm_train(*run_flags(golden_model_dir, train_file, output, GLOBAL_BATCH))
    assert result.returncode == 0, result.stderr
    return output


def assert_equals_single_run(output: Path, single: Path):
    assert len(losses(single, 0)) == STEPS
    for rank in (0, 1):
        np.testing.assert_allclose(losses(output, rank), losses(single, 0), rtol=0, atol=LOSS_TOLERANCE)
    # every checkpoint: the two replicas hold the same weights and optimizer state, bit for bit
    for step, epoch in ((EVERY, 0), (STEPS, 1)):
        first = checkpoint_tensors(output / "checkpoint" / "rank_0" / f"run_rank_0-{epoch}_{step}.ckpt")
        second = checkpoint_tensors(output / "checkpoint" / "rank_1" / f"run_rank_1-{epoch}_{step}.ckpt")
        assert first.keys() == second.keys() and any(name.startswith("adam_m.") for name in first)
        for name in first:
            np.testing.assert_array_equal(first[name], second[name], err_msg=f"step {step}: {name}")
    assert (output / "model" / "model.ckpt").is_file()


def test_two_ranks_equal_one_process_with_the_global_batch(golden_model_dir, train_file, single_run, tmp_path):
    output = tmp_path / "two"
    result = glm_train("launch", "--nproc", "2", "--",
                       *run_flags(golden_model_dir, train_file, output, GLOBAL_BATCH // 2))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_equals_single_run(output, single_run)
    assert {path.name for path in (output / "log").iterdir()} == {"scheduler.log", "worker_0.log", "worker_1.log"}


def test_two_node_ranks_on_loopback_equal_one_process(golden_model_dir, train_file, single_run, tmp_path):
    from glm_train.launch import free_port

    output = tmp_path / "nodes"
    port = free_port("127.0.0.1")

    def start(node: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "glm_train.cli", "launch", "--nproc", "1", "--worker_num", "2",
                                 "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port),
                                 "--log_dir", str(output / f"log_node{node}"), "--",
                                 *run_flags(golden_model_dir, train_file, output, GLOBAL_BATCH // 2)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # Node 1 starts once node 0's scheduler listens: on one machine both nodes start a scheduler on the port
    # (see below), and node 0's must be the one that binds it.
    nodes = [start(0)]
    deadline = time.monotonic() + 120
    while not listening(port) and nodes[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    nodes.append(start(1))
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert nodes[0].returncode == 0, outputs[0][-2000:]
    # msrun starts a scheduler wherever master_addr is a local address, so on one machine node 1 starts a
    # second one, which cannot bind the port and makes node 1's msrun exit 1; node 1's worker joined node 0's
    # scheduler and trained. (On two machines node 1 starts no scheduler.)
    assert "trained 4 steps" in (output / "log_node1" / "worker_1.log").read_text()
    assert "Failed to init the tcp server" in (output / "log_node1" / "scheduler.log").read_text()
    assert_equals_single_run(output, single_run)


def test_a_failed_rank_ends_the_run_naming_its_log(golden_model_dir, train_file, tmp_path):
    output = tmp_path / "crash"
    # A real fault for rank 1 alone: its checkpoint folder holds an earlier run's checkpoint, which a fresh
    # run refuses. Rank 0 goes on into its first step's all-reduce, where it would wait for rank 1.
    stale = output / "checkpoint" / "rank_1" / "run_rank_1-0_2.ckpt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    environment = dict(os.environ, GLM_TEST_RUN_MARKER=str(output))
    result = glm_train("launch", "--nproc", "2", "--",
                       *run_flags(golden_model_dir, train_file, output, GLOBAL_BATCH // 2), env=environment)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    log = output / "log" / "worker_1.log"
    assert message.startswith(f"glm-train launch: rank 1 exited with status 2; its log: {log}: ")
    assert "already holds checkpoints of prefix 'run'" in message
    assert "already holds checkpoints" in log.read_text()
    assert not list(output.glob("checkpoint/rank_0/*.ckpt"))
    # nothing of the run is left behind: no worker, no scheduler
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _has_marker(pid, str(output))]


def listening(port: int) -> bool:
    """Whether a socket listens on TCP ``port`` on this machine (read from /proc/net, without connecting)."""
    for table in ("tcp", "tcp6"):
        for line in Path("/proc/net", table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                return True
    return False


def _has_marker(pid: str, marker: str) -> bool:
    try:
        return f"GLM_TEST_RUN_MARKER={marker}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def test_launch_refuses_a_bad_config_before_starting_processes(tmp_path):
    result = glm_train("launch", "--nproc", "2", "--", "--config", "run_glm_tiny_finetune", "--output_dir",
                       str(tmp_path / "out"), "--set", "runner_config.bach_size=4")
    assert result.returncode == 2
    assert "unknown key 'runner_config.bach_size'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_model_parallel_on_cpu_is_refused_by_every_rank(golden_model_dir, train_file, tmp_path):
    result = glm_train("launch", "--nproc", "2", "--",
                       *run_flags(golden_model_dir, train_file, tmp_path / "mp", GLOBAL_BATCH // 2),
                       "--set", "parallel_config.model_parallel=2")
    assert result.returncode == 1
    assert "MindSpore runs model parallel on Ascend and GPU only" in result.stderr

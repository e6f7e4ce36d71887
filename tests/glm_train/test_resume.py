"""A run killed with SIGKILL and continued with --resume equals the run that was never interrupted, bit for bit.

Both runs are real ``glm-train`` processes on the golden tiny checkpoint: 20 steps of 4 records, a
checkpoint every 10. The interrupted one is killed as soon as its step-10 checkpoint lands, then resumed.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

pytestmark = pytest.mark.slow

STEPS, EVERY, BATCH = 20, 10, 4


@pytest.fixture(scope="module")
def train_file(make_train_file):
    return make_train_file(STEPS * BATCH)


def command(model_dir, train_file, output_dir, *extra):
    return [sys.executable, "-m", "glm_train.cli", "--config", "run_glm_tiny_finetune", "--no-progress",
            "--load_checkpoint", str(model_dir), "--train_dataset_dir", str(train_file),
            "--output_dir", str(output_dir), "--set", "runner_config.epochs=1",
            "--set", f"runner_config.batch_size={BATCH}", "--set", "lr_schedule.warmup_steps=5",
            "--set", f"callbacks=[{{type: CheckpointMonitor, prefix: run, save_checkpoint_steps: {EVERY}, "
                     "keep_checkpoint_max: 5}]", *extra]


def checkpoint_tensors(path: Path) -> dict:
    return {name: value.asnumpy() for name, value in ms.load_checkpoint(str(path)).items()
            if not isinstance(value, str) and name != "run_config"}


def losses(output_dir: Path) -> list:
    log = output_dir / "checkpoint" / "rank_0" / "train_log.jsonl"
    return [json.loads(line)["loss"] for line in log.read_text().splitlines()]


def test_killed_and_resumed_run_equals_the_straight_run(golden_model_dir, train_file, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    subprocess.run(command(golden_model_dir, train_file, straight), check=True, capture_output=True)

    process = subprocess.Popen(command(golden_model_dir, train_file, interrupted), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    first = interrupted / "checkpoint" / "rank_0" / f"run_rank_0-0_{EVERY}.ckpt"
    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    last_name = f"run_rank_0-1_{STEPS}.ckpt"
    assert not (interrupted / "checkpoint" / "rank_0" / last_name).exists()

    subprocess.run(command(golden_model_dir, train_file, interrupted, "--resume"), check=True, capture_output=True)

    assert losses(interrupted) == losses(straight)
    assert len(losses(straight)) == STEPS
    resumed = checkpoint_tensors(interrupted / "checkpoint" / "rank_0" / last_name)
    uninterrupted = checkpoint_tensors(straight / "checkpoint" / "rank_0" / last_name)
    assert resumed.keys() == uninterrupted.keys()
    assert any(name.startswith("adam_m.") for name in resumed)
    for name in uninterrupted:
        np.testing.assert_array_equal(resumed[name], uninterrupted[name], err_msg=name)

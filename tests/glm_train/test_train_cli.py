"""glm-train as a user runs it: a whole fine-tuning run, and one-line errors with exit status 2."""

import json
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from glm_core.generation_config import GenerationConfig
from glm_train.checkpoints import load_training_checkpoint
from glm_train.predict import predict


@pytest.fixture(scope="module")
def small_train_file(make_train_file):
    return make_train_file(32)


def glm_train(*args):
    return subprocess.run([sys.executable, "-m", "glm_train.cli", *map(str, args)], capture_output=True, text=True)


def finetune(model_dir, train_file, output_dir, *extra):
    return glm_train("--config", "run_glm_tiny_finetune", "--no-progress", "--load_checkpoint", model_dir,
                     "--train_dataset_dir", train_file, "--output_dir", output_dir, "--set", "runner_config.epochs=1",
                     "--set", "runner_config.batch_size=8", *extra)


def test_a_finetune_run_leaves_checkpoint_log_curve_and_model(golden_model_dir, small_train_file, tmp_path):
    result = finetune(golden_model_dir, small_train_file, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "out" / "checkpoint" / "rank_0"
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2, 3, 4]
    assert {"loss", "learning_rate", "tokens_per_second", "grad_norm", "loss_scale"} <= log[0].keys()
    assert (run_dir / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tensors, state, run_config_text, pet_config = load_training_checkpoint(run_dir / "glm-tiny_rank_0-1_4.ckpt")
    assert (state.step, state.epoch, state.batches_done) == (4, 1, 0)
    assert "adam_m.transformer.layers.0.attention.query_key_value.weight" in tensors and pet_config is None
    assert "run_glm_tiny" not in run_config_text and "batch_size: 8" in run_config_text
    model = ms.load_checkpoint(str(tmp_path / "out" / "model" / "model.ckpt"))
    np.testing.assert_array_equal(model["lm_head.weight"].asnumpy(),
                                  model["transformer.word_embeddings.embedding_table"].asnumpy())
    assert (tmp_path / "out" / "model" / "ice_text.model").is_file()


def test_a_fresh_run_refuses_an_output_folder_with_checkpoints(golden_model_dir, small_train_file, tmp_path):
    assert finetune(golden_model_dir, small_train_file, tmp_path / "out").returncode == 0
    again = finetune(golden_model_dir, small_train_file, tmp_path / "out")
    assert again.returncode == 2
    assert "already holds checkpoints" in again.stderr and "--resume" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_a_predict_run_generates_as_its_run_config_says(golden_model_dir, chat_model, tokenizer, tmp_path):
    prompts = ["你好", "类型#裙*版型#显瘦"]
    result = glm_train("--config", "run_glm_tiny_finetune", "--run_mode", "predict", "--no-progress",
                       "--load_checkpoint", golden_model_dir, "--output_dir", tmp_path, "--predict_data", *prompts,
                       "--set", "predict.max_new_tokens=16", "--set", "model.model_config.repetition_penalty=1.5",
                       "--set", "model.model_config.do_sample=true")
    assert result.returncode == 0, result.stderr
    # MindFormers' top_k 1 (the config's default) leaves one token to sample: the penalised greedy answer
    assert "do_sample with model.model_config.top_k 1 keeps only the most likely token" in result.stderr
    expected = predict(chat_model, tokenizer, prompts, tmp_path / "expected.jsonl",
                       GenerationConfig(max_new_tokens=16, repetition_penalty=1.5), batch_size=1, progress=False)
    written = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert written == expected


@pytest.mark.parametrize("args, message", [
    (["--config", "no_such_config"], "no config file no_such_config"),
    (["--config", "run_glm_tiny_finetune", "--set", "runner_config.batchsize=2"], "unknown key"),
    (["--config", "run_glm_tiny_finetune", "--run_mode", "finetune"], "no training data"),
])
def test_usage_errors_are_one_line_with_status_2(args, message):
    result = glm_train(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_and_corrupt_checkpoints_are_one_line_errors(small_train_file, tmp_path):
    missing = finetune(tmp_path / "nowhere.ckpt", small_train_file, tmp_path / "a")
    assert missing.returncode == 2 and "nowhere.ckpt" in missing.stderr
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    result = finetune(corrupt, small_train_file, tmp_path / "b")
    assert result.returncode == 2 and "corrupt.ckpt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    no_resume = finetune(corrupt, small_train_file, tmp_path / "c", "--resume")
    assert no_resume.returncode == 2 and "no checkpoint" in no_resume.stderr

"""Run configs: MindFormers' YAML read strictly, with --set overrides and the shipped configs."""

import pytest

from glm_core.generation_config import GenerationConfig
from glm_core.lora import LoRAConfig
from glm_train.run_config import (
    RunConfigError,
    checkpoint_callback,
    generation_config,
    load_run_config,
    lora_config,
    model_config,
    shipped_configs,
)


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_an_unknown_key_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, "lr_schedule:\n  lerning_rate: 1.e-4\n")
    with pytest.raises(RunConfigError, match=r"run\.yaml: unknown key 'lr_schedule\.lerning_rate'"):
        load_run_config(path)


def test_an_unknown_key_in_a_callback_is_refused(tmp_path):
    path = write(tmp_path, "callbacks:\n  - type: CheckpointMointor\n    every: 5\n")
    with pytest.raises(RunConfigError, match=r"callbacks\.\[0\]\.every"):
        load_run_config(path)


def test_set_overrides_the_file_and_is_checked_too(tmp_path):
    path = write(tmp_path, "runner_config:\n  batch_size: 4\n")
    config = load_run_config(path, ["runner_config.batch_size=2", "lr_schedule.learning_rate=3e-4"])
    assert config["runner_config"]["batch_size"] == 2
    assert config["lr_schedule"]["learning_rate"] == pytest.approx(3e-4)
    with pytest.raises(RunConfigError, match=r"--set runner_config\.batchsize=2: unknown key"):
        load_run_config(path, ["runner_config.batchsize=2"])


def test_values_that_cannot_form_a_run_are_refused(tmp_path):
    with pytest.raises(RunConfigError, match=r"runner_config\.batch_size must be an integer >= 1, got 0"):
        load_run_config(write(tmp_path, "runner_config:\n  batch_size: 0\n"))
    with pytest.raises(RunConfigError, match="num_heads"):
        load_run_config(write(tmp_path, "model:\n  model_config:\n    hidden_size: 60\n    num_heads: 7\n"))


def test_every_shipped_config_loads():
    assert {"run_glm_6b_finetune.yaml", "run_glm_6b_lora.yaml", "run_glm_6b_infer.yaml",
            "run_glm_6b_lora_infer.yaml", "run_glm_tiny_finetune.yaml"} <= set(shipped_configs())
    for name in shipped_configs():
        load_run_config(name)


def test_the_lora_config_holds_mindformers_pet_config():
    config = load_run_config("run_glm_6b_lora")
    assert lora_config(config) == LoRAConfig(lora_rank=8, lora_alpha=32, lora_dropout=0.1,
                                             target_modules=".*query_key_value*")
    assert checkpoint_callback(config)["prefix"] == "glm-6b-lora"
    assert config["parallel_config"]["model_parallel"] == 1


def test_the_finetune_config_holds_mindformers_training_values():
    config = load_run_config("run_glm_6b_finetune.yaml")
    glm = model_config(config)
    assert (glm.compute_dtype, glm.param_init_type, glm.softmax_compute_type) == ("float16", "float16", "float32")
    assert lora_config(config) is None
    assert config["lr_schedule"]["warmup_steps"] == 2000
    assert config["runner_wrapper"]["scale_sense"]["loss_scale_value"] == 2 ** 32
    assert checkpoint_callback(config)["save_checkpoint_steps"] == 500


def test_eval_and_predict_generate_with_the_model_configs_sampling_keys(tmp_path):
    path = write(tmp_path, "seed: 7\nmodel:\n  model_config:\n    do_sample: True\n    top_k: 0\n    top_p: 0.7\n"
                           "    temperature: 0.95\n    repetition_penalty: 1.1\n"
                           "eval_dataset:\n  max_target_length: 48\npredict:\n  max_new_tokens: 20\n")
    sampling = dict(do_sample=True, top_k=0, top_p=0.7, temperature=0.95, repetition_penalty=1.1, seed=7)
    assert generation_config(load_run_config(path, ["run_mode=eval"])) == GenerationConfig(max_new_tokens=48,
                                                                                           **sampling)
    assert generation_config(load_run_config(path, ["run_mode=predict"])) == GenerationConfig(max_new_tokens=20,
                                                                                              **sampling)


def test_the_shipped_infer_config_generates_greedily_as_mindformers_does():
    config = generation_config(load_run_config("run_glm_6b_infer", ["run_mode=predict"]))
    assert (config.do_sample, config.top_k, config.top_p, config.temperature, config.repetition_penalty) == (
        False, 1, 1.0, 1.0, 1.0)
    assert (config.max_new_tokens, config.seed) == (64, 0)


@pytest.mark.parametrize(("override", "message"), [
    ("model.model_config.temperature=0", r"run\.yaml: model\.model_config: need temperature > 0.*temperature=0,"),
    ("model.model_config.top_p=1.5", r"run\.yaml: model\.model_config: need .*0 < top_p <= 1.*top_p=1\.5"),
    ("model.model_config.top_p=high", r"run\.yaml: model\.model_config\.top_p must be a number, got 'high'"),
    ("model.model_config.top_k=-1", r"run\.yaml: model\.model_config\.top_k must be an integer >= 0, got -1"),
    ("model.model_config.do_sample=sometimes", r"model\.model_config\.do_sample must be true or false"),
    ("predict.max_new_tokens=0", r"run\.yaml: predict\.max_new_tokens must be an integer >= 1, got 0"),
    ("seed=-3", r"run\.yaml: seed must be an integer >= 0, got -3"),
])
def test_bad_generation_values_of_a_predict_run_are_refused_naming_the_key(tmp_path, override, message):
    with pytest.raises(RunConfigError, match=message):
        load_run_config(write(tmp_path, "run_mode: predict\n"), [override])

"""Run configs: MindFormers' YAML layout for ChatGLM-6B runs, read strictly.

A run config is the YAML MindFormers users already have (``run_glm_6b_finetune.yaml`` …): ``runner_config``,
``optimizer``, ``lr_schedule``, ``runner_wrapper``, ``model.model_config``, ``train_dataset`` … . It is read
over :data:`DEFAULTS`, the full tree of keys glm-train knows, and unlike MindFormers a key that is not in that
tree is an error naming the key and the file: a misspelt ``lerning_rate`` would otherwise train with the
default. ``--set key.sub=value`` overrides follow the same rule. Lists (``callbacks``) are matched by their
``type``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from glm_core.config import GLMConfig

SHIPPED = Path(__file__).parent / "configs"
RUN_MODES = ("train", "finetune", "eval", "predict")

# Every key glm-train reads, with its default. Comments say what the key does here.
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "run_mode": "finetune",
    "output_dir": "./output",
    "load_checkpoint": "",  # a model checkpoint (.ckpt) or model folder to start from
    "src_strategy_path_or_dir": "",
    "auto_trans_ckpt": False,
    "only_save_strategy": False,
    "resume_training": False,
    "use_parallel": False,
    "profile": False,
    "trainer": {"type": "CausalLanguageModelingTrainer", "model_name": "glm_6b"},
    "context": {
        "mode": 0,  # 0: graph mode (the only mode a train step runs in), 1: PyNative for eval/predict
        "device_target": "Ascend",
        "device_id": 0,
        "max_device_memory": "30GB",
        "max_call_depth": 10000,
        "save_graphs": False,
        "enable_graph_kernel": False,
        "graph_kernel_flags": "",
    },
    "parallel": {
        "parallel_mode": 1,  # 0 data parallel, 1 semi-auto parallel (Ascend/GPU), 2 auto parallel
        "gradients_mean": False,
        "loss_repeated_mean": True,
        "enable_alltoall": False,
        "full_batch": True,
        "search_mode": "sharding_propagation",
        "enable_parallel_optimizer": False,
        "strategy_ckpt_save_file": "./ckpt_strategy.ckpt",
    },
    "parallel_config": {
        "data_parallel": 1,
        "model_parallel": 1,
        "pipeline_stage": 1,
        "expert_parallel": 1,
        "micro_batch_num": 1,
        "vocab_emb_dp": True,
        "optimizer_shard": False,
        "gradient_aggregation_group": 4,
    },
    "micro_batch_interleave_num": 1,
    "recompute_config": {
        "recompute": False,
        "parallel_optimizer_comm_recompute": False,
        "mp_comm_recompute": True,
        "recompute_slice_activation": False,
    },
    "runner_config": {
        "epochs": 1,
        "batch_size": 8,  # records per micro-batch
        "sink_mode": True,
        "sink_size": 4,  # MindFormers' steps per data sink: checked, no effect (every step is logged here)
        "gradient_accumulation_steps": 1,  # micro-batches per optimizer step
    },
    "runner_wrapper": {
        "type": "MFTrainOneStepCell",
        "scale_sense": {  # dynamic loss scaling; null for none (float32 training)
            "type": "DynamicLossScaleUpdateCell",
            "loss_scale_value": 4294967296,
            "scale_factor": 2,
            "scale_window": 1000,
        },
        "use_clip_grad": True,
        "max_grad_norm": 1.0,
    },
    "optimizer": {"type": "FusedAdamWeightDecay", "beta1": 0.9, "beta2": 0.95, "eps": 1.0e-8, "weight_decay": 0.1},
    "lr_schedule": {
        "type": "polynomial",
        "learning_rate": 5.0e-5,
        "lr_end": 1.0e-6,
        "warmup_steps": 2000,
        "total_steps": -1,  # -1: the run's own number of steps
        "power": 1.0,
    },
    "model": {
        "model_config": {
            "type": "GLMConfig",
            **GLMConfig().to_dict(),
            # MindFormers' total length of a generation; eval and predict runs state their new tokens instead
            # (eval_dataset.max_target_length, predict.max_new_tokens)
            "max_decode_length": 2048,
            "embedding_dropout_prob": 0.0,
            "hidden_size_per_attention_head": None,
            "layernorm_order": "post",
            "use_final_layernorm": True,
            "activation_func": "GELU",
            "is_enhanced_encoder": True,
            "is_sample_acceleration": False,
            "checkpoint_name_or_path": "",
            # generation in eval/predict runs (greedy by default, as MindFormers evaluates), read by
            # generation_config: with do_sample, top_k 1 still takes the most likely token, as in MindFormers
            "do_sample": False,
            "top_k": 1,  # 0 keeps all tokens
            "top_p": 1.0,
            "temperature": 1.0,
            "repetition_penalty": 1.0,
            "pet_config": None,  # LoRA: {pet_type: lora, lora_rank, lora_alpha, lora_dropout, target_modules}
        },
        "arch": {"type": "GLMForPreTraining"},
    },
    "processor": {
        "return_tensors": "ms",
        "type": "GLMProcessor",
        "tokenizer": {
            "type": "ChatGLMTokenizer",
            "vocab_file": "",  # ice_text.model; default: the one beside load_checkpoint
            "bos_token": "<sop>",
            "eos_token": "<eop>",
            "end_token": "</s>",
            "mask_token": "[MASK]",
            "gmask_token": "[gMASK]",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
        },
    },
    "train_dataset": {
        "data_loader": {"type": "MindDataset", "dataset_dir": "", "shuffle": True},
        "input_columns": ["input_ids", "labels"],
        "num_parallel_workers": 8,
        "python_multiprocessing": False,
        "drop_remainder": True,
        "batch_size": 8,
        "repeat": 1,
        "numa_enable": False,
        "prefetch_size": 1,
        "seed": 0,
        "max_source_length": 64,
        "max_target_length": 64,
    },
    "eval_dataset": {
        "data_loader": {"type": "MindDataset", "dataset_dir": "", "shuffle": False},
        "input_columns": ["input_ids", "labels"],
        "num_parallel_workers": 8,
        "python_multiprocessing": False,
        "drop_remainder": False,
        "batch_size": 8,  # prompts generated together
        "repeat": 1,
        "numa_enable": False,
        "prefetch_size": 1,
        "seed": 0,
        "max_source_length": 64,
        "max_target_length": 64,  # new tokens generated per prompt
        "limit": None,  # evaluate only the first N records
    },
    "callbacks": [
        {"type": "MFLossMonitor"},
        {"type": "CheckpointMointor", "prefix": "glm-6b", "save_checkpoint_steps": 500, "keep_checkpoint_max": 2,
         "integrated_save": False, "async_save": False},
        {"type": "ObsMonitor", "keep_last": False},
    ],
    "eval_callbacks": [{"type": "ObsMonitor", "keep_last": False}],
    "metric": {"type": "ADGENMetric", "tokenizer_type": "glm_6b"},
    "predict": {"max_new_tokens": 64, "batch_size": 1},  # predict runs: new tokens and prompts per batch
}
# Sub-trees whose keys are free-form or may be absent
OPEN_KEYS = {("model", "model_config", "pet_config")}
NULLABLE = {("runner_wrapper", "scale_sense"), ("model", "model_config", "pet_config")}
CALLBACK_TYPES = {entry["type"]: entry for entry in DEFAULTS["callbacks"]}
CALLBACK_TYPES["CheckpointMonitor"] = CALLBACK_TYPES["CheckpointMointor"]  # MindFormers' spelling and the right one


class RunConfigError(ValueError):
    """A run config that cannot be used; the message names the file and the key."""


def shipped_configs() -> list[str]:
    return sorted(path.name for path in SHIPPED.glob("glm/*.yaml"))


def resolve_config_path(name: str | os.PathLike) -> Path:
    """A config file by path, or by the name of a shipped one (``run_glm_6b_lora.yaml``, with or without
    ``configs/glm/`` or ``.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    shipped = SHIPPED / "glm" / stem
    if shipped.is_file():
        return shipped
    raise RunConfigError(f"no config file {name}; shipped configs: {', '.join(shipped_configs())}")


def _check_keys(values: Any, defaults: Any, where: tuple[str, ...], source: str) -> None:
    if where in OPEN_KEYS or defaults is None or (values is None and where in NULLABLE):
        return
    if isinstance(defaults, Mapping):
        if not isinstance(values, Mapping):
            raise RunConfigError(f"{source}: {'.'.join(where)} must be a mapping, got {values!r}")
        for key, value in values.items():
            if key not in defaults:
                path = ".".join((*where, str(key)))
                raise RunConfigError(f"{source}: unknown key {path!r} (known under {'.'.join(where) or 'the top'}: "
                                     f"{', '.join(sorted(map(str, defaults)))})")
            _check_keys(value, defaults[key], (*where, key), source)
    elif isinstance(defaults, list) and where and where[-1] in ("callbacks", "eval_callbacks"):
        if not isinstance(values, list):
            raise RunConfigError(f"{source}: {'.'.join(where)} must be a list of {{type: …}} entries")
        for index, entry in enumerate(values):
            kind = entry.get("type") if isinstance(entry, Mapping) else None
            if kind not in CALLBACK_TYPES:
                raise RunConfigError(f"{source}: {'.'.join(where)}[{index}] has unknown type {kind!r} "
                                     f"(known: {', '.join(sorted(CALLBACK_TYPES))})")
            _check_keys(entry, CALLBACK_TYPES[kind], (*where, f"[{index}]"), source)


def _merge(base: dict, update: Mapping) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _coerce_numbers(values: Any, defaults: Any) -> Any:
    """Numbers YAML 1.1 reads as text (``1e-8``, ``3e-4``: PyYAML wants a dot) where a number belongs."""
    if isinstance(values, dict) and isinstance(defaults, Mapping):
        return {key: _coerce_numbers(value, defaults.get(key)) for key, value in values.items()}
    if isinstance(values, str) and isinstance(defaults, float):
        try:
            return float(values)
        except ValueError:
            return values
    return values


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` → (``["a", "b", "c"]``, the value read as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise RunConfigError(f"--set {text!r}: expected key.sub=value")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError as error:
        raise RunConfigError(f"--set {text!r}: the value is not YAML ({error})") from None
    return key.split("."), parsed


def load_run_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The resolved run config: :data:`DEFAULTS`, then the YAML file, then ``--set`` overrides.

    Raises :class:`RunConfigError` naming the file (or ``--set``) and the key for an unknown key, a file that
    is not YAML, or values that cannot form a run (checked by :func:`validate`).
    """
    file = resolve_config_path(path)
    try:
        document = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise RunConfigError(f"{file}: cannot read it as YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(document, Mapping):
        raise RunConfigError(f"{file}: a run config is a YAML mapping, got {type(document).__name__}")
    _check_keys(document, DEFAULTS, (), str(file))
    config = _merge(DEFAULTS, document)
    for text in overrides:
        keys, value = parse_override(text)
        update: Any = value
        for key in reversed(keys):
            update = {key: update}
        _check_keys(update, DEFAULTS, (), f"--set {text}")
        config = _merge(config, update)
    config = _coerce_numbers(config, DEFAULTS)
    validate(config, str(file))
    return config


# What a run config decides about the network even when the weights come with a config.json of their own
RUN_KEYS = ("compute_dtype", "param_init_type", "layernorm_compute_type", "softmax_compute_type",
            "hidden_dropout_rate", "attention_dropout_rate", "use_past")


def model_config(config: Mapping[str, Any], source: str = "run config") -> GLMConfig:
    """The GLMConfig of the run. When ``load_checkpoint`` is a model folder, its ``config.json`` gives the
    network's shape (as Hugging Face's ``from_pretrained`` does) and ``model.model_config`` the dtypes and
    dropout rates (:data:`RUN_KEYS`); for a bare ``.ckpt``, ``model.model_config`` gives everything."""
    values = dict(config["model"]["model_config"])
    start = Path(config["load_checkpoint"]) if config.get("load_checkpoint") else None
    try:
        if start is not None and (start / "config.json").is_file():
            folder = GLMConfig.from_pretrained(start).to_dict()
            return GLMConfig.from_dict({**folder, **{key: values[key] for key in RUN_KEYS if key in values}},
                                       source=f"{start / 'config.json'} with {source}'s model_config")
        return GLMConfig.from_dict(values, source=f"{source}: model.model_config")
    except ValueError as error:
        raise RunConfigError(str(error)) from None


def lora_config(config: Mapping[str, Any], source: str = "run config"):
    """The LoRAConfig of ``model.model_config.pet_config``, or None for full fine-tuning."""
    from glm_core.lora import LoRAConfig

    values = config["model"]["model_config"].get("pet_config")
    if not values:
        return None
    try:
        return LoRAConfig.from_dict(values, source=f"{source}: model.model_config.pet_config")
    except (TypeError, ValueError) as error:
        raise RunConfigError(str(error)) from None


# model.model_config keys that say how eval and predict runs generate: GenerationConfig fields of the same name
SAMPLING_KEYS = ("do_sample", "top_k", "top_p", "temperature", "repetition_penalty")
# the key holding the new tokens per answer, by run mode
NEW_TOKENS_KEYS = {"eval": ("eval_dataset", "max_target_length"), "predict": ("predict", "max_new_tokens")}


def generation_config(config: Mapping[str, Any], source: str = "run config"):
    """The ``glm_core.GenerationConfig`` an eval or predict run generates with: ``model.model_config``'s
    :data:`SAMPLING_KEYS` (MindFormers' names), the run's ``seed``, and as ``max_new_tokens`` the run mode's
    :data:`NEW_TOKENS_KEYS` entry. Raises :class:`RunConfigError` naming the key for a value of the wrong kind
    or out of range."""
    from glm_core.generation_config import GenerationConfig

    values = config["model"]["model_config"]
    section, key = NEW_TOKENS_KEYS.get(config["run_mode"], NEW_TOKENS_KEYS["predict"])
    _positive(config[section][key], f"{section}.{key}", source)
    _positive(config["seed"], "seed", source, allow_zero=True)
    if not isinstance(values["do_sample"], bool):
        raise RunConfigError(f"{source}: model.model_config.do_sample must be true or false, "
                             f"got {values['do_sample']!r}")
    _positive(values["top_k"], "model.model_config.top_k", source, allow_zero=True)
    for name in ("top_p", "temperature", "repetition_penalty"):
        if isinstance(values[name], bool) or not isinstance(values[name], (int, float)):
            raise RunConfigError(f"{source}: model.model_config.{name} must be a number, got {values[name]!r}")
    try:
        return GenerationConfig(max_new_tokens=config[section][key], seed=config["seed"],
                                **{name: values[name] for name in SAMPLING_KEYS})
    except ValueError as error:
        raise RunConfigError(f"{source}: model.model_config: {error}") from None


def checkpoint_callback(config: Mapping[str, Any]) -> dict[str, Any]:
    """The CheckpointMonitor settings (prefix, save_checkpoint_steps, keep_checkpoint_max)."""
    for entry in config["callbacks"]:
        if entry.get("type") in ("CheckpointMointor", "CheckpointMonitor"):
            return {**CALLBACK_TYPES["CheckpointMointor"], **entry}
    return {**CALLBACK_TYPES["CheckpointMointor"], "save_checkpoint_steps": 0}


def _positive(value, name: str, source: str, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise RunConfigError(f"{source}: {name} must be an integer >= {low}, got {value!r}")


def validate(config: Mapping[str, Any], source: str) -> None:
    """Raise :class:`RunConfigError` for values that cannot form a run."""
    if config["run_mode"] not in RUN_MODES:
        raise RunConfigError(f"{source}: run_mode must be one of {', '.join(RUN_MODES)}, got {config['run_mode']!r}")
    runner = config["runner_config"]
    _positive(runner["epochs"], "runner_config.epochs", source)
    _positive(runner["batch_size"], "runner_config.batch_size", source)
    _positive(runner["sink_size"], "runner_config.sink_size", source)
    _positive(runner["gradient_accumulation_steps"], "runner_config.gradient_accumulation_steps", source)
    schedule = config["lr_schedule"]
    if schedule["type"] not in ("polynomial", "constant"):
        raise RunConfigError(f"{source}: lr_schedule.type {schedule['type']!r} is not supported (polynomial, constant)")
    for name in ("learning_rate", "lr_end"):
        if not isinstance(schedule[name], (int, float)) or schedule[name] < 0:
            raise RunConfigError(f"{source}: lr_schedule.{name} must be a number >= 0, got {schedule[name]!r}")
    _positive(schedule["warmup_steps"], "lr_schedule.warmup_steps", source, allow_zero=True)
    optimizer = config["optimizer"]
    if optimizer["type"] not in ("AdamWeightDecay", "FusedAdamWeightDecay", "AdamW"):
        raise RunConfigError(f"{source}: optimizer.type {optimizer['type']!r} is not supported (AdamWeightDecay)")
    callback = checkpoint_callback(config)
    _positive(callback["save_checkpoint_steps"], "CheckpointMonitor.save_checkpoint_steps", source, allow_zero=True)
    _positive(callback["keep_checkpoint_max"], "CheckpointMonitor.keep_checkpoint_max", source)
    model_config(config, source)
    lora_config(config, source)
    if config["run_mode"] in NEW_TOKENS_KEYS:
        generation_config(config, source)


def dump_run_config(config: Mapping[str, Any]) -> str:
    """The resolved config as YAML text (what checkpoints store, and what ``--config`` reads back)."""
    return yaml.safe_dump(dict(config), allow_unicode=True, sort_keys=False)

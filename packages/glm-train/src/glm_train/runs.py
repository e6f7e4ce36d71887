"""The four run modes behind ``glm-train``: ``train``/``finetune`` (:func:`glm_train.trainer.finetune`),
``eval`` (:func:`glm_train.evaluate.evaluate`) and ``predict`` (:func:`glm_train.predict.predict`).

:func:`run` takes a resolved run config; :func:`run_from_arguments` first folds ``run_mindformer.py``'s
flags into it (a flag wins over the YAML, as in MindFormers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from glm_train.run_config import RunConfigError, generation_config, load_run_config

# run_mindformer.py flag → the config key it sets
FLAG_KEYS = {
    "run_mode": "run_mode",
    "load_checkpoint": "load_checkpoint",
    "train_dataset_dir": "train_dataset.data_loader.dataset_dir",
    "eval_dataset_dir": "eval_dataset.data_loader.dataset_dir",
    "output_dir": "output_dir",
    "device_target": "context.device_target",
    "device_id": "context.device_id",
    "use_parallel": "use_parallel",
}


def config_from_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The run config named by ``--config``, with ``--set`` overrides and then the flags applied."""
    overrides = list(args.set)
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={_yaml_scalar(value)}")
    return load_run_config(args.config, overrides)


def _yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"  # a quoted YAML string keeps paths as text


def run_from_arguments(args: argparse.Namespace) -> int:
    config = config_from_arguments(args)
    return run(config, resume=args.resume, predict_data=args.predict_data, progress=not args.no_progress)


def set_context(config: dict[str, Any]) -> None:
    """MindSpore's context from the config: graph mode, the device, its id."""
    import mindspore as ms

    context = config["context"]
    target = context["device_target"]
    ms.set_context(mode=ms.GRAPH_MODE if context["mode"] == 0 else ms.PYNATIVE_MODE)
    ms.set_recursion_limit(context["max_call_depth"])
    if target == "CPU":
        ms.set_device("CPU")
    else:
        ms.set_device(target, context["device_id"])
        ms.runtime.set_memory(max_size=context["max_device_memory"])


def run(config: dict[str, Any], resume=None, predict_data: list[str] | None = None, progress: bool = True) -> int:
    """Run ``config["run_mode"]``; returns the exit status (0)."""
    set_context(config)
    mode = config["run_mode"]
    if mode in ("train", "finetune"):
        from glm_train.distributed import Placement, init_parallel
        from glm_train.trainer import finetune

        placement = init_parallel(config) if config["use_parallel"] else Placement()
        result = finetune(config, resume=resume, rank=placement.rank, ranks=placement.ranks, progress=progress)
        print(f"trained {result.steps} steps; last loss {result.losses[-1]:.4f}" if result.losses
              else f"nothing to train: the run had finished at step {result.steps}")
        for path in (result.checkpoints[-1:] if result.checkpoints else []):
            print(f"checkpoint: {path}")
        print(f"log: {result.log_file}\nloss curve: {result.curve_file}\nmodel folder: {result.model_dir}")
        return 0
    generation = generation_config(config)
    if generation.do_sample and generation.top_k == 1:  # the shipped configs' top_k; a silent greedy run misleads
        print("glm-train: note: do_sample with model.model_config.top_k 1 keeps only the most likely token (as "
              "MindFormers does); set top_k 0 to sample from all tokens", file=sys.stderr)
    model, tokenizer = load_inference_model(config)
    output_dir = Path(config["output_dir"])
    if mode == "eval":
        from glm_train.evaluate import evaluate

        dataset = config["eval_dataset"]
        if not dataset["data_loader"]["dataset_dir"]:
            raise RunConfigError("no evaluation data: give --eval_dataset_dir "
                                 "(or eval_dataset.data_loader.dataset_dir)")
        result = evaluate(model, tokenizer, dataset["data_loader"]["dataset_dir"], output_dir, generation,
                          batch_size=dataset["batch_size"], limit=dataset["limit"], progress=progress)
        print(f"predictions: {result.predictions_file}")
        return 0
    from glm_train.predict import predict, read_prompts

    if not predict_data:
        raise RunConfigError("predict needs --predict_data: prompts, or a text file with one prompt per line")
    prompts = read_prompts(predict_data[0]) if len(predict_data) == 1 and Path(predict_data[0]).is_file() \
        else list(predict_data)
    settings = config["predict"]
    output = output_dir / "predictions.jsonl"
    rows = predict(model, tokenizer, prompts, output, generation, batch_size=settings["batch_size"],
                   progress=progress)
    for row in rows:
        print(f"{row['prompt']}\n→ {row['response']}")
    print(f"written: {output}")
    return 0


def load_inference_model(config: dict[str, Any]):
    """The model and tokenizer an eval or predict run generates with, from ``load_checkpoint``: a model
    folder (its own config.json), or a ``.ckpt`` (a training one too) read with the run config's
    model_config. A LoRA run's checkpoint (adapters) is folded into its base weights, named by
    ``model.model_config.checkpoint_name_or_path``."""
    from glm_core.checkpoint_file import CheckpointReader
    from glm_core.lora import is_adapter_name, load_adapter
    from glm_core.model import GLMForPreTraining
    from glm_tokenizer import ChatGLMTokenizer
    from glm_train.run_config import lora_config, model_config
    from glm_train.trainer import find_checkpoint_file, load_weights, tokenizer_files

    if not config["load_checkpoint"]:
        raise RunConfigError(f"{config['run_mode']} needs model weights: give --load_checkpoint (a model folder "
                             "or a .ckpt)")
    glm_config = model_config(config)
    file = find_checkpoint_file(config["load_checkpoint"])
    with CheckpointReader(file) as reader:
        holds_adapter = any(is_adapter_name(name) for name in reader.tensors)
    model = GLMForPreTraining(glm_config, inference=True)
    if holds_adapter:
        base = config["model"]["model_config"].get("checkpoint_name_or_path")
        if not base:
            raise RunConfigError(f"{file} holds LoRA adapters: give their base weights as "
                                 "--set model.model_config.checkpoint_name_or_path=BASE")
        load_weights(model, base)
        load_adapter(model, file, lora_config(config))
    else:
        load_weights(model, file)
    # load_checkpoint is set, so tokenizer_files names ice_text.model (or raises)
    return model, ChatGLMTokenizer.from_pretrained(tokenizer_files(config)[0].parent)

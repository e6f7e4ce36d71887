"""Fine-tuning runs: the network, the data order, the step loop, checkpoints, logs and the loss curve.

:func:`finetune` is what ``glm-train --run_mode finetune`` (or ``train``) runs:

    run config ─► GLMForTraining (+ LoRA adapters) ─► weights from load_checkpoint
               ─► TrainStep (one compiled graph) ─► for each step: its batch, the step, progress, log
               ─► a checkpoint every save_checkpoint_steps and at the end ─► loss curve, model folder

The data order of an epoch is a permutation drawn from ``(seed, epoch)``; a step takes the next
``batch_size × gradient_accumulation_steps × ranks`` records of it, so a run resumed from a checkpoint
(which stores the epoch and the batches used) sees exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glm_train import checkpoints as ckpt
from glm_train.run_config import RunConfigError, checkpoint_callback, dump_run_config, lora_config, model_config

logger = logging.getLogger(__name__)

LOG_NAME = "train_log.jsonl"
CURVE_NAME = "loss_curve.png"
MODEL_DIR = "model"  # under output_dir: the trained model as a folder glm-core loads (glm chat, eval)


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what to do."""


@dataclass
class TrainResult:
    """What a finished run leaves: its steps, losses and files."""

    steps: int
    losses: list[float] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    model_dir: Path | None = None
    log_file: Path | None = None
    curve_file: Path | None = None
    optimizer_state_bytes: int = 0


# ------------------------------------------------------------------------------------------------ data
def read_train_records(dataset_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``labels`` int32 ``[records, seq]`` of a glm-data train MindRecord (file, split
    name, or a folder holding one)."""
    from glm_data.errors import DataError
    from glm_data.loader import read_records, record_layout, resolve_mindrecord

    path = Path(dataset_dir)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in (".mindrecord", "") and p.is_file()
                       and not p.name.endswith(".db") and not p.name.startswith("."))
        found = [p for p in found if p.name.endswith(".mindrecord") or p.name[-1].isdigit()]
        if not found:
            raise TrainingError(f"train_dataset.data_loader.dataset_dir {path}: no MindRecord file in it")
        path = found[0]
    try:
        data_file = resolve_mindrecord(path)
        layout = record_layout(data_file)
        if layout not in ("train", "mindformers"):
            raise TrainingError(f"{data_file} holds {layout} records; training needs records written with "
                                "glm-data adgen --mode train")
        rows = list(read_records(data_file))
    except DataError as error:
        raise TrainingError(str(error)) from None
    if not rows:
        raise TrainingError(f"{data_file} holds no records")
    input_ids = np.stack([row["input_ids"] for row in rows]).astype(np.int32)
    labels = np.stack([row["labels"] for row in rows]).astype(np.int32)
    if layout == "mindformers":  # MindFormers' labels are shifted already; the loss shifts them itself
        labels = np.concatenate([np.full_like(labels[:, :1], -100), labels[:, :-1]], axis=1)
    return input_ids, labels


class BatchOrder:
    """Which records each step takes: epoch ``e`` is a permutation drawn from ``(seed, e)`` (or the file order
    without shuffling), cut into global batches; rank ``r`` of ``ranks`` takes its slice of each."""

    def __init__(self, records: int, micro_batch: int, micro_batches: int, shuffle: bool, seed: int,
                 rank: int = 0, ranks: int = 1):
        self.records, self.micro_batch, self.micro_batches = records, micro_batch, micro_batches
        self.shuffle, self.seed, self.rank, self.ranks = shuffle, seed, rank, ranks
        self.global_batch = micro_batch * micro_batches * ranks
        self.steps_per_epoch = records // self.global_batch
        if self.steps_per_epoch == 0:
            raise TrainingError(f"the training data holds {records} records, fewer than one step's "
                                f"{self.global_batch} (batch_size {micro_batch} × gradient_accumulation_steps "
                                f"{micro_batches} × {ranks} rank(s)); lower batch_size or add data")

    def indices(self, epoch: int, batch: int) -> np.ndarray:
        """Record indices ``[micro_batches, micro_batch]`` of this rank for batch ``batch`` of ``epoch``."""
        order = (np.random.default_rng([self.seed, epoch]).permutation(self.records) if self.shuffle
                 else np.arange(self.records))
        chosen = order[batch * self.global_batch:(batch + 1) * self.global_batch]
        return chosen.reshape(self.micro_batches, self.ranks, self.micro_batch)[:, self.rank]


# --------------------------------------------------------------------------------------------- network
def find_checkpoint_file(path: str | os.PathLike) -> Path:
    """The ``.ckpt`` a ``load_checkpoint`` names: the file itself, or the one in a model folder (or its rank_0)."""
    from glm_core.auto import ModelNotFoundError, single_checkpoint

    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        try:
            found = single_checkpoint(path)
        except ModelNotFoundError as error:  # more than one
            raise TrainingError(f"load_checkpoint {path}: {error}") from None
        if found is not None:
            return found
    raise TrainingError(f"load_checkpoint {path}: no such checkpoint file or model folder")


def load_weights(cell, path: str | os.PathLike, skip=lambda name: False) -> Path:
    """Fill ``cell``'s parameters (but those ``skip`` names) from a model checkpoint, tensor after tensor:
    ours, MindFormers', or a training one, whose optimizer entries are passed over. A ``lm_head.weight`` the
    file lacks is the tied embedding table. Returns the file read.

    Raises :class:`TrainingError` naming the file and the parameters it lacks or mis-shapes.
    """
    import mindspore as ms

    from glm_core.checkpoint import open_checkpoint
    from glm_train.network import EMBEDDING, LM_HEAD

    file = find_checkpoint_file(path)
    wanted = {p.name: p for p in cell.get_parameters() if not skip(p.name)}
    try:
        with open_checkpoint(file) as reader:
            stored = reader.tensors
            source = {name: EMBEDDING if name == LM_HEAD and name not in stored else name for name in wanted}
            missing = sorted(name for name, entry in source.items() if entry not in stored)
            mismatched = sorted(f"{name} {tuple(stored[entry].shape)} (model {tuple(wanted[name].shape)})"
                                for name, entry in source.items() if entry in stored
                                and tuple(stored[entry].shape) != tuple(wanted[name].shape))
            if missing or mismatched:
                problems = ([f"lacks {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}"] if missing else [])
                problems += [f"mis-shaped {', '.join(mismatched[:4])}"] if mismatched else []
                raise TrainingError(f"{file} does not fit model.model_config: {'; '.join(problems)}")
            for name, parameter in wanted.items():
                data = np.empty(parameter.shape, ms.dtype_to_nptype(parameter.dtype))
                reader.read_into(source[name], data)
                parameter.set_data(ms.Tensor.from_numpy(data))
    except (OSError, ValueError) as error:
        raise TrainingError(f"load_checkpoint {file}: {error}") from None
    return file


@dataclass
class Training:
    """A built run: the network, its compiled step, the schedule, and the settings the loop needs."""

    network: Any
    step: Any
    schedule: Any
    lora: Any
    micro_batch: int
    micro_batches: int


def build_training(config: dict[str, Any], total_steps: int, loss_window: int | None = None) -> Training:
    """The training network (with adapters for a LoRA run), the optimizer and the compiled step.

    ``loss_window``: logits only for that many positions from each row's first label (see
    :class:`glm_train.network.GLMForTraining`). With ``recompute_config.recompute`` each block's activations
    are recomputed in the backward pass instead of kept.
    """
    from glm_core.lora import apply_lora
    from glm_train.network import GLMForTraining
    from glm_train.strategies import shard_network
    from glm_train.train_step import LossScaleSettings, TrainStep, WarmupPolynomialDecay, make_optimizer

    glm_config = model_config(config)
    network = GLMForTraining(glm_config, loss_window)
    if config["recompute_config"]["recompute"]:
        for block in network.transformer.layers:
            block.recompute()
    shard_network(network, config["parallel_config"])  # model-parallel strategies; nothing outside semi-auto
    lora = lora_config(config)
    if config["load_checkpoint"]:
        from glm_core.lora import is_adapter_name

        load_weights(network, config["load_checkpoint"], skip=is_adapter_name)
    elif lora is not None:
        raise RunConfigError("a LoRA run (model.model_config.pet_config) needs base weights: give --load_checkpoint")
    if lora is not None:
        apply_lora(network, lora)
    schedule_settings = config["lr_schedule"]
    steps = schedule_settings["total_steps"] if schedule_settings["total_steps"] > 0 else total_steps
    rate = schedule_settings["learning_rate"]
    # constant: the polynomial schedule with nothing to decay (ends where it starts, power 1)
    lr_end, power = ((rate, 1.0) if schedule_settings["type"] == "constant"
                     else (schedule_settings["lr_end"], schedule_settings["power"]))
    schedule = WarmupPolynomialDecay(rate, lr_end, schedule_settings["warmup_steps"], steps, power)
    optimizer_settings = config["optimizer"]
    optimizer = make_optimizer(network.trainable_params(), schedule, optimizer_settings["beta1"],
                               optimizer_settings["beta2"], optimizer_settings["eps"],
                               optimizer_settings["weight_decay"])
    wrapper = config["runner_wrapper"]
    scale = wrapper.get("scale_sense")
    loss_scale = (LossScaleSettings(float(scale["loss_scale_value"]), float(scale["scale_factor"]),
                                    int(scale["scale_window"])) if scale else None)
    micro_batches = config["runner_config"]["gradient_accumulation_steps"]
    step = TrainStep(network, optimizer, micro_batches,
                     wrapper["max_grad_norm"] if wrapper["use_clip_grad"] else None, loss_scale)
    step.set_train(True)  # dropout on (LoRA's adapter dropout; the configs' other rates are 0)
    return Training(network, step, schedule, lora, config["runner_config"]["batch_size"], micro_batches)


def saved_tensors(training: Training) -> dict[str, Any]:
    """What a checkpoint holds: trained weights (with the tied head), optimizer state and the loss scale."""
    from glm_train.network import EMBEDDING, LM_HEAD

    tensors = {}
    for parameter in training.step.get_parameters():
        if training.lora is not None and not parameter.requires_grad and ckpt.is_model_weight(parameter.name):
            continue  # a LoRA checkpoint holds the adapters; the frozen base is the run's load_checkpoint
        tensors[parameter.name] = parameter
    if EMBEDDING in tensors and training.lora is None:
        tensors[LM_HEAD] = tensors[EMBEDDING]
    return tensors


def optimizer_state_bytes(training: Training) -> int:
    return sum(p.asnumpy().nbytes for p in training.step.optimizer.get_parameters()
               if p.name.startswith(("adam_m.", "adam_v.")))


def restore(training: Training, tensors: dict[str, Any], source: Path) -> None:
    """Put a checkpoint's tensors back into the step (weights, optimizer state, loss scale)."""
    import mindspore as ms

    from glm_train.network import LM_HEAD

    parameters = {p.name: p for p in training.step.get_parameters()}
    wanted = saved_tensors(training)
    missing = sorted(set(wanted) - set(tensors) - {LM_HEAD})
    if missing:
        raise ckpt.TrainingCheckpointError(f"{source} does not fit this run: it lacks "
                                           f"{', '.join(missing[:6])}{' …' if len(missing) > 6 else ''}")
    for name in wanted:
        if name == LM_HEAD:
            continue
        value = tensors[name]
        parameters[name].set_data(ms.Tensor(value.asnumpy() if hasattr(value, "asnumpy") else value,
                                            dtype=parameters[name].dtype))


# -------------------------------------------------------------------------------------------- the loop
def finetune(config: dict[str, Any], resume: str | bool | None = None, rank: int = 0, ranks: int = 1,
             progress: bool = True) -> TrainResult:
    """Run a fine-tuning (or training) run as ``config`` says; see the module docstring.

    ``resume``: True for the newest checkpoint of this run's output folder, or a checkpoint's path. A fresh
    run refuses an output folder that already holds checkpoints of the same prefix, so runs never mix.
    Raises :class:`TrainingError`, :class:`RunConfigError` or
    :class:`~glm_train.checkpoints.TrainingCheckpointError` with a message naming what to fix.
    """
    import mindspore as ms

    from glm_train.distributed import data_slice
    from glm_train.network import label_span

    ms.set_seed(config["seed"])
    dataset = config["train_dataset"]
    if not dataset["data_loader"]["dataset_dir"]:
        raise RunConfigError("no training data: give --train_dataset_dir (or train_dataset.data_loader.dataset_dir)")
    input_ids, labels = read_train_records(dataset["data_loader"]["dataset_dir"])
    runner = config["runner_config"]
    micro_batch, data_rank, data_ranks = data_slice(rank, ranks, runner["batch_size"],
                                                    config["parallel_config"]["data_parallel"])
    order = BatchOrder(len(input_ids), micro_batch, runner["gradient_accumulation_steps"],
                       dataset["data_loader"]["shuffle"], config["seed"], data_rank, data_ranks)
    total_steps = order.steps_per_epoch * runner["epochs"]
    callback = checkpoint_callback(config)
    directory = ckpt.checkpoint_dir(config["output_dir"], rank)
    state, resume_from = ckpt.TrainingState(), None
    if resume:
        resume_from = (ckpt.latest_checkpoint(directory, callback["prefix"]) if resume is True else Path(resume))
        if resume_from is None:
            raise ckpt.TrainingCheckpointError(f"--resume: no checkpoint of prefix {callback['prefix']!r} in "
                                               f"{directory}")
    elif ckpt.list_checkpoints(directory, callback["prefix"]):
        raise TrainingError(f"{directory} already holds checkpoints of prefix {callback['prefix']!r} from an "
                            "earlier run: continue it with --resume, or choose another --output_dir")
    training = build_training(config, total_steps, label_span(labels))
    if resume_from is not None:
        tensors, state, _, _ = ckpt.load_training_checkpoint(resume_from)
        restore(training, tensors, resume_from)
        logger.info("resuming from %s at step %d", resume_from, state.step)
    run_config_text = dump_run_config(config)
    pet = None if training.lora is None else training.lora.to_dict()
    log_file = directory / LOG_NAME
    directory.mkdir(parents=True, exist_ok=True)
    history = _truncate_log(log_file, state.step)
    result = TrainResult(steps=state.step, log_file=log_file, optimizer_state_bytes=optimizer_state_bytes(training))
    if state.step < total_steps:
        from glm_train.train_step import compile_step

        first = order.indices(state.epoch, state.batches_done)
        compile_step(training.step, input_ids[first], labels[first])
    bar = _progress_bar(total_steps, state.step, progress)
    started = time.perf_counter()
    try:
        with open(log_file, "a", encoding="utf-8") as log:
            while state.step < total_steps:
                indices = order.indices(state.epoch, state.batches_done)
                record = run_step(training, state, order, input_ids[indices], labels[indices])
                log.write(json.dumps(record) + "\n")
                log.flush()
                history.append(record)
                result.losses.append(record["loss"])
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['learning_rate']:.2e}",
                                tok_s=f"{record['tokens_per_second']:.0f}", refresh=False)
                bar.update(1)
                every = callback["save_checkpoint_steps"]
                if (every and state.step % every == 0) or state.step == total_steps:
                    path = directory / ckpt.checkpoint_name(callback["prefix"], rank, state.epoch, state.step)
                    ckpt.save_training_checkpoint(path, saved_tensors(training), state, run_config_text, pet)
                    ckpt.prune_checkpoints(directory, callback["prefix"], callback["keep_checkpoint_max"])
                    result.checkpoints.append(path)
    finally:
        bar.close()
    result.steps = state.step
    logger.info("trained %d steps in %.1fs", len(result.losses), time.perf_counter() - started)
    result.curve_file = write_loss_curve(history, directory / CURVE_NAME)
    if rank == 0:
        result.model_dir = export_model(training, config, Path(config["output_dir"]) / MODEL_DIR)
    return result


def run_step(training: Training, state: ckpt.TrainingState, order: BatchOrder, input_ids: np.ndarray,
             labels: np.ndarray) -> dict[str, Any]:
    """One optimizer step on ``[micro_batches, batch, seq]`` records; advances ``state``; returns the log record."""
    import mindspore as ms

    start = time.perf_counter()
    loss, overflow, scale, grad_norm = training.step(ms.Tensor(input_ids), ms.Tensor(labels))
    loss_value = float(loss.asnumpy())
    seconds = time.perf_counter() - start
    learning_rate = training.schedule.at(state.step)
    state.step += 1
    state.batches_done += 1
    if state.batches_done == order.steps_per_epoch:
        state.epoch, state.batches_done = state.epoch + 1, 0
    tokens = order.global_batch * input_ids.shape[-1]
    return {"step": state.step, "epoch": state.epoch, "loss": loss_value, "learning_rate": learning_rate,
            "loss_scale": float(scale.asnumpy()), "grad_norm": float(grad_norm.asnumpy()),
            "overflow": bool(overflow.asnumpy()), "step_seconds": round(seconds, 4),
            "tokens_per_second": round(tokens / seconds, 1)}


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="training", unit="step", disable=not enabled, dynamic_ncols=True)


def _truncate_log(log_file: Path, step: int) -> list[dict]:
    """Keep the log's records up to ``step`` (a resumed run rewrites what followed its checkpoint)."""
    kept = []
    if log_file.is_file():
        for line in log_file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if record.get("step", math.inf) <= step:
                kept.append(record)
    temporary = log_file.with_name(f".{log_file.name}.partial")
    temporary.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")
    os.replace(temporary, log_file)
    return kept


def write_loss_curve(history: list[dict], path: Path) -> Path | None:
    """The loss (and learning rate) against the step, as a PNG; None without records."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    steps = [record["step"] for record in history]
    figure, loss_axis = pyplot.subplots(figsize=(7, 4), dpi=100)
    loss_axis.plot(steps, [record["loss"] for record in history], color="tab:blue", linewidth=1.2)
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss", color="tab:blue")
    lr_axis = loss_axis.twinx()
    lr_axis.plot(steps, [record["learning_rate"] for record in history], color="tab:orange", linewidth=0.8)
    lr_axis.set_ylabel("learning rate", color="tab:orange")
    loss_axis.set_title(f"training loss ({len(steps)} steps, last {history[-1]['loss']:.4f})")
    figure.tight_layout()
    temporary = path.with_name(f".{path.stem}.partial.png")
    figure.savefig(temporary, format="png")
    pyplot.close(figure)
    os.replace(temporary, path)
    return path


def trained_state(training: Training) -> dict[str, np.ndarray]:
    """The trained model's weights by checkpoint name, adapters merged, ``lm_head.weight`` included."""
    from glm_core.lora import is_adapter_name, merge_lora
    from glm_train.network import trainable_state

    state = trainable_state(training.network)
    if training.lora is None:
        return state
    adapter = {name: value for name, value in state.items() if is_adapter_name(name)}
    base = {name: value for name, value in state.items() if not is_adapter_name(name)}
    return merge_lora(base, adapter, training.lora)


def export_model(training: Training, config: dict[str, Any], directory: Path) -> Path:
    """Write the trained model as a folder glm-core loads: config.json, model.ckpt and the tokenizer."""
    import shutil
    import tempfile

    from glm_core.checkpoint import save_checkpoint
    from glm_core.names import CHECKPOINT_NAME

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model_config(config).save_pretrained(staging)
        save_checkpoint(trained_state(training), staging / CHECKPOINT_NAME)
        for source in tokenizer_files(config):
            shutil.copy(source, staging / source.name)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return directory


def tokenizer_files(config: dict[str, Any]) -> list[Path]:
    """``ice_text.model`` (and ``tokenizer_config.json`` where there is one): the config's vocab_file, else
    those beside load_checkpoint."""
    vocab = config["processor"]["tokenizer"]["vocab_file"]
    if vocab:
        vocab_path = Path(vocab)
    elif config["load_checkpoint"]:
        start = Path(config["load_checkpoint"])
        vocab_path = (start if start.is_dir() else start.parent) / "ice_text.model"
    else:
        return []
    if not vocab_path.is_file():
        raise TrainingError(f"processor.tokenizer.vocab_file: no tokenizer at {vocab_path}")
    extra = vocab_path.with_name("tokenizer_config.json")
    return [vocab_path] + ([extra] if extra.is_file() else [])

"""Distributed runs (``use_parallel: true``): MindSpore's communication and parallel context, and the data-parallel
loss and gradient reduction of the train step.

Each process is started by msrun (``glm-train launch``) or by ``scripts/run_distribute.sh`` with a rank table,
and calls :func:`init_parallel` before building its network:

* data parallel (``parallel.parallel_mode: 0``, and on CPU, where MindSpore refuses the others): every rank
  holds the whole model and trains on its slice of each global batch; :class:`DataParallelReduction` makes the
  step's loss and gradients those of the global batch.
* semi-auto parallel (``parallel_mode: 1``, Ascend/GPU): MindSpore splits the network's operators as
  :mod:`glm_train.strategies` says (Megatron's model parallel), ``full_batch`` as MindFormers sets it, and
  every rank writes the strategy file ``merge`` needs to ``<output_dir>/checkpoint/strategy/``.

The data-parallel loss. The network's loss is the mean over a micro-batch's label tokens. Ranks hold
different numbers of label tokens, so the mean of the ranks' means is not the global batch's mean. Each rank
instead weighs its loss (and, through the gradient's sensitivity, its gradients) by its share of the global
batch's label tokens, ``local tokens / global tokens`` (the token counts are all-reduced first: one scalar);
the summed losses and gradients are then exactly the global mean's, whatever the split. With
``parallel.gradients_mean`` MindSpore's reducer divides by the number of ranks, so the share is multiplied by
it first: the result is the same either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mindspore as ms
from mindspore import nn, ops

from glm_train.network import IGNORE_INDEX
from glm_train.run_config import RunConfigError

logger = logging.getLogger(__name__)

DATA_PARALLEL, SEMI_AUTO_PARALLEL, AUTO_PARALLEL = 0, 1, 2


@dataclass(frozen=True)
class Placement:
    """This process's rank among the run's ``ranks``."""

    rank: int = 0
    ranks: int = 1


def init_parallel(config: dict[str, Any]) -> Placement:
    """Join the run's processes (``mindspore.communication.init``) and set MindSpore's parallel context from
    ``config["parallel"]`` and ``config["parallel_config"]``; returns this process's :class:`Placement`.

    Raises :class:`RunConfigError` for a layout MindSpore cannot run here: model or pipeline parallel on CPU,
    pipeline stages (not supported by glm-train), or data × model parallel that does not match the ranks.
    """
    from mindspore.communication import get_group_size, get_rank, init

    parallel, layout = config["parallel"], config["parallel_config"]
    target = config["context"]["device_target"]
    model_parallel, stages = layout["model_parallel"], layout["pipeline_stage"]
    if stages != 1:
        raise RunConfigError(f"parallel_config.pipeline_stage {stages}: glm-train runs no pipeline stages; use "
                             "data_parallel × model_parallel")
    if target == "CPU" and model_parallel != 1:
        raise RunConfigError(f"parallel_config.model_parallel {model_parallel}: MindSpore runs model parallel "
                             "on Ascend and GPU only; on CPU use data parallel (model_parallel: 1)")
    init()
    rank, ranks = get_rank(), get_group_size()
    mode = parallel["parallel_mode"]
    if mode != DATA_PARALLEL and (target == "CPU" or model_parallel == 1):
        # semi-auto parallel without a model split is data parallel; CPU has nothing else
        logger.info("parallel_mode %s with model_parallel 1 on %s runs as data parallel", mode, target)
        mode = DATA_PARALLEL
    if mode == DATA_PARALLEL:
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, device_num=ranks,
                                     gradients_mean=bool(parallel["gradients_mean"]))
        return Placement(rank, ranks)
    if layout["data_parallel"] * model_parallel != ranks:
        raise RunConfigError(f"parallel_config.data_parallel {layout['data_parallel']} × model_parallel "
                             f"{model_parallel} must equal the run's {ranks} processes")
    strategy_dir = Path(config["output_dir"]) / "checkpoint" / "strategy"
    strategy_dir.mkdir(parents=True, exist_ok=True)
    semi_auto = ms.ParallelMode.SEMI_AUTO_PARALLEL if mode == SEMI_AUTO_PARALLEL else ms.ParallelMode.AUTO_PARALLEL
    ms.set_auto_parallel_context(
        parallel_mode=semi_auto,
        device_num=ranks, gradients_mean=bool(parallel["gradients_mean"]), full_batch=bool(parallel["full_batch"]),
        search_mode=parallel["search_mode"], loss_repeated_mean=bool(parallel["loss_repeated_mean"]),
        enable_parallel_optimizer=bool(parallel["enable_parallel_optimizer"] or layout["optimizer_shard"]),
        strategy_ckpt_config={"save_file": str(strategy_dir / f"ckpt_strategy_rank_{rank}.ckpt")})
    return Placement(rank, ranks)


def data_parallel_ranks() -> int:
    """The number of ranks a data-parallel step reduces over; 1 outside data parallel."""
    if ms.get_auto_parallel_context("parallel_mode") != ms.ParallelMode.DATA_PARALLEL:
        return 1
    from mindspore.communication import get_group_size

    return get_group_size()


class DataParallelReduction(nn.Cell):
    """The data-parallel parts of a train step (see the module docstring): :meth:`share` weighs a rank's
    micro-batch, :meth:`construct` sums the weighted losses and gradients over the ranks."""

    def __init__(self, weights, ranks: int):
        super().__init__()
        self.mean = bool(ms.get_auto_parallel_context("gradients_mean"))
        self.ranks = float(ranks)
        self.sum_over_ranks = ops.AllReduce(ops.ReduceOp.SUM)
        self.gradient_reducer = nn.DistributedGradReducer(weights, mean=self.mean, degree=ranks)

    def share(self, labels):
        """This rank's weight for a micro-batch's loss: its share of the global micro-batch's label tokens
        (times the ranks when the reducer averages). ``labels``: int32 ``[batch, seq]``."""
        local = (labels[:, 1:] != IGNORE_INDEX).astype(ms.float32).sum()
        total = ops.maximum(self.sum_over_ranks(local), 1.0)
        weight = local / total
        return weight * self.ranks if self.mean else weight

    def construct(self, loss, grads):
        """The global loss (``loss``: this rank's weighted loss) and the reduced gradients."""
        total = self.sum_over_ranks(loss)
        return (total / self.ranks if self.mean else total), self.gradient_reducer(grads)


def data_slice(rank: int, ranks: int, batch_size: int, data_parallel: int) -> tuple[int, int, int]:
    """``(records per micro-batch, data rank, data ranks)`` this process reads: its own ``batch_size``
    records of each global micro-batch, or under semi-auto's ``full_batch`` the whole global micro-batch
    (``batch_size × data_parallel``), which MindSpore divides among the ranks itself."""
    full_batch = (ms.get_auto_parallel_context("parallel_mode") in (ms.ParallelMode.SEMI_AUTO_PARALLEL,
                                                                   ms.ParallelMode.AUTO_PARALLEL)
                  and ms.get_auto_parallel_context("full_batch"))
    return (batch_size * data_parallel, 0, 1) if full_batch else (batch_size, rank, ranks)

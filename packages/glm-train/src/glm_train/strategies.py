"""Model-parallel ``shard`` strategies for semi-auto parallel runs (Ascend/GPU): Megatron's split of GLM.

    query_key_value, dense_h_to_4h   split by output rows    x (dp, 1) · Wᵀ, W (mp, 1)  → y (dp, mp)
    dense, dense_4h_to_h             split by input columns  x (dp, mp) · Wᵀ, W (1, mp)  → partial sums, all-reduced
    the tied head (embedding table)  split by vocabulary     x (dp, 1) · tableᵀ, table (mp, 1)
    layernorms                       data parallel           x (dp, 1, 1)

GLM's fused QKV is interleaved per head (``[heads, (q, k, v), head_dim]``), so a split of its output rows
into ``mp`` contiguous parts gives each rank whole heads with their q, k and v. :func:`shard_network` walks
the cells and calls ``.shard()`` on their primitives; the model code stays free of parallel flags. Outside
semi-auto (or auto) parallel it does nothing, so CPU and single-device runs never see a strategy.

Operators the model calls as functions (the embedding gather, attention's batch matmuls, softmax and the
element-wise ops) take MindSpore's default strategy, and MindSpore inserts the redistributions they need:
correct, not the fastest layout. None of this can be compiled on CPU (MindSpore refuses semi-auto parallel
there): see the package README for what was verified where.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mindspore as ms
from mindspore import nn

from glm_core.model import LayerNorm, Linear
from glm_train.run_config import RunConfigError

COLUMN_SPLIT = ("query_key_value", "dense_h_to_4h")  # split by output rows of W [out, in]
ROW_SPLIT = ("dense", "dense_4h_to_h")  # split by input columns


def semi_auto_parallel() -> bool:
    return ms.get_auto_parallel_context("parallel_mode") in (ms.ParallelMode.SEMI_AUTO_PARALLEL,
                                                             ms.ParallelMode.AUTO_PARALLEL)


def check_divisible(config, model_parallel: int) -> None:
    """Raise :class:`RunConfigError` when a split dimension of the model does not divide by ``model_parallel``."""
    for name, size in (("num_heads", config.num_heads), ("inner_hidden_size", config.inner_hidden_size),
                       ("vocab_size", config.vocab_size)):
        if size % model_parallel:
            raise RunConfigError(f"model.model_config.{name} {size} does not divide by parallel_config."
                                 f"model_parallel {model_parallel}")


def linear_strategy(name: str, data_parallel: int, model_parallel: int) -> tuple | None:
    """The MatMul strategy of the Linear cell called ``name`` (its last path part), None if not split."""
    if name in COLUMN_SPLIT:
        return ((data_parallel, 1), (model_parallel, 1))
    if name in ROW_SPLIT:
        return ((data_parallel, model_parallel), (1, model_parallel))
    return None


def shard_network(network: nn.Cell, parallel_config: Mapping[str, Any]) -> int:
    """Set the strategies above on ``network``'s primitives when semi-auto parallel is on; returns how many
    primitives were sharded (0 outside semi-auto parallel, where nothing is touched)."""
    if not semi_auto_parallel():
        return 0
    data_parallel, model_parallel = parallel_config["data_parallel"], parallel_config["model_parallel"]
    check_divisible(network.config, model_parallel)
    sharded = 0
    for path, cell in network.cells_and_names():
        leaf = path.rsplit(".", 1)[-1]
        if isinstance(cell, Linear) and (strategy := linear_strategy(leaf, data_parallel, model_parallel)):
            cell.matmul.shard(strategy)
            sharded += 1
        elif isinstance(cell, LayerNorm):
            cell.norm.shard(((data_parallel, 1, 1), (1,), (1,)))
            sharded += 1
    head = getattr(network, "head", None)  # the training network's tied head: hidden · tableᵀ
    if head is not None:
        head.shard(((data_parallel, 1), (model_parallel, 1)))
        sharded += 1
    return sharded

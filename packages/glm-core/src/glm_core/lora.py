"""LoRA: low-rank adapters on the Linears of a GLM network, as MindFormers' ``pet_config`` (mindpet) adds them.

A Linear whose cell name matches ``target_modules`` becomes a :class:`LoRALinear`:

    y = x Wᵀ + b + B(A(dropout(x))) · alpha / rank,    A [rank, in] He-uniform,  B [out, rank] zeros

so a fresh adapter leaves the network's output unchanged. The base weights are frozen (no gradient, no
optimizer state); the adapter's parameters carry mindpet's names (``….query_key_value.mindpet_delta_lora_a``
and ``…_b``), so adapter checkpoints read the same in MindFormers. :func:`merge_lora` folds an adapter into
the base weights for inference, where the merged Linears run glm-core's CPU kernels like any other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

ADAPTER_A, ADAPTER_B = "mindpet_delta_lora_a", "mindpet_delta_lora_b"


@dataclass(frozen=True)
class LoRAConfig:
    """The ``pet_config`` block of a MindFormers LoRA run (``pet_type: lora``)."""

    lora_rank: int = 8
    lora_alpha: float = 32.0
    lora_dropout: float = 0.1
    target_modules: str = ".*query_key_value*"  # a regular expression matched at the start of cell names

    def __post_init__(self):
        if not isinstance(self.lora_rank, int) or self.lora_rank < 1:
            raise ValueError(f"pet_config.lora_rank must be a positive integer, got {self.lora_rank!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"pet_config.lora_dropout must lie in [0, 1), got {self.lora_dropout!r}")
        try:
            re.compile(self.target_modules)
        except re.error as error:
            raise ValueError(f"pet_config.target_modules {self.target_modules!r} is not a regular expression "
                             f"({error})") from None

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.lora_rank

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "pet_config") -> LoRAConfig:
        """Read a ``pet_config`` mapping; ``pet_type`` must be ``lora``, other keys must be known."""
        values = dict(values)
        pet_type = values.pop("pet_type", "lora")
        if pet_type != "lora":
            raise ValueError(f"{source}: pet_type {pet_type!r} is not supported (only 'lora')")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; "
                             f"known: pet_type, {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {"pet_type": "lora", "lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha,
                "lora_dropout": self.lora_dropout, "target_modules": self.target_modules}

    def targets(self, linear_names) -> list[str]:
        """The names among ``linear_names`` that get an adapter (mindpet's ``re.match``)."""
        return [name for name in linear_names if re.match(self.target_modules, name)]


def _lora_linear_class():
    """:class:`LoRALinear`, defined on first use so that importing this module does not load MindSpore."""
    from mindspore import Parameter, nn, ops
    from mindspore.common.initializer import HeUniform, initializer

    from glm_core.model import Linear

    class LoRALinear(Linear):
        """A training :class:`glm_core.model.Linear` plus a low-rank adapter; see the module docstring."""

        def __init__(self, base: Linear, config: LoRAConfig):
            in_features, out_features = base.weight.shape[1], base.weight.shape[0]
            super().__init__(in_features, out_features, base.bias is not None, False, base.weight.dtype,
                             base.compute_dtype, base.gelu, base.residual_scale,
                             None if base.layer_norm is None else base.kernel_norm_epsilon.asnumpy()[0].item())
            # The base Linear's parameters themselves (names, data), frozen.
            self.weight = base.weight
            self.bias = base.bias
            self.weight.requires_grad = False
            if self.bias is not None:
                self.bias.requires_grad = False
            dtype = base.weight.dtype
            # Attribute names are the parameters' names: mindpet's.
            self.mindpet_delta_lora_a = Parameter(
                initializer(HeUniform(negative_slope=math.sqrt(5)), (config.lora_rank, in_features), dtype),
                name=ADAPTER_A)
            self.mindpet_delta_lora_b = Parameter(initializer("zeros", (out_features, config.lora_rank), dtype),
                                                  name=ADAPTER_B)
            self.lora_dropout = nn.Dropout(p=config.lora_dropout) if config.lora_dropout else None
            self.scaling = config.scaling
            self.lora_matmul = ops.MatMul(transpose_b=True)

        def project(self, x):
            """``x Wᵀ + b + B(A(dropout(x))) · scaling`` for rows ``x [N, in]``."""
            adapter_input = self.lora_dropout(x) if self.lora_dropout is not None else x
            low_rank = self.lora_matmul(adapter_input, self.mindpet_delta_lora_a.astype(self.compute_dtype))
            update = self.lora_matmul(low_rank, self.mindpet_delta_lora_b.astype(self.compute_dtype))
            return Linear.project(self, x) + update * self.scaling

    return LoRALinear


def apply_lora(network, config: LoRAConfig) -> list[str]:
    """Give every Linear of ``network`` whose cell name matches ``config.target_modules`` an adapter, in place,
    and freeze every other parameter. Returns the names of the Linears that got one.

    Raises ``ValueError`` when no Linear matches (a misspelt ``target_modules`` would otherwise train nothing).
    Call it before the network is compiled; the network must be a training one (no CPU kernels).
    """
    from glm_core.model import Linear

    lora_linear = _lora_linear_class()
    linears = {name: cell for name, cell in network.cells_and_names() if isinstance(cell, Linear)}
    targets = config.targets(linears)
    if not targets:
        raise ValueError(f"pet_config.target_modules {config.target_modules!r} matches no Linear of the network "
                         f"(names look like {next(iter(linears), 'none')!r})")
    for parameter in network.get_parameters():
        parameter.requires_grad = False
    cells = dict(network.cells_and_names())
    for name in targets:
        base = linears[name]
        if base.uses_kernel:
            raise ValueError(f"{name} runs glm-core's inference kernel: LoRA adapters train on a training network")
        parent_name, _, attribute = name.rpartition(".")
        setattr(cells[parent_name], attribute, lora_linear(base, config))
    # A replaced child keeps its own parameter names (weight, bias, the adapters); give them their full ones.
    for name in targets:
        parent_name, _, attribute = name.rpartition(".")
        child = getattr(cells[parent_name], attribute)
        for leaf in ("weight", "bias", ADAPTER_A, ADAPTER_B):
            parameter = getattr(child, leaf)
            if parameter is not None:
                parameter.name = f"{name}.{parameter.name.rpartition('.')[2]}"
    return targets


def is_adapter_name(name: str) -> bool:
    return name.endswith((ADAPTER_A, ADAPTER_B))


def merge_lora(base: Mapping[str, np.ndarray], adapter: Mapping[str, np.ndarray], config: LoRAConfig
               ) -> dict[str, np.ndarray]:
    """Fold adapters into base weights: ``W + B A · alpha / rank`` for each ``<linear>.weight`` that has
    ``<linear>.mindpet_delta_lora_a``/``_b`` in ``adapter``. Returns a new state (checkpoint names), in the
    base weights' dtypes, the product taken in float64.

    Raises ``ValueError`` for an adapter without its base weight, a half adapter, or mismatched shapes.
    """
    merged = dict(base)
    linears = sorted({name.rpartition(".")[0] for name in adapter if is_adapter_name(name)})
    stray = sorted(name for name in adapter if not is_adapter_name(name))
    if stray:
        raise ValueError(f"adapter holds non-adapter tensors: {', '.join(stray[:5])}")
    if not linears:
        raise ValueError("adapter holds no LoRA tensors (names ending in mindpet_delta_lora_a / _b)")
    for linear in linears:
        a_name, b_name, weight_name = f"{linear}.{ADAPTER_A}", f"{linear}.{ADAPTER_B}", f"{linear}.weight"
        if a_name not in adapter or b_name not in adapter:
            raise ValueError(f"adapter for {linear} lacks {ADAPTER_A if a_name not in adapter else ADAPTER_B}")
        if weight_name not in base:
            raise ValueError(f"adapter for {linear}: the base checkpoint has no {weight_name}")
        weight, lora_a, lora_b = base[weight_name], adapter[a_name], adapter[b_name]
        if lora_a.shape != (config.lora_rank, weight.shape[1]) or lora_b.shape != (weight.shape[0], config.lora_rank):
            raise ValueError(f"adapter for {linear}: A {lora_a.shape} and B {lora_b.shape} do not fit weight "
                             f"{weight.shape} at rank {config.lora_rank}")
        update = lora_b.astype(np.float64) @ lora_a.astype(np.float64) * config.scaling
        merged[weight_name] = (weight.astype(np.float64) + update).astype(weight.dtype)
    return merged

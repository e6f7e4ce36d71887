"""LoRA: low-rank adapters on the Linears of a GLM network, as MindFormers' ``pet_config`` (mindpet) adds them.

A Linear whose cell name matches ``target_modules`` becomes a :class:`LoRALinear`:

    y = x Wᵀ + b + B(A(dropout(x))) · alpha / rank,    A [rank, in] He-uniform,  B [out, rank] zeros

so a fresh adapter leaves the network's output unchanged. The base weights are frozen (no gradient, no
optimizer state); the adapter's parameters carry mindpet's names (``….query_key_value.mindpet_delta_lora_a``
and ``…_b``), so adapter checkpoints read the same in MindFormers.

For inference an adapter is folded into the base weights, ``W + B A · alpha / rank``, after which the merged
Linears run glm-core's CPU kernels like any other: :func:`merge_lora` on weights in memory,
:func:`load_adapter` on a loaded model (``AutoModel.from_pretrained(..., adapter=PATH)``), and
``glm-train merge-lora`` on checkpoint files. :func:`read_adapter` reads an adapter checkpoint with the
``pet_config`` that glm-train stores in it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
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

    from glm_core.model import Linear, skip_random_init

    class LoRALinear(Linear):
        """A training :class:`glm_core.model.Linear` plus a low-rank adapter; see the module docstring."""

        def __init__(self, base: Linear, config: LoRAConfig):
            in_features, out_features = base.weight.shape[1], base.weight.shape[0]
            with skip_random_init():  # its own weight is replaced at once: zeros cost no memory until written
                super().__init__(in_features, out_features, bias=base.bias is not None, param_dtype=base.weight.dtype,
                                 compute_dtype=base.compute_dtype)
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
    Call it before the network is compiled.
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


def adapter_tensors(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """The LoRA weights among ``tensors`` (a checkpoint's entries): the names ending in mindpet's
    ``mindpet_delta_lora_a``/``_b``, less the optimizer state kept under their names (``adam_m.<adapter>``,
    ``adam_v.<adapter>``: a prefix before another adapter's name) and less everything else."""
    named = {name for name in tensors if is_adapter_name(name)}
    state = {name for name in named
             if any(name[index + 1:] in named for index, character in enumerate(name) if character == ".")}
    return {name: tensors[name] for name in tensors if name in named - state}


def adapter_pairs(adapter: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{linear name: (A, B)}`` from the adapter tensors among ``adapter`` (see :func:`adapter_tensors`).

    Raises ``ValueError`` when there are none, or when a Linear has A without B or B without A.
    """
    tensors = adapter_tensors(adapter)
    if not tensors:
        raise ValueError("holds no LoRA adapter (no tensor named <linear>.mindpet_delta_lora_a / _b)")
    pairs = {}
    for linear in sorted({name.rpartition(".")[0] for name in tensors}):
        a_name, b_name = f"{linear}.{ADAPTER_A}", f"{linear}.{ADAPTER_B}"
        if a_name not in tensors or b_name not in tensors:
            raise ValueError(f"the adapter of {linear} lacks {ADAPTER_A if a_name not in tensors else ADAPTER_B}")
        pairs[linear] = (np.asarray(tensors[a_name]), np.asarray(tensors[b_name]))
    return pairs


def check_adapter_fits(weight_shape: tuple[int, ...], lora_a: np.ndarray, lora_b: np.ndarray, config: LoRAConfig,
                       linear: str = "linear") -> None:
    """Raise ``ValueError`` naming ``linear`` unless A is ``[rank, in]`` and B ``[out, rank]`` for a weight of
    shape ``[out, in]`` at ``config.lora_rank``."""
    rank = config.lora_rank
    if tuple(lora_a.shape) != (rank, weight_shape[1]) or tuple(lora_b.shape) != (weight_shape[0], rank):
        raise ValueError(f"the adapter of {linear}: A {tuple(lora_a.shape)} and B {tuple(lora_b.shape)} do not "
                         f"fit its weight {tuple(weight_shape)} at lora_rank {rank} (A [rank, in], B [out, rank])")


def fold_adapter(weight: np.ndarray, lora_a: np.ndarray, lora_b: np.ndarray, config: LoRAConfig,
                 linear: str = "linear") -> np.ndarray:
    """``W + B A · alpha / rank`` in ``weight``'s dtype, the product and the sum taken in float64.

    Raises ``ValueError`` naming ``linear`` when A ``[rank, in]`` and B ``[out, rank]`` do not fit
    ``weight [out, in]`` at ``config.lora_rank``.
    """
    check_adapter_fits(weight.shape, lora_a, lora_b, config, linear)
    update = lora_b.astype(np.float64) @ lora_a.astype(np.float64) * config.scaling
    return (weight.astype(np.float64) + update).astype(weight.dtype)


def merge_lora(base: Mapping[str, np.ndarray], adapter: Mapping[str, np.ndarray], config: LoRAConfig
               ) -> dict[str, np.ndarray]:
    """Fold adapters into base weights: ``W + B A · alpha / rank`` for each ``<linear>.weight`` that has
    ``<linear>.mindpet_delta_lora_a``/``_b`` in ``adapter`` (other entries of ``adapter``, such as optimizer
    state, are ignored). Returns a new state (checkpoint names), in the base weights' dtypes, the product
    taken in float64.

    Raises ``ValueError`` for an adapter without its base weight, a half adapter, or mismatched shapes.
    """
    merged = dict(base)
    for linear, (lora_a, lora_b) in adapter_pairs(adapter).items():
        weight_name = f"{linear}.weight"
        if weight_name not in base:
            raise ValueError(f"the adapter of {linear}: the base weights have no {weight_name}")
        merged[weight_name] = fold_adapter(base[weight_name], lora_a, lora_b, config, linear)
    return merged


PET_CONFIG_KEY = "pet_config"  # the entry of a glm-train checkpoint holding its pet_config as JSON text


def read_adapter(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], LoRAConfig | None]:
    """Read an adapter checkpoint (a LoRA run's ``.ckpt``): its adapter tensors and the :class:`LoRAConfig`
    stored in it under ``pet_config`` (JSON text, as glm-train writes it; None when there is none).
    Optimizer state, counters and the run config in the file are skipped.

    Read with ``mindspore.load_checkpoint``, which decodes the file's text entries; it holds the whole file in
    memory while it reads, which an adapter checkpoint (megabytes) affords.
    Raises ``FileNotFoundError``, or ``ValueError`` naming the file when it is unreadable, holds no adapter or
    a pet_config that is not a LoRA one.
    """
    import mindspore as ms

    from glm_core.checkpoint_file import CheckpointReader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter checkpoint at {path}")
    with CheckpointReader(path) as reader:  # the entry names alone, without reading the file
        names = list(reader.tensors)
    if not adapter_tensors(dict.fromkeys(names)):
        raise ValueError(f"{path} holds no LoRA adapter (no tensor named <linear>.mindpet_delta_lora_a / _b): "
                         "give the checkpoint of a LoRA run")
    try:
        entries = ms.load_checkpoint(str(path), choice_func=lambda name: is_adapter_name(name)
                                     or name == PET_CONFIG_KEY)
    except Exception as error:  # MindSpore raises ValueError/RuntimeError with varying texts
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path}: not a readable MindSpore checkpoint ({reason})") from None
    stored = entries.pop(PET_CONFIG_KEY, None)
    tensors = adapter_tensors({name: parameter.asnumpy() for name, parameter in entries.items()})
    config = None
    if isinstance(stored, str):
        try:
            values = json.loads(stored)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: its pet_config entry is not JSON ({error})") from None
        if values is not None:
            config = LoRAConfig.from_dict(values, source=f"{path}: pet_config")
    return tensors, config


def resolve_lora_config(stored: LoRAConfig | None, given: LoRAConfig | None, source: str) -> LoRAConfig:
    """The LoRA settings of an adapter: those stored with it (``stored``), else ``given``.

    Raises ``ValueError`` naming ``source`` when there are neither, or when both are there and their
    ``lora_rank`` or ``lora_alpha`` differ (the merged weights would be wrong, silently).
    """
    if stored is None and given is None:
        raise ValueError(f"{source} stores no pet_config: give the lora_rank and lora_alpha it was trained with")
    if stored is not None and given is not None and (stored.lora_rank, stored.lora_alpha) != (
            given.lora_rank, given.lora_alpha):
        raise ValueError(f"{source} was trained with lora_rank {stored.lora_rank} and lora_alpha "
                         f"{stored.lora_alpha:g}, not the given {given.lora_rank} and {given.lora_alpha:g}: leave "
                         "them out or correct them")
    return stored if stored is not None else given


def load_adapter(model, adapter: str | os.PathLike | Mapping[str, np.ndarray],
                 config: LoRAConfig | None = None) -> list[str]:
    """Fold a LoRA adapter into a loaded model's weights, in place: each ``<linear>.weight`` with an adapter
    becomes ``W + B A · alpha / rank`` (see :func:`fold_adapter`), so the model then runs as a merged
    checkpoint would, on whatever operators or kernels it runs. Returns the names of the Linears changed.

    ``adapter``: an adapter checkpoint's path (see :func:`read_adapter`) or its tensors by name. ``config``:
    the LoRA settings, needed when the adapter stores none; when it stores some, they must agree.
    Raises ``FileNotFoundError``/``ValueError`` as :func:`read_adapter` does, ``ValueError`` for settings that
    are missing or disagree, an adapter for a Linear the model lacks or of the wrong shape; the model is
    unchanged then.
    """
    import mindspore as ms

    if isinstance(adapter, Mapping):
        tensors, stored, source = adapter, None, "the adapter"
    else:
        (tensors, stored), source = read_adapter(adapter), str(adapter)
    config = resolve_lora_config(stored, config, source)
    parameters = {parameter.name: parameter for parameter in model.get_parameters()}
    try:
        pairs = adapter_pairs(tensors)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    merged = {}
    for linear, (lora_a, lora_b) in pairs.items():
        parameter = parameters.get(f"{linear}.weight")
        if parameter is None:
            raise ValueError(f"{source}: an adapter for {linear}, which the model does not have")
        merged[parameter.name] = fold_adapter(parameter.asnumpy(), lora_a, lora_b, config, f"{source}: {linear}")
    for name, weight in merged.items():  # only once every adapter fitted
        parameters[name].set_data(ms.Tensor.from_numpy(weight))
    return list(pairs)

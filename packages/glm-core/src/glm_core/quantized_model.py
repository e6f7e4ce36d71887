"""Quantized inference models: a :class:`~glm_core.model.GLMForPreTraining` whose Linears hold float16, int8 or
int4 weights (:mod:`glm_core.quantize`), for the CPU kernels.

:func:`quantize_model` (``model.quantize(8)``, the original ChatGLM-6B's call) replaces each block's four Linears
and the LM head (one step wider, :data:`glm_core.quantize.HEAD_STORAGE`) with a :class:`QuantizedLinear`, one at
a time, and stores the word embeddings in float16 and the biases and layernorms in float32. The kernels
(``kernel_model.py``) then stream the narrow weights; without the kernels, :class:`QuantizedLinear` dequantizes
them with MindSpore's ops, slowly but with the same values.
Quantized models compute in float32 and only run forward: a CPU inference feature.
"""

from __future__ import annotations

import dataclasses

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import initializer

from glm_core import quantize as formats
from glm_core.model import GLMForPreTraining, Linear

_MINDSPORE_DTYPES = {"float16": ms.float16, "int8": ms.int8, "int4": ms.uint8}


class QuantizedLinear(nn.Cell):
    """``y = x Wᵀ + b`` for float32 ``x``, ``W`` held in ``storage`` (float16, int8 or int4) as
    :mod:`glm_core.quantize` lays it out: ``weight`` and, quantized, ``weight_scale`` (float16), so that a
    checkpoint holds ``<name>.weight`` and ``<name>.weight_scale``; ``bias`` float32.

    ``construct`` dequantizes ``W`` with MindSpore's ops (the path without the kernels, and a full forward);
    the kernels read ``weight`` and ``weight_scale`` as they are.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, storage: str,
                 group_size: int = formats.DEFAULT_GROUP_SIZE, weight: np.ndarray | None = None,
                 scale: np.ndarray | None = None):
        """``weight``/``scale``: stored values (see :func:`glm_core.quantize.quantize`); without them, zeros
        that MindSpore allocates only when they are used, for a checkpoint to replace."""
        super().__init__()
        formats.check_storage(storage, in_features, group_size)
        if storage == "float32":
            raise ValueError("QuantizedLinear holds float16, int8 or int4 weights; float32 is the plain Linear")
        weight_shape, scale_shape = formats.stored_shapes(storage, (out_features, in_features), group_size)
        weight_dtype = _MINDSPORE_DTYPES[storage]
        self.weight = Parameter(Tensor.from_numpy(weight) if weight is not None else
                                initializer("zeros", weight_shape, weight_dtype), name="weight", requires_grad=False)
        self.weight_scale = None
        if scale_shape is not None:
            self.weight_scale = Parameter(Tensor.from_numpy(scale) if scale is not None else
                                          initializer("zeros", scale_shape, ms.float16), name="weight_scale",
                                          requires_grad=False)
        self.bias = (Parameter(initializer("zeros", (out_features,), ms.float32), name="bias", requires_grad=False)
                     if bias else None)
        self.storage, self.group_size = storage, group_size
        self.in_features, self.out_features = in_features, out_features
        self.matmul = ops.MatMul(transpose_b=True)

    def dequantized_weight(self):
        """``W`` ``[out, in]`` in float32, as MindSpore ops compute it (the values the kernels use)."""
        if self.storage == "float16":
            return self.weight.astype(ms.float32)
        if self.storage == "int8":
            return self.weight.astype(ms.float32) * self.weight_scale.astype(ms.float32).reshape(-1, 1)
        rows, half = self.weight.shape
        # Each 16 bytes hold 32 inputs: the low nibbles the first 16, the high ones the next 16.
        packed = self.weight.astype(ms.int32).reshape(rows, half // 16, 1, 16)
        high = ops.floor_div(packed, 16)
        nibbles = ops.concat([packed - high * 16, high], axis=2).reshape(rows, self.in_features)
        groups = self.weight_scale.shape[1]
        values = (nibbles.astype(ms.float32) - 8.0).reshape(rows, groups, -1)
        return (values * self.weight_scale.astype(ms.float32).reshape(rows, groups, 1)).reshape(rows, -1)

    def construct(self, x):
        leading = x.shape[:-1]
        y = self.matmul(x.reshape(-1, x.shape[-1]).astype(ms.float32), self.dequantized_weight())
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*leading, self.out_features)


def _linears(model: GLMForPreTraining):
    """``(parent cell, attribute, checkpoint name prefix)`` of every Linear a quantized model stores narrow, in
    checkpoint order."""
    for index, layer in enumerate(model.transformer.layers):
        prefix = f"transformer.layers.{index}."
        yield layer.attention, "query_key_value", prefix + "attention.query_key_value"
        yield layer.attention, "dense", prefix + "attention.dense"
        yield layer.mlp, "dense_h_to_4h", prefix + "mlp.dense_h_to_4h"
        yield layer.mlp, "dense_4h_to_h", prefix + "mlp.dense_4h_to_h"
    yield model, "lm_head", "lm_head"


def _replace(parent: nn.Cell, attribute: str, prefix: str, linear: QuantizedLinear) -> None:
    """Put ``linear`` in place of ``parent``'s Linear ``attribute``, its parameters named as in a checkpoint
    (``<prefix>.weight``, ...): MindSpore prefixes a new cell's names with its parent's attribute alone."""
    setattr(parent, attribute, linear)
    for parameter in linear.get_parameters():
        parameter.name = f"{prefix}.{parameter.name.rsplit('.', 1)[-1]}"


def _first_layer_linear(model: GLMForPreTraining):
    return model.transformer.layers[0].attention.query_key_value


def weight_storage(model: GLMForPreTraining) -> str:
    """How ``model``'s layers hold their Linear weights: ``"int8"``, ``"int4"``, ``"float16"`` or, unquantized,
    the model's ``param_init_type`` (the LM head's storage follows, :data:`glm_core.quantize.HEAD_STORAGE`)."""
    linear = _first_layer_linear(model)
    return linear.storage if isinstance(linear, QuantizedLinear) else model.config.param_init_type


def group_size_of(model: GLMForPreTraining) -> int | None:
    """The int4 group size of ``model``'s int4 Linears; None for other storages."""
    return _first_layer_linear(model).group_size if weight_storage(model) == "int4" else None


def _check_quantizable(model: GLMForPreTraining, storage: str, group_size: int) -> None:
    config = model.config
    if config.compute_dtype != "float32":
        raise ValueError(f"quantized models compute in float32 on CPU; this model computes in {config.compute_dtype} "
                         "(quantization is a CPU inference feature)")
    formats.check_storage(storage, None, group_size)
    if storage == "int4":
        for width in (config.hidden_size, config.inner_hidden_size):
            formats.check_storage(storage, width, group_size)
    current = weight_storage(model)
    if isinstance(_first_layer_linear(model), QuantizedLinear):
        raise ValueError(f"the model's weights are already {current}; load the unquantized checkpoint to store "
                         f"them as {storage}")


def _rest_for_kernels(model: GLMForPreTraining, for_checkpoint: bool = False) -> None:
    """The embeddings as float16 (``for_checkpoint``: zeros allocated when used, for a checkpoint to replace),
    the weights outside the Linears (layernorms, biases) as float32, and the config saying float32 (what the
    kernels take)."""
    cell = model.transformer.word_embeddings
    table = cell.embedding_table
    if for_checkpoint or table.dtype != ms.float16:
        values = (initializer("zeros", table.shape, ms.float16) if for_checkpoint else
                  Tensor.from_numpy(table.asnumpy().astype(np.float16)))
        # A new parameter: set_data keeps a parameter's dtype, and set_dtype would convert the old values first.
        cell.embedding_table = Parameter(values, name=table.name, requires_grad=False)
    for parameter in model.get_parameters():
        if parameter.dtype == ms.float16 and parameter.name.endswith((".gamma", ".beta", ".bias")):
            parameter.set_dtype(ms.float32)
    model.config = dataclasses.replace(model.config, param_init_type="float32")


def quantize_model(model: GLMForPreTraining, storage: str, group_size: int = formats.DEFAULT_GROUP_SIZE
                   ) -> GLMForPreTraining:
    """Store ``model``'s Linear weights in ``storage`` (``"float16"``, ``"int8"`` or ``"int4"`` with
    ``group_size`` inputs per scale), each block's four, and the LM head in the storage that goes with it
    (:data:`glm_core.quantize.HEAD_STORAGE`: float16 beside int8, int8 beside int4), in place; returns ``model``.

    Each Linear is quantized and replaced in turn, so memory holds one float32 Linear beyond the result. The
    embeddings become float16 and the remaining weights float32; a generator made for the model before is
    dropped (its compiled graphs held the old weights). The model is for inference from then on.

    Raises ``ValueError`` for an unknown storage, a group size that does not divide the model's widths, a
    model computing in float16 or one already quantized.
    """
    from glm_core.generation import forget_generator

    _check_quantizable(model, storage, group_size)
    for parent, attribute, prefix in _linears(model):
        linear: Linear = getattr(parent, attribute)
        out_features, in_features = linear.weight.shape
        stored = formats.linear_storage(prefix + ".weight", storage)
        weight, scale = formats.quantize(linear.weight.asnumpy(), stored, group_size)
        bias = linear.bias.asnumpy().astype(np.float32) if linear.bias is not None else None
        quantized = QuantizedLinear(in_features, out_features, bias is not None, stored, group_size, weight, scale)
        if bias is not None:
            quantized.bias.set_data(Tensor.from_numpy(bias))
        _replace(parent, attribute, prefix, quantized)
    _rest_for_kernels(model)
    forget_generator(model)
    return model


def prepare_for_checkpoint(model: GLMForPreTraining, storage: str, group_size: int | None) -> GLMForPreTraining:
    """Give a model built inside :func:`glm_core.model.skip_random_init` the parameters of a checkpoint stored in
    ``storage`` (zeros, untouched memory) for :func:`glm_core.checkpoint.load_checkpoint` to fill; returns it.

    Raises ``ValueError`` like :func:`quantize_model`.
    """
    group_size = group_size or formats.DEFAULT_GROUP_SIZE
    _check_quantizable(model, storage, group_size)
    for parent, attribute, prefix in _linears(model):
        linear: Linear = getattr(parent, attribute)
        out_features, in_features = linear.weight.shape
        stored = formats.linear_storage(prefix + ".weight", storage)
        _replace(parent, attribute, prefix, QuantizedLinear(in_features, out_features, linear.bias is not None,
                                                            stored, group_size))
    _rest_for_kernels(model, for_checkpoint=True)
    return model


def checkpoint_storage(dtypes: dict[str, str], shapes: dict[str, tuple[int, ...]], in_features: int
                       ) -> tuple[str, int | None] | None:
    """The storage and int4 group size of a checkpoint's layer Linears from its tensors' numpy ``dtypes`` and
    ``shapes`` by name (the first layer's QKV weights tell), or None for an unquantized checkpoint: float
    weights without scales, in the dtype of the layernorms.

    Raises ``ValueError`` when the Linears' weights are no storage of the kernels, or the LM head is not in the
    storage that goes with the layers' (:data:`glm_core.quantize.HEAD_STORAGE`).
    """
    tell = "transformer.layers.0." + formats.LAYER_LINEARS[0]
    if tell not in dtypes:
        return None
    scale = formats.scale_name(tell)
    norm_dtype = dtypes.get("transformer.final_layernorm.gamma", dtypes[tell])
    if scale not in shapes and dtypes[tell] == norm_dtype:
        return None
    storage, group_size = formats.storage_of(dtypes[tell], shapes[tell], shapes.get(scale), in_features)
    head, head_scale = formats.HEAD, formats.scale_name(formats.HEAD)
    if head in dtypes:
        head_storage, _ = formats.storage_of(dtypes[head], shapes[head], shapes.get(head_scale), in_features)
        if head_storage != formats.HEAD_STORAGE[storage]:
            raise ValueError(f"its layers are {storage} but its {head} is {head_storage}; glm-core keeps the LM "
                             f"head {formats.HEAD_STORAGE[storage]} beside {storage} layers: convert the original "
                             "checkpoint again (glm-convert hf-to-ms --quantize)")
    return storage, group_size

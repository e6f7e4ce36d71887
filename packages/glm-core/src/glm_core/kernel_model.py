"""The inference variant of ``model.py`` on glm-core's CPU kernels, over the same parameters.

    input_ids ─► word_embeddings ─► input_layernorm of block 0 ─► kernels/layer.cc × num_layers ─► lm_head

Each block runs as one operator (``kernels/layer.cc``): QKV, the 2D rotary with keys and values written into
the block's :class:`~glm_core.model.KVCache`, attention over the cache, the dense output with the residual and
``post_attention_layernorm``, the MLP with the residual and the *next* block's ``input_layernorm`` (the last
block's: ``final_layernorm``). The arithmetic is that of the MindSpore operators it replaces, but summed in
one order for one row as for many, so a one-token step gives the bits of a whole prompt run through it.

A quantized model (:mod:`glm_core.quantized_model`) runs the same way: the operators take each Linear's
float16, int8 or int4 weights with their scales, and its float16 embeddings are widened after the lookup.

:func:`runs_on_kernels` is where the choice is made; glm_core.generation asks it once per model.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from glm_core import kernels
from glm_core.config import GLMConfig
from glm_core.quantized_model import QuantizedLinear


def weight_inputs(linear) -> tuple:
    """A Linear's weights as the kernels take them: ``(weight, scales)``; float weights have no scales, and get
    a one-element placeholder that the layer operator does not read."""
    scale = linear.weight_scale if isinstance(linear, QuantizedLinear) else None
    return linear.weight, scale if scale is not None else Tensor(np.zeros(1, np.float16))


def runs_on_kernels(config: GLMConfig) -> bool:
    """Whether a model of ``config`` can run on the kernels: on CPU, with float32 weights (a quantized model's
    layernorms and biases are), compute, layernorm and softmax, and the kernel library built (else a warning
    said why). Other models run on MindSpore's operators, which take every dtype."""
    dtypes = (config.param_init_type, config.compute_dtype, config.layernorm_compute_type,
              config.softmax_compute_type)
    return (all(dtype == "float32" for dtype in dtypes) and ms.get_context("device_target") == "CPU"
            and kernels.layer_operator() is not None)


class KernelGLM(nn.Cell):
    """A :class:`~glm_core.model.GLMForPreTraining`'s forward with KV caches on the kernels, over the model's
    parameters (which keep their names); it holds no weights of its own.

    It holds the two cells it calls (the word embeddings and block 0's input layernorm) and the parameters of
    the rest, not the model: MindSpore walks a graph cell's whole tree of cells on every call (setting each
    one's compile phase), and the model's hundred-odd cells cost a decode step more than its small ops.

    ``construct(input_ids [B, S], position_ids [B, 2, S], mask [B, 1, S, L], caches, slots [S])`` writes the
    keys and values of the ``S`` tokens at cache ``slots`` and returns the logits of the last one ``[B, V]``.
    """

    def __init__(self, model):
        super().__init__(auto_prefix=False)  # keep the model's checkpoint parameter names
        self.layer = kernels.layer_operator()
        self.lm_head = kernels.linear_operator()
        transformer, config = model.transformer, model.config
        layers = transformer.layers
        self.word_embeddings, self.input_layernorm = transformer.word_embeddings, layers[0].input_layernorm
        # Not layers[1:]: a slice of a CellList is a new CellList, which renames the parameters it holds.
        next_norms = [layer.input_layernorm for layer in list(layers)[1:]] + [transformer.final_layernorm]
        self.blocks = []  # per block, its LAYER_BLOCK_INPUTS in order
        for layer, next_norm in zip(layers, next_norms):
            attention, mlp = layer.attention, layer.mlp
            named = {
                "cos": transformer.rotary.cos_table, "sin": transformer.rotary.sin_table,
                "qkv_bias": attention.query_key_value.bias, "dense_bias": attention.dense.bias,
                "post_gamma": layer.post_attention_layernorm.gamma,
                "post_beta": layer.post_attention_layernorm.beta,
                "h_to_4h_bias": mlp.dense_h_to_4h.bias, "four_h_to_h_bias": mlp.dense_4h_to_h.bias,
                "next_gamma": next_norm.gamma, "next_beta": next_norm.beta,
                "scalars": Tensor([attention.query_scale, attention.layer_scale, config.residual_alpha,
                                   config.layernorm_epsilon], ms.float32),
            }
            for prefix, linear in (("qkv", attention.query_key_value), ("dense", attention.dense),
                                   ("h_to_4h", mlp.dense_h_to_4h), ("four_h_to_h", mlp.dense_4h_to_h)):
                named[f"{prefix}_weight"], named[f"{prefix}_weight_scale"] = weight_inputs(linear)
            self.blocks.append(tuple(named[name] for name in kernels.LAYER_BLOCK_INPUTS))
        self.blocks = tuple(self.blocks)
        head = model.lm_head
        self.head_weights = (head.weight, head.weight_scale) if getattr(head, "weight_scale", None) is not None \
            else (head.weight,)
        self.widen_embeddings = transformer.word_embeddings.embedding_table.dtype != ms.float32

    def construct(self, input_ids, position_ids, mask, caches, slots):
        embedded = self.word_embeddings(input_ids)
        if self.widen_embeddings:
            embedded = embedded.astype(ms.float32)
        x = self.input_layernorm(embedded)
        for index in range(len(self.blocks)):
            cache = caches[index]
            # LAYER_STEP_INPUTS, then the block's LAYER_BLOCK_INPUTS
            x = self.layer(x, position_ids, mask, slots, cache.key, cache.value, *self.blocks[index])
        batch, hidden = x.shape[0], x.shape[2]
        return self.lm_head(x[:, -1].reshape(batch, hidden), *self.head_weights)

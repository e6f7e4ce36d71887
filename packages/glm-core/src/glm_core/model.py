"""The ChatGLM-6B network in MindSpore, top to bottom.

    input_ids ─► word_embeddings ─► GLMBlock × num_layers ─► final_layernorm ─► lm_head ─► logits

Each GLMBlock:  x ─► input_layernorm ─► SelfAttention ─► (ln·alpha + attn) ─► post_attention_layernorm
                  ─► MLP ─► (ln·alpha + mlp),  alpha = sqrt(2 · 28)

Parameter names are MindFormers' checkpoint names (``transformer.layers.N.attention.query_key_value.weight``
…), so a MindFormers ``glm_6b.ckpt`` loads as is. The network runs on MindSpore's operators: a full forward
(training, scoring) and, with a :class:`KVCache` per layer, the incremental decoder of ``generation.py``.
Inference in float32 on CPU has a faster variant over the same parameters, ``kernel_model.py``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from glm_core.config import GLMConfig
from glm_core.names import inv_freq

MASKED_SCORE = -10000.0  # what the original writes into masked attention scores

_DTYPES = {"float32": ms.float32, "float16": ms.float16}


def mindspore_dtype(name: str):
    return _DTYPES[name]


_random_weights = True  # False inside skip_random_init()


@contextmanager
def skip_random_init():
    """Within it, models are built with zero weights instead of random ones, for a checkpoint to fill.

    MindSpore allocates zero parameters as untouched memory, which costs nothing until written: a model
    built so and then loaded holds its weights once (random float32 weights of ChatGLM-6B take 24.7 GB).
    """
    global _random_weights
    previous, _random_weights = _random_weights, False
    try:
        yield
    finally:
        _random_weights = previous


def _weight_init():
    """The initializer of Linear weights and embeddings: Normal(0.02), or zeros inside skip_random_init()."""
    return Normal(0.02) if _random_weights else "zeros"


class Linear(nn.Cell):
    """``y = x Wᵀ + b`` on MindSpore's MatMul, ``W`` of checkpoint shape ``[out, in]``, computed in
    ``compute_dtype`` (weights held in another dtype are cast to it)."""

    def __init__(self, in_features, out_features, bias=True, param_dtype=ms.float32, compute_dtype=ms.float32):
        super().__init__()
        self.weight = Parameter(initializer(_weight_init(), (out_features, in_features), param_dtype), name="weight")
        self.bias = Parameter(initializer("zeros", (out_features,), param_dtype), name="bias") if bias else None
        self.matmul = ops.MatMul(transpose_b=True)
        self.out_features = out_features
        self.compute_dtype = compute_dtype
        self.cast_weight = param_dtype != compute_dtype

    def construct(self, x):
        leading = x.shape[:-1]
        y = self.project(x.reshape(-1, x.shape[-1]).astype(self.compute_dtype))
        return y.reshape(*leading, self.out_features)

    def project(self, x):
        """``x Wᵀ + b`` for rows ``x [N, in]`` in the compute dtype: what a variant such as
        :class:`glm_core.lora.LoRALinear` extends."""
        weight = self.weight.astype(self.compute_dtype) if self.cast_weight else self.weight
        y = self.matmul(x, weight)
        if self.bias is not None:
            y = y + (self.bias.astype(self.compute_dtype) if self.cast_weight else self.bias)
        return y


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis with MindFormers' parameter names ``gamma``/``beta``."""

    def __init__(self, size, epsilon, param_dtype=ms.float32, compute_dtype=ms.float32):
        super().__init__()
        self.gamma = Parameter(initializer("ones", (size,), param_dtype), name="gamma")
        self.beta = Parameter(initializer("zeros", (size,), param_dtype), name="beta")
        self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=epsilon)
        self.compute_dtype = compute_dtype

    def construct(self, x):
        dtype = x.dtype
        y, _, _ = self.norm(x.astype(self.compute_dtype), self.gamma.astype(self.compute_dtype),
                            self.beta.astype(self.compute_dtype))
        return y.astype(dtype)


class Embedding(nn.Cell):
    """Word embeddings with MindFormers' parameter name ``embedding_table``."""

    def __init__(self, vocab_size, hidden_size, param_dtype=ms.float32):
        super().__init__()
        self.embedding_table = Parameter(initializer(_weight_init(), (vocab_size, hidden_size), param_dtype),
                                         name="embedding_table")

    def construct(self, input_ids):
        return ops.gather(self.embedding_table, input_ids, 0)


def rotary_tables(config: GLMConfig):
    """cos/sin tables ``[seq_length + 1, head_dim / 2]`` for one half of a head.

    As the original: angles ``p · inv_freq`` (the reference's float16 buffer, :func:`glm_core.names.inv_freq`)
    repeated twice (rotate-half).
    """
    positions = np.arange(config.seq_length + 1, dtype=np.float32)
    angles = np.outer(positions, inv_freq(config).astype(np.float32))
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


class RotaryEmbedding2D(nn.Cell):
    """GLM's 2D rotary embedding: the first half of each head turns by position, the second by block position.

    ``construct`` returns ``(cos, sin)`` of shape ``[batch, seq, 1, head_dim]``; ``sin`` carries the signs of
    rotate-half, so a head ``x`` rotates as ``x * cos + x[..., swap] * sin`` (see :meth:`rotate`).
    """

    def __init__(self, config: GLMConfig):
        super().__init__()
        cos, sin = rotary_tables(config)
        quarter = config.head_dim // 4
        # rotate_half([a, b]) = [-b, a] within each half of the head: [a b c d] -> [-b a -d c]
        sign = np.concatenate([-np.ones(quarter), np.ones(quarter)]).astype(np.float32)
        self.cos_table = Tensor(cos)
        self.sin_table = Tensor(sin * sign)
        self.swap = Tensor(np.concatenate([np.arange(quarter, 2 * quarter), np.arange(quarter),
                                           np.arange(3 * quarter, 4 * quarter),
                                           np.arange(2 * quarter, 3 * quarter)]).astype(np.int32))

    def construct(self, position_ids):
        """``position_ids``: ``[batch, 2, seq]`` (positions, block positions)."""
        positions, blocks = position_ids[:, 0], position_ids[:, 1]
        cos = ops.concat([ops.gather(self.cos_table, positions, 0), ops.gather(self.cos_table, blocks, 0)], -1)
        sin = ops.concat([ops.gather(self.sin_table, positions, 0), ops.gather(self.sin_table, blocks, 0)], -1)
        return cos.expand_dims(2), sin.expand_dims(2)

    def rotate(self, x, cos, sin):
        return x * cos.astype(x.dtype) + ops.gather(x, self.swap, x.ndim - 1) * sin.astype(x.dtype)


class KVCache(nn.Cell):
    """One layer's keys and values, slot-major ``[length, batch, heads, head_dim]``, written in place.

    ScatterUpdate writes the slots along the first axis without copying the rest (MindSpore's CPU
    ScatterNdUpdate on a ``[batch, heads, length, head_dim]`` cache copies all of it on every call).
    glm_core.kernels' attention reads this layout as is.
    """

    def __init__(self, layer: int, batch: int, heads: int, length: int, head_dim: int, dtype):
        super().__init__()
        shape = (length, batch, heads, head_dim)
        self.key = Parameter(Tensor(np.zeros(shape), dtype), name=f"kv_cache.{layer}.key", requires_grad=False)
        self.value = Parameter(Tensor(np.zeros(shape), dtype), name=f"kv_cache.{layer}.value", requires_grad=False)

    def update(self, slots, key, value):
        """Write ``key``/``value`` ``[S, B, H, D]`` at cache slots ``slots`` (int32 ``[S]``); return the caches."""
        return (ops.scatter_update(self.key, slots, key.astype(self.key.dtype)),
                ops.scatter_update(self.value, slots, value.astype(self.value.dtype)))


class SelfAttention(nn.Cell):
    """Multi-head attention with GLM's fused, per-head interleaved QKV: ``[heads, (q, k, v), head_dim]``."""

    def __init__(self, config: GLMConfig, layer_id: int, rotary: RotaryEmbedding2D, inference: bool):
        super().__init__()
        param_dtype, compute_dtype = mindspore_dtype(config.param_init_type), mindspore_dtype(config.compute_dtype)
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.query_key_value = Linear(config.hidden_size, 3 * config.hidden_size, True, param_dtype, compute_dtype)
        self.dense = Linear(config.hidden_size, config.hidden_size, True, param_dtype, compute_dtype)
        self.rotary = rotary
        # The original divides q by sqrt(d)·(layer_id + 1) and multiplies the scores back by (layer_id + 1)
        # in the softmax dtype: it keeps float16 scores in range. We do the same, so float32 matches too.
        self.layer_scale = float(layer_id + 1)
        self.query_scale = 1.0 / (math.sqrt(self.head_dim) * self.layer_scale)
        self.softmax_dtype = mindspore_dtype(config.softmax_compute_type)
        rate = 0.0 if inference else config.attention_dropout_rate
        self.dropout = nn.Dropout(p=rate) if rate else nn.Identity()

    def construct(self, x, rotary, mask, cache=None, slots=None):
        """``x``: ``[B, S, hidden]``; ``rotary``: RotaryEmbedding2D's ``(cos, sin)``; ``mask``: bool
        ``[B, 1, S, K]``, True = masked.

        Without a cache, K = S. With ``cache`` (a :class:`KVCache`) the new keys and values are written at
        cache ``slots`` and attention runs over the whole cache, K = its length.
        """
        batch, seq = x.shape[0], x.shape[1]
        qkv = self.query_key_value(x).reshape(batch, seq, self.num_heads, 3 * self.head_dim)
        query, key, value = ops.split(qkv, self.head_dim, axis=-1)  # [B, S, H, D]
        cos, sin = rotary
        query = self.rotary.rotate(query, cos, sin) * self.query_scale
        key = self.rotary.rotate(key, cos, sin)
        query = query.transpose(0, 2, 1, 3)  # [B, H, S, D]
        if cache is not None:
            key, value = cache.update(slots, key.transpose(1, 0, 2, 3), value.transpose(1, 0, 2, 3))
            key, value = key.transpose(1, 2, 0, 3), value.transpose(1, 2, 0, 3)  # [B, H, K, D]
        else:
            key, value = key.transpose(0, 2, 1, 3), value.transpose(0, 2, 1, 3)
        scores = ops.BatchMatMul(transpose_b=True)(query, key)
        scores = ops.masked_fill(scores, mask, ops.scalar_to_tensor(MASKED_SCORE, scores.dtype))
        probs = ops.softmax(scores.astype(self.softmax_dtype) * self.layer_scale, axis=-1).astype(value.dtype)
        context = ops.BatchMatMul()(self.dropout(probs), value).transpose(0, 2, 1, 3).reshape(batch, seq, -1)
        return self.dense(context)


class MLP(nn.Cell):
    """``dense_4h_to_h(gelu_tanh(dense_h_to_4h(x)))``."""

    def __init__(self, config: GLMConfig):
        super().__init__()
        param_dtype, compute_dtype = mindspore_dtype(config.param_init_type), mindspore_dtype(config.compute_dtype)
        self.dense_h_to_4h = Linear(config.hidden_size, config.inner_hidden_size, True, param_dtype, compute_dtype)
        self.dense_4h_to_h = Linear(config.inner_hidden_size, config.hidden_size, True, param_dtype, compute_dtype)

    def construct(self, x):
        return self.dense_4h_to_h(ops.gelu(self.dense_h_to_4h(x), approximate="tanh"))


class GLMBlock(nn.Cell):
    """One transformer layer with GLM's residual: ``ln(x) · alpha + f(ln(x))``.

    ``alpha = sqrt(2 · config.alpha_num_layers)``: 28 for every depth, as in the original (see GLMConfig).
    Dropout (training only) applies to the attention and MLP outputs before the residual is added.
    """

    def __init__(self, config: GLMConfig, layer_id: int, rotary: RotaryEmbedding2D, inference: bool):
        super().__init__()
        param_dtype, ln_dtype = mindspore_dtype(config.param_init_type), mindspore_dtype(config.layernorm_compute_type)
        self.input_layernorm = LayerNorm(config.hidden_size, config.layernorm_epsilon, param_dtype, ln_dtype)
        self.attention = SelfAttention(config, layer_id, rotary, inference)
        self.post_attention_layernorm = LayerNorm(config.hidden_size, config.layernorm_epsilon, param_dtype, ln_dtype)
        self.mlp = MLP(config)
        self.alpha = config.residual_alpha
        rate = 0.0 if inference else config.hidden_dropout_rate
        self.dropout = nn.Dropout(p=rate) if rate else nn.Identity()

    def construct(self, x, rotary, mask, cache=None, slots=None):
        """``rotary``, ``mask``, ``cache``, ``slots``: see :meth:`SelfAttention.construct`."""
        attention_input = self.input_layernorm(x)
        attention_output = self.attention(attention_input, rotary, mask, cache, slots)
        mlp_input = self.post_attention_layernorm(attention_input * self.alpha + self.dropout(attention_output))
        return mlp_input * self.alpha + self.dropout(self.mlp(mlp_input))


def positions_and_mask(input_ids, config: GLMConfig):
    """Position ids ``[B, 2, S]`` and attention mask ``[B, 1, S, S]`` (True = masked) from ids.

    Exactly what the original tokenizer builds for a left-padded batch: leading ``<pad>`` tokens are
    masked and take position 0; each row's positions restart at its first real token; the prompt up to
    ``<sop>`` is bidirectional, from ``<sop>`` on causal; tokens from ``<sop>`` on take the ``[MASK]`` (or
    else ``[gMASK]``) position, and block positions 1, 2, … .
    """
    batch, seq = input_ids.shape
    index = ops.arange(seq, dtype=ms.int32)
    pads = ops.argmax((input_ids != config.pad_token_id).astype(ms.int32), dim=1).astype(ms.int32)
    is_bos = input_ids == config.bos_token_id
    context = ops.where(is_bos.any(axis=1), ops.argmax(is_bos.astype(ms.int32), dim=1).astype(ms.int32), seq)
    is_mask, is_gmask = input_ids == config.mask_token_id, input_ids == config.gmask_token_id
    has_mask, has_gmask = is_mask.any(axis=1), is_gmask.any(axis=1)
    mask_position = ops.where(has_mask, ops.argmax(is_mask.astype(ms.int32), dim=1),
                              ops.argmax(is_gmask.astype(ms.int32), dim=1)).astype(ms.int32)

    row = index.reshape(1, seq)
    pads_, context_ = pads.reshape(batch, 1), context.reshape(batch, 1)
    after_context = row >= context_
    positions = row - pads_
    use_mask_position = ops.logical_and(after_context, ops.logical_or(has_mask, has_gmask).reshape(batch, 1))
    positions = ops.where(use_mask_position, (mask_position.reshape(batch, 1) - pads_).broadcast_to((batch, seq)),
                          positions)
    positions = ops.where(row < pads_, ops.zeros_like(positions), positions)
    blocks = ops.where(after_context, row - context_ + 1, ops.zeros_like(positions))
    position_ids = ops.stack([positions, blocks], axis=1)

    query, key = index.reshape(1, seq, 1), index.reshape(1, 1, seq)
    pads_, context_ = pads.reshape(batch, 1, 1), context.reshape(batch, 1, 1)
    visible = ops.logical_and(key >= pads_, ops.logical_or(key < context_, key <= query))
    visible = ops.logical_and(visible, query >= pads_)
    return position_ids, ops.logical_not(visible).reshape(batch, 1, seq, seq)


class GLMTransformer(nn.Cell):
    """Embeddings, the GLM blocks and the final layernorm: ids to hidden states.

    ``inference``: a network only run forward, without dropout.
    """

    def __init__(self, config: GLMConfig, inference: bool = False):
        super().__init__()
        param_dtype = mindspore_dtype(config.param_init_type)
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, param_dtype)
        self.rotary = RotaryEmbedding2D(config)
        self.layers = nn.CellList([GLMBlock(config, i, self.rotary, inference) for i in range(config.num_layers)])
        self.final_layernorm = LayerNorm(config.hidden_size, config.layernorm_epsilon, param_dtype,
                                         mindspore_dtype(config.layernorm_compute_type))
        self.compute_dtype = mindspore_dtype(config.compute_dtype)

    def construct(self, input_ids, position_ids, mask, caches=None, slots=None):
        """``caches``: one :class:`KVCache` per layer, written at ``slots`` (see SelfAttention)."""
        x = self.word_embeddings(input_ids).astype(self.compute_dtype)
        rotary = self.rotary(position_ids)
        if caches is None:
            for layer in self.layers:
                x = layer(x, rotary, mask)
        else:
            for layer, cache in zip(self.layers, caches):
                x = layer(x, rotary, mask, cache, slots)
        return self.final_layernorm(x)


class GLMForPreTraining(nn.Cell):
    """ChatGLM-6B with its language-model head: ``model(input_ids) -> logits [batch, seq, vocab]``.

    Position ids and the attention mask are derived from ``input_ids`` (``<pad>``/``<sop>``/``[gMASK]``
    positions) unless given, as the tokenizer builds them. ``inference`` (default: ``config.use_past``): a
    model only run forward, without dropout. :mod:`glm_core.generation` generates with it.
    """

    def __init__(self, config: GLMConfig, inference: bool | None = None):
        super().__init__()
        self.config = config
        self.inference = config.use_past if inference is None else inference
        self.transformer = GLMTransformer(config, self.inference)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, False, mindspore_dtype(config.param_init_type),
                              mindspore_dtype(config.compute_dtype))

    def quantize(self, bits: int | str, group_size: int | None = None) -> GLMForPreTraining:
        """Store the Linear weights in ``bits`` 8 (int8) or 4 (int4), or as ``"float16"``, for inference on
        CPU, in place, as the original's ``model.quantize(bits)``; returns the model. See
        :func:`glm_core.quantized_model.quantize_model`."""
        from glm_core.quantize import DEFAULT_GROUP_SIZE, storage_of_bits
        from glm_core.quantized_model import quantize_model

        storage = bits if isinstance(bits, str) else storage_of_bits(bits)
        return quantize_model(self, storage, group_size or DEFAULT_GROUP_SIZE)

    def construct(self, input_ids, position_ids=None, attention_mask=None):
        if position_ids is None or attention_mask is None:
            derived_positions, derived_mask = positions_and_mask(input_ids, self.config)
            position_ids = derived_positions if position_ids is None else position_ids
            attention_mask = derived_mask if attention_mask is None else attention_mask
        hidden = self.transformer(input_ids, position_ids, attention_mask.astype(ms.bool_))
        return self.lm_head(hidden).astype(ms.float32)

"""The ChatGLM-6B network in MindSpore, top to bottom.

    input_ids ─► word_embeddings ─► GLMBlock × num_layers ─► final_layernorm ─► lm_head ─► logits

Each GLMBlock:  x ─► input_layernorm ─► SelfAttention ─► (ln·alpha + attn) ─► post_attention_layernorm
                  ─► MLP ─► (ln·alpha + mlp),  alpha = sqrt(2 · 28)

Parameter names are MindFormers' checkpoint names (``transformer.layers.N.attention.query_key_value.weight``
…), so a MindFormers ``glm_6b.ckpt`` loads as is. The same layers run a full forward (training, scoring)
and, with a KV cache passed in, the incremental decoder of ``generation.py``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from glm_core.config import GLMConfig

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


def runs_cpu_kernels(inference: bool, compute_dtype) -> bool:
    """Whether a layer uses glm_core.kernels: inference layers computing in float32 on CPU."""
    return inference and compute_dtype == ms.float32 and ms.get_context("device_target") == "CPU"


class Linear(nn.Cell):
    """``y = x Wᵀ + b`` with ``W`` of checkpoint shape ``[out, in]``.

    An inference Linear computing in float32 on CPU runs the C++ kernel of :mod:`glm_core.kernels`: it
    streams a decode step's weights near the memory bandwidth and sums each output in the same order for
    one row as for many, so a one-token decode step reproduces a full forward exactly. Training Linears
    (which need gradients), float16 ones and other devices use MindSpore's MatMul.

    ``gelu=True`` applies the MLP's tanh GELU to the output. ``residual_scale``: ``construct(x, residual)``
    returns ``residual * residual_scale + (x Wᵀ + b)``, GLM's residual connection. ``norm_epsilon`` as well:
    ``construct(x, residual, norm=(gamma, beta))`` returns the layernorm of that sum. The kernel does all
    of it as it writes the output, rounding as MindSpore's ops would.
    """

    def __init__(self, in_features, out_features, bias=True, inference=False, param_dtype=ms.float32,
                 compute_dtype=ms.float32, gelu=False, residual_scale=None, norm_epsilon=None):
        super().__init__()
        self.weight = Parameter(initializer(_weight_init(), (out_features, in_features), param_dtype), name="weight")
        self.bias = Parameter(initializer("zeros", (out_features,), param_dtype), name="bias") if bias else None
        kernel = None
        if runs_cpu_kernels(inference, compute_dtype):
            from glm_core.kernels import linear_operator

            kernel = linear_operator(gelu)
        self.uses_kernel = kernel is not None
        self.matmul = kernel if kernel is not None else ops.MatMul(transpose_b=True)
        self.layer_norm = ops.LayerNorm(-1, -1, norm_epsilon) if norm_epsilon is not None else None
        self.kernel_norm_epsilon = Tensor([norm_epsilon or 0.0], ms.float32)
        self.out_features = out_features
        self.compute_dtype = compute_dtype
        self.cast_weight = param_dtype != compute_dtype
        self.gelu = gelu
        self.residual_scale = residual_scale
        self.kernel_residual_scale = Tensor([residual_scale or 0.0], ms.float32)

    def construct(self, x, residual=None, norm=None):
        leading = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1]).astype(self.compute_dtype)
        if self.uses_kernel:  # float32: no casts; the kernel adds the bias and the residual
            if norm is not None:
                y = self.matmul(x, self.weight, self.bias, residual.reshape(x.shape[0], -1),
                                self.kernel_residual_scale, norm[0], norm[1], self.kernel_norm_epsilon)
            elif residual is not None:
                y = self.matmul(x, self.weight, self.bias, residual.reshape(x.shape[0], -1),
                                self.kernel_residual_scale)
            else:
                y = self.matmul(x, self.weight) if self.bias is None else self.matmul(x, self.weight, self.bias)
            return y.reshape(*leading, self.out_features)
        y = self.project(x)
        if self.gelu:
            y = ops.gelu(y, approximate="tanh")
        y = y.reshape(*leading, self.out_features)
        if residual is not None:
            y = residual * self.residual_scale + y
        if norm is not None:
            y, _, _ = self.layer_norm(y, norm[0].astype(y.dtype), norm[1].astype(y.dtype))
        return y

    def project(self, x):
        """``x Wᵀ + b`` on MindSpore's ops for rows ``x [N, in]`` in the compute dtype: the training path, and
        what a variant such as :class:`glm_core.lora.LoRALinear` extends."""
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

    As the original: ``inv_freq = 1 / 10000^(2i/d)`` for the half dimension ``d``, rounded to float16
    (the reference keeps it as a float16 buffer), angles ``p · inv_freq`` repeated twice (rotate-half).
    """
    half = config.head_dim // 2
    inv_freq = (1.0 / (10000 ** (np.arange(0, half, 2, dtype=np.float32) / half))).astype(np.float16)
    positions = np.arange(config.seq_length + 1, dtype=np.float32)
    angles = np.outer(positions, inv_freq.astype(np.float32))
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


class SelfAttention(nn.Cell):
    """Multi-head attention with GLM's fused, per-head interleaved QKV: ``[heads, (q, k, v), head_dim]``."""

    def __init__(self, config: GLMConfig, layer_id: int, rotary: RotaryEmbedding2D, inference: bool):
        super().__init__()
        param_dtype, compute_dtype = mindspore_dtype(config.param_init_type), mindspore_dtype(config.compute_dtype)
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.query_key_value = Linear(config.hidden_size, 3 * config.hidden_size, True, inference,
                                      param_dtype, compute_dtype)
        self.dense = Linear(config.hidden_size, config.hidden_size, True, inference, param_dtype, compute_dtype,
                            residual_scale=config.residual_alpha, norm_epsilon=config.layernorm_epsilon)
        self.rotary = rotary
        # The original divides q by sqrt(d)·(layer_id + 1) and multiplies the scores back by (layer_id + 1)
        # in the softmax dtype: it keeps float16 scores in range. We do the same, so float32 matches too.
        self.layer_scale = float(layer_id + 1)
        self.query_scale = 1.0 / (math.sqrt(self.head_dim) * self.layer_scale)
        self.softmax_dtype = mindspore_dtype(config.softmax_compute_type)
        self.dropout = nn.Dropout(p=config.attention_dropout_rate) if config.attention_dropout_rate else None
        self.kernel = None  # inference in float32 on CPU: glm_core.kernels' rotary and attention (no dropout)
        if runs_cpu_kernels(inference, compute_dtype) and self.softmax_dtype == ms.float32:
            from glm_core.kernels import attention_operator, rotary_operator

            self.kernel, self.rotary_kernel = attention_operator(), rotary_operator(self.num_heads, self.head_dim)
            self.kernel_scale = Tensor([self.layer_scale], ms.float32)
            self.kernel_query_scale = Tensor([self.query_scale], ms.float32)

    def construct(self, x, rotary, mask, cache=None, cache_positions=None, residual=None, norm=None):
        """``x``: ``[B, S, hidden]``; ``rotary``: the position ids ``[B, 2, S]`` when the kernels run
        (``self.kernel``), which look the angles up themselves, else RotaryEmbedding2D's ``(cos, sin)``;
        ``mask``: bool ``[B, 1, S, K]``, True = masked.

        Without a cache, K = S. With ``cache`` (a :class:`glm_core.generation.KVCache`) the new keys and
        values are written at ``cache_positions`` and attention runs over the whole cache, K = its length.
        With ``residual``, returns ``residual * alpha + attention``, and with ``norm`` too, its layernorm
        (see :class:`Linear`).
        """
        batch, seq = x.shape[0], x.shape[1]
        if self.kernel is not None:  # the same arithmetic in two kernels; keys and values slot-major [K, B, H, D]
            query, key, value = self.rotary_kernel(self.query_key_value(x), rotary, self.rotary.cos_table,
                                                   self.rotary.sin_table, self.kernel_query_scale)
            if cache is not None:
                key, value = cache.update(cache_positions, key, value)
            context = self.kernel(query, key, value, mask, self.kernel_scale)
            return self.dense(context.reshape(batch, seq, -1), residual, norm)
        qkv = self.query_key_value(x).reshape(batch, seq, self.num_heads, 3 * self.head_dim)
        query, key, value = ops.split(qkv, self.head_dim, axis=-1)  # [B, S, H, D]
        cos, sin = rotary
        query = self.rotary.rotate(query, cos, sin) * self.query_scale
        key = self.rotary.rotate(key, cos, sin)
        query = query.transpose(0, 2, 1, 3)  # [B, H, S, D]
        if cache is not None:
            key, value = cache.update(cache_positions, key.transpose(1, 0, 2, 3), value.transpose(1, 0, 2, 3))
            key, value = key.transpose(1, 2, 0, 3), value.transpose(1, 2, 0, 3)  # [B, H, K, D]
        else:
            key, value = key.transpose(0, 2, 1, 3), value.transpose(0, 2, 1, 3)
        scores = ops.BatchMatMul(transpose_b=True)(query, key)
        scores = ops.masked_fill(scores, mask, ops.scalar_to_tensor(MASKED_SCORE, scores.dtype))
        probs = ops.softmax(scores.astype(self.softmax_dtype) * self.layer_scale, axis=-1).astype(value.dtype)
        if self.dropout is not None:
            probs = self.dropout(probs)
        context = ops.BatchMatMul()(probs, value).transpose(0, 2, 1, 3).reshape(batch, seq, -1)
        return self.dense(context, residual, norm)


class MLP(nn.Cell):
    """``dense_4h_to_h(gelu_tanh(dense_h_to_4h(x)))``."""

    def __init__(self, config: GLMConfig, inference: bool):
        super().__init__()
        param_dtype, compute_dtype = mindspore_dtype(config.param_init_type), mindspore_dtype(config.compute_dtype)
        self.dense_h_to_4h = Linear(config.hidden_size, config.inner_hidden_size, True, inference,
                                    param_dtype, compute_dtype, gelu=True)
        self.dense_4h_to_h = Linear(config.inner_hidden_size, config.hidden_size, True, inference, param_dtype,
                                    compute_dtype, residual_scale=config.residual_alpha,
                                    norm_epsilon=config.layernorm_epsilon)

    def construct(self, x, residual=None, norm=None):
        """With ``residual``, returns ``residual * alpha + mlp``, and with ``norm`` too, its layernorm (see
        :class:`Linear`)."""
        return self.dense_4h_to_h(self.dense_h_to_4h(x), residual, norm)  # dense_h_to_4h applies the GELU


class GLMBlock(nn.Cell):
    """One transformer layer with GLM's residual: ``ln(x) · alpha + f(ln(x))``.

    ``alpha = sqrt(2 · config.alpha_num_layers)``: 28 for every depth, as in the original (see GLMConfig).

    On glm_core's CPU kernels without dropout (``fuses_norms``) each layernorm runs inside the kernel of the
    Linear before it: called with ``next_norm``, the block takes ``input_layernorm(x)`` in place of ``x``
    and returns its output through ``next_norm`` (the gamma and beta of the next block's input_layernorm,
    or of the final one). With a KV cache as well, the whole block is one operator (``kernels/layer.cc``),
    which also writes the keys and values into the cache. The results have the same bits either way.
    """

    def __init__(self, config: GLMConfig, layer_id: int, rotary: RotaryEmbedding2D, inference: bool):
        super().__init__()
        param_dtype, ln_dtype = mindspore_dtype(config.param_init_type), mindspore_dtype(config.layernorm_compute_type)
        self.input_layernorm = LayerNorm(config.hidden_size, config.layernorm_epsilon, param_dtype, ln_dtype)
        self.attention = SelfAttention(config, layer_id, rotary, inference)
        self.post_attention_layernorm = LayerNorm(config.hidden_size, config.layernorm_epsilon, param_dtype, ln_dtype)
        self.mlp = MLP(config, inference)
        self.alpha = config.residual_alpha
        self.dropout = nn.Dropout(p=config.hidden_dropout_rate) if config.hidden_dropout_rate else None
        self.fuses_norms = (self.dropout is None and self.mlp.dense_4h_to_h.uses_kernel
                            and param_dtype == ms.float32 and ln_dtype == ms.float32)
        self.kernel = None  # with fused layernorms and a KV cache: the whole block in one operator
        if self.fuses_norms and self.attention.kernel is not None:
            from glm_core.kernels import layer_operator

            self.kernel = layer_operator()
            attention = self.attention
            self.kernel_scalars = Tensor([attention.query_scale, attention.layer_scale, self.alpha,
                                          config.layernorm_epsilon], ms.float32)

    def construct(self, x, rotary, mask, cache=None, cache_positions=None, next_norm=None):
        """``rotary``: what SelfAttention takes (position ids or cos and sin); see there."""
        if next_norm is not None and cache is not None and self.kernel is not None:  # kernels/layer.cc
            attention, mlp, post_norm = self.attention, self.mlp, self.post_attention_layernorm
            return self.kernel(x, rotary, mask, cache_positions, cache.key, cache.value, attention.rotary.cos_table,
                               attention.rotary.sin_table, attention.query_key_value.weight,
                               attention.query_key_value.bias, attention.dense.weight, attention.dense.bias,
                               post_norm.gamma, post_norm.beta, mlp.dense_h_to_4h.weight, mlp.dense_h_to_4h.bias,
                               mlp.dense_4h_to_h.weight, mlp.dense_4h_to_h.bias, next_norm[0], next_norm[1],
                               self.kernel_scalars)
        if next_norm is not None:  # x is input_layernorm(x) already; the output Linears apply the layernorms
            post_norm = (self.post_attention_layernorm.gamma, self.post_attention_layernorm.beta)
            mlp_input = self.attention(x, rotary, mask, cache, cache_positions, residual=x, norm=post_norm)
            return self.mlp(mlp_input, residual=mlp_input, norm=next_norm)
        attention_input = self.input_layernorm(x)
        if self.dropout is None:  # the output Linears add ln(x) * alpha as they write (no separate ops)
            x = self.attention(attention_input, rotary, mask, cache, cache_positions, residual=attention_input)
            mlp_input = self.post_attention_layernorm(x)
            return self.mlp(mlp_input, residual=mlp_input)
        # With dropout, on the outputs before the residual: the residual is added here.
        attention_output = self.dropout(self.attention(attention_input, rotary, mask, cache, cache_positions))
        x = attention_input * self.alpha + attention_output
        mlp_input = self.post_attention_layernorm(x)
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
    """Embeddings, the GLM blocks and the final layernorm: ids to hidden states."""

    def __init__(self, config: GLMConfig, inference: bool):
        super().__init__()
        param_dtype = mindspore_dtype(config.param_init_type)
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, param_dtype)
        self.rotary = RotaryEmbedding2D(config)
        self.layers = nn.CellList([GLMBlock(config, i, self.rotary, inference) for i in range(config.num_layers)])
        self.final_layernorm = LayerNorm(config.hidden_size, config.layernorm_epsilon, param_dtype,
                                         mindspore_dtype(config.layernorm_compute_type))
        self.compute_dtype = mindspore_dtype(config.compute_dtype)
        self.fused_norms = all(layer.fuses_norms for layer in self.layers)
        self.positions_to_kernels = all(layer.attention.kernel is not None for layer in self.layers)

    def construct(self, input_ids, position_ids, mask, caches=None, cache_positions=None):
        x = self.word_embeddings(input_ids).astype(self.compute_dtype)
        # The kernels look the rotary angles up from the position ids; MindSpore's ops take cos and sin.
        rotary = position_ids if self.positions_to_kernels else self.rotary(position_ids)
        if self.fused_norms:  # each layernorm but the first runs in the Linear before it (see GLMBlock)
            x = self.layers[0].input_layernorm(x)
            last = len(self.layers) - 1
            for index in range(len(self.layers)):
                norm = self.final_layernorm if index == last else self.layers[index + 1].input_layernorm
                cache = None if caches is None else caches[index]
                x = self.layers[index](x, rotary, mask, cache, cache_positions, (norm.gamma, norm.beta))
            return x
        if caches is None:
            for layer in self.layers:
                x = layer(x, rotary, mask)
        else:
            for layer, cache in zip(self.layers, caches):
                x = layer(x, rotary, mask, cache, cache_positions)
        return self.final_layernorm(x)


class GLMForPreTraining(nn.Cell):
    """ChatGLM-6B with its language-model head: ``model(input_ids) -> logits [batch, seq, vocab]``.

    Position ids and the attention mask are derived from ``input_ids`` (``<pad>``/``<sop>``/``[gMASK]``
    positions) unless given, as the tokenizer builds them. ``generate`` runs the KV-cache decoder.
    """

    def __init__(self, config: GLMConfig, inference: bool | None = None):
        super().__init__()
        self.config = config
        # Inference models (by default those with the KV cache on) run their Linears on the CPU kernel.
        self.inference = config.use_past if inference is None else inference
        self.transformer = GLMTransformer(config, self.inference)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, False, self.inference,
                              mindspore_dtype(config.param_init_type), mindspore_dtype(config.compute_dtype))
        self._decoders = None  # built on first generate(); see glm_core.generation

    def construct(self, input_ids, position_ids=None, attention_mask=None):
        if position_ids is None or attention_mask is None:
            derived_positions, derived_mask = positions_and_mask(input_ids, self.config)
            position_ids = derived_positions if position_ids is None else position_ids
            attention_mask = derived_mask if attention_mask is None else attention_mask
        hidden = self.transformer(input_ids, position_ids, attention_mask.astype(ms.bool_))
        return self.lm_head(hidden).astype(ms.float32)

    def generate(self, input_ids, **kwargs):
        """Generate continuations; see :func:`glm_core.generation.generate` for the arguments."""
        from glm_core.generation import generate

        return generate(self, input_ids, **kwargs)

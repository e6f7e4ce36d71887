"""ChatGLM-6B's weights by name: MindFormers' parameter names and their Hugging Face twins, every tensor's
shape, the rotary ``inv_freq`` buffer and the parameter count, all from a :class:`~glm_core.config.GLMConfig`.

Free of MindSpore (numpy only), so glm-convert maps and checks weights without loading the framework;
``model.py`` builds its rotary tables from :func:`inv_freq`, ``glm info`` counts with :func:`parameter_count`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from glm_core.config import GLMConfig

CHECKPOINT_NAME = "model.ckpt"  # the checkpoint inside a model folder written by save_pretrained / glm-convert

_HF_LAYERNORMS = ("input_layernorm", "post_attention_layernorm", "final_layernorm")


def mindformers_name(hf_name: str) -> str | None:
    """The MindFormers checkpoint name of a Hugging Face ChatGLM-6B tensor, or None for one we drop.

    ``word_embeddings.weight`` → ``word_embeddings.embedding_table``; layernorm ``weight``/``bias`` →
    ``gamma``/``beta``; ``rotary_emb.inv_freq`` is dropped (the model recomputes it); the rest keep their names.
    """
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    if hf_name.endswith("word_embeddings.weight"):
        return hf_name[: -len("weight")] + "embedding_table"
    prefix, _, leaf = hf_name.rpartition(".")
    if prefix.endswith(_HF_LAYERNORMS):
        return f"{prefix}.{ {'weight': 'gamma', 'bias': 'beta'}.get(leaf, leaf) }"
    return hf_name


def hf_name(mindformers: str) -> str:
    """The Hugging Face name of a MindFormers checkpoint tensor (inverse of :func:`mindformers_name`)."""
    if mindformers.endswith("word_embeddings.embedding_table"):
        return mindformers[: -len("embedding_table")] + "weight"
    prefix, _, leaf = mindformers.rpartition(".")
    if prefix.endswith(_HF_LAYERNORMS):
        return f"{prefix}.{ {'gamma': 'weight', 'beta': 'bias'}.get(leaf, leaf) }"
    return mindformers


WORD_EMBEDDINGS = "transformer.word_embeddings.weight"  # Hugging Face names of the tied pair
LM_HEAD = "lm_head.weight"


def inv_freq(config: GLMConfig) -> np.ndarray:
    """The reference's ``rotary_emb.inv_freq`` buffer, float16 ``[head_dim / 4]``: ``1 / 10000^(2i/d)`` for
    the half head ``d = head_dim / 2`` that each of the two rotary dimensions turns (rounded to float16, as
    the reference keeps it, so angles match its bits)."""
    half = config.head_dim // 2
    return (1.0 / (10000 ** (np.arange(0, half, 2, dtype=np.float32) / half))).astype(np.float16)


def hf_weight_shapes(config: GLMConfig) -> dict[str, tuple[int, ...]]:
    """Hugging Face name → shape of every tensor of ``THUDM/chatglm-6b``'s checkpoint, in its order.

    Linear weights are ``[out, in]``. Includes each layer's ``attention.rotary_emb.inv_freq`` buffer, which
    the MindSpore checkpoint drops.
    """
    hidden, inner, vocab = config.hidden_size, config.inner_hidden_size, config.vocab_size
    shapes: dict[str, tuple[int, ...]] = {WORD_EMBEDDINGS: (vocab, hidden)}
    for layer in range(config.num_layers):
        prefix = f"transformer.layers.{layer}."
        shapes.update({
            prefix + "input_layernorm.weight": (hidden,),
            prefix + "input_layernorm.bias": (hidden,),
            prefix + "attention.rotary_emb.inv_freq": inv_freq(config).shape,
            prefix + "attention.query_key_value.weight": (3 * hidden, hidden),
            prefix + "attention.query_key_value.bias": (3 * hidden,),
            prefix + "attention.dense.weight": (hidden, hidden),
            prefix + "attention.dense.bias": (hidden,),
            prefix + "post_attention_layernorm.weight": (hidden,),
            prefix + "post_attention_layernorm.bias": (hidden,),
            prefix + "mlp.dense_h_to_4h.weight": (inner, hidden),
            prefix + "mlp.dense_h_to_4h.bias": (inner,),
            prefix + "mlp.dense_4h_to_h.weight": (hidden, inner),
            prefix + "mlp.dense_4h_to_h.bias": (hidden,),
        })
    shapes["transformer.final_layernorm.weight"] = (hidden,)
    shapes["transformer.final_layernorm.bias"] = (hidden,)
    shapes[LM_HEAD] = (vocab, hidden)
    return shapes


def mindspore_weight_shapes(config: GLMConfig) -> dict[str, tuple[int, ...]]:
    """MindFormers checkpoint name → shape of every parameter of a ``GLMForPreTraining`` of ``config``, in
    the Hugging Face order (``inv_freq`` left out)."""
    return {mindformers_name(name): shape for name, shape in hf_weight_shapes(config).items()
            if mindformers_name(name) is not None}


def parameter_count(config: GLMConfig) -> int:
    """How many weights a ``GLMForPreTraining`` of ``config`` holds: embeddings, layers and ``lm_head``
    counted apart (the checkpoint stores both)."""
    return sum(int(np.prod(shape)) for shape in mindspore_weight_shapes(config).values())

"""The tensors of a Hugging Face ChatGLM-6B checkpoint for a given :class:`GLMConfig`, and the check
that a set of weights has exactly those names and shapes.

The table is computed from the config alone (building ``GLMForPreTraining`` would allocate the whole
model, 24 GB in float32 for the 6B shapes); a test holds it equal to the model's own parameter shapes.
"""

from __future__ import annotations

import numpy as np

from glm_convert.errors import WeightsMismatchError
from glm_core.config import GLMConfig
from glm_core.names import mindformers_name

LM_HEAD = "lm_head.weight"
WORD_EMBEDDINGS = "transformer.word_embeddings.weight"
SUPPORTED_DTYPES = ("float16", "float32")
_SHOWN_PER_PROBLEM = 20  # names listed per kind of problem before "... and N more"


def hf_weight_shapes(config: GLMConfig) -> dict[str, tuple[int, ...]]:
    """Hugging Face name → shape of every tensor of ``THUDM/chatglm-6b``'s checkpoint, in its order.

    Includes each layer's ``attention.rotary_emb.inv_freq`` buffer, which the MindSpore checkpoint drops.
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
    """MindFormers checkpoint name → shape (Linear weights ``[out, in]``), in the Hugging Face order."""
    return {mindformers_name(name): shape for name, shape in hf_weight_shapes(config).items()
            if mindformers_name(name) is not None}


def inv_freq(config: GLMConfig) -> np.ndarray:
    """The ``rotary_emb.inv_freq`` buffer of the reference: ``1 / 10000^(2i/d)``, d = head_dim / 2, float16."""
    half = config.head_dim // 2
    return (1.0 / (10000 ** (np.arange(0, half, 2, dtype=np.float32) / half))).astype(np.float16)


def check_weights(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]],
                  config: GLMConfig, source: str, *, dtypes: dict[str, str], where: dict[str, str] | None = None,
                  optional: tuple[str, ...] = ()) -> None:
    """Raise :class:`WeightsMismatchError` listing unknown, missing, mis-shaped and non-float tensors at once.

    ``found`` and ``expected`` map names to shapes, ``dtypes`` names to dtype names (``"float16"``);
    ``where`` names the file each found tensor came from; names in ``optional`` may be missing.
    """
    where = where or {}

    def located(name: str) -> str:
        return f"{name} ({where[name]})" if name in where else name

    unknown = [located(name) for name in found if name not in expected]
    missing = [name for name in expected if name not in found and name not in optional]
    mismatched = [f"{located(name)}: {found[name]}, expected {expected[name]}"
                  for name in found if name in expected and tuple(found[name]) != expected[name]]
    unsupported = [f"{located(name)}: {dtypes[name]}" for name in found
                   if name in expected and dtypes[name] not in SUPPORTED_DTYPES]
    if not (unknown or missing or mismatched or unsupported):
        return
    parts = []
    problems = (("unknown", unknown), ("missing", missing), ("wrong shape", mismatched),
                (f"not {' or '.join(SUPPORTED_DTYPES)}", unsupported))
    for title, names in problems:
        if names:
            shown = names[:_SHOWN_PER_PROBLEM]
            more = len(names) - len(shown)
            parts.append(f"{title} ({len(names)}): " + ", ".join(shown) + (f", ... and {more} more" if more else ""))
    raise WeightsMismatchError(
        f"{source} does not fit the model config ({config.num_layers} layers, hidden {config.hidden_size}, "
        f"MLP {config.inner_hidden_size}, vocab {config.vocab_size}); nothing was written: " + "; ".join(parts)
        + " (if the weights are another model's, give its config.json: config= in Python, --config on the "
          "command line)")

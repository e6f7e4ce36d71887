"""The check that a set of weights has exactly the names and shapes of a ChatGLM-6B checkpoint.

The tables themselves (Hugging Face and MindFormers names → shapes, the ``inv_freq`` buffer) live in
:mod:`glm_core.names`, computed from the config alone (building ``GLMForPreTraining`` would allocate the
whole model, 24 GB in float32 for the 6B shapes); they are imported here for glm-convert's modules.
"""

from __future__ import annotations

from glm_convert.errors import WeightsMismatchError
from glm_core.config import GLMConfig
from glm_core.names import LM_HEAD, WORD_EMBEDDINGS, hf_weight_shapes, inv_freq, mindspore_weight_shapes

__all__ = ["LM_HEAD", "SUPPORTED_DTYPES", "WORD_EMBEDDINGS", "check_weights", "hf_weight_shapes", "inv_freq",
           "mindspore_weight_shapes"]

SUPPORTED_DTYPES = ("float16", "float32")
_SHOWN_PER_PROBLEM = 20  # names listed per kind of problem before "... and N more"


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

"""glm-convert: Hugging Face ChatGLM-6B (torch) checkpoints → MindSpore ``.ckpt``, and back.

``convert_hf_to_ms(src, dst)`` writes a checkpoint with MindFormers' parameter names that glm-core and
MindFormers load alike; ``convert_ms_to_hf(ckpt, dst_dir)`` writes a Hugging Face folder from one. Both
stream tensors shard by shard and write nothing unless every tensor fits the model config.
"""

from glm_convert.__about__ import __version__
from glm_convert.errors import ConversionError, UnreadableFileError, WeightsMismatchError
from glm_convert.hf_to_ms import convert_hf_to_ms
from glm_convert.ms_to_hf import convert_ms_to_hf
from glm_convert.summary import ConversionSummary

__all__ = [
    "ConversionError",
    "ConversionSummary",
    "UnreadableFileError",
    "WeightsMismatchError",
    "__version__",
    "convert_hf_to_ms",
    "convert_ms_to_hf",
]

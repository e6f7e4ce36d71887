"""glm-core: the ChatGLM-6B network in MindSpore, a static KV-cache decoder and generation."""

from glm_core.__about__ import __version__
from glm_core.checkpoint import CheckpointMismatchError, load_checkpoint, save_model_checkpoint
from glm_core.config import GLMConfig
from glm_core.generation import GenerationStats, generate
from glm_core.model import GLMForPreTraining

__all__ = [
    "CheckpointMismatchError",
    "GLMConfig",
    "GLMForPreTraining",
    "GenerationStats",
    "__version__",
    "generate",
    "load_checkpoint",
    "save_model_checkpoint",
]

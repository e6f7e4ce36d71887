"""glm-core: the ChatGLM-6B network in MindSpore, a KV-cache decoder, generation, chat and pipelines."""

from glm_core.__about__ import __version__
from glm_core.auto import AutoConfig, AutoModel, AutoTokenizer, ModelNotFoundError
from glm_core.chat import GLMChatModel, process_response
from glm_core.checkpoint import CheckpointMismatchError, load_checkpoint, save_model_checkpoint
from glm_core.config import GLMConfig
from glm_core.generation import GenerationStats, generate
from glm_core.model import GLMForPreTraining
from glm_core.pipeline import TextGenerationPipeline, pipeline

__all__ = [
    "AutoConfig",
    "AutoModel",
    "AutoTokenizer",
    "CheckpointMismatchError",
    "GLMChatModel",
    "GLMConfig",
    "GLMForPreTraining",
    "GenerationStats",
    "ModelNotFoundError",
    "TextGenerationPipeline",
    "__version__",
    "generate",
    "load_checkpoint",
    "pipeline",
    "process_response",
    "save_model_checkpoint",
]

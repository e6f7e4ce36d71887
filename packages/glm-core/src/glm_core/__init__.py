"""glm-core: the ChatGLM-6B network in MindSpore, a KV-cache decoder, generation, chat and pipelines.

Names are imported on first use, so ``from glm_core import GLMConfig`` (or ``glm_core.names``) does not
load MindSpore: glm-convert maps checkpoints without paying for the framework.
"""

from __future__ import annotations

import importlib

from glm_core.__about__ import __version__

_EXPORTS = {
    "AutoConfig": "glm_core.auto",
    "AutoModel": "glm_core.auto",
    "AutoTokenizer": "glm_core.auto",
    "ModelNotFoundError": "glm_core.auto",
    "GLMChatModel": "glm_core.chat",
    "process_response": "glm_core.chat",
    "KVCache": "glm_core.model",
    "CheckpointMismatchError": "glm_core.checkpoint",
    "load_checkpoint": "glm_core.checkpoint",
    "save_model_checkpoint": "glm_core.checkpoint",
    "GLMConfig": "glm_core.config",
    "GenerationConfig": "glm_core.generation_config",
    "GenerationStats": "glm_core.generation",
    "Generator": "glm_core.generation",
    "generate": "glm_core.generation",
    "generate_tokens": "glm_core.generation",
    "GLMForPreTraining": "glm_core.model",
    "TextGenerationPipeline": "glm_core.text_generation",
    "pipeline": "glm_core.text_generation",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'glm_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__

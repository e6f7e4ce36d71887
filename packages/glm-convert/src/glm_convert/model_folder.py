"""What sits beside the weights in a model folder: the config and the tokenizer files.

Our folder (``convert_hf_to_ms`` with a folder destination) holds ``model.ckpt``, our ``config.json``
(:meth:`GLMConfig.save_pretrained`'s format) and the tokenizer's ``ice_text.model`` and
``tokenizer_config.json``, as ``glm_core``'s ``GLMChatModel.save_pretrained`` writes it and ``AutoModel``
reads it; a Hugging Face folder holds the same tokenizer files and THUDM's config.json.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Union

from glm_core.config import GLMConfig
from glm_core.names import CHECKPOINT_NAME

logger = logging.getLogger("glm_convert")

__all__ = ["CHECKPOINT_NAME", "CONFIG_NAME", "TOKENIZER_FILES", "config_file", "folder_of", "hf_config",
           "load_config"]

CONFIG_NAME = "config.json"
TOKENIZER_FILES = ("ice_text.model", "tokenizer_config.json")

ConfigSource = Union[GLMConfig, str, os.PathLike, None]


def folder_of(path: Path) -> Path:
    """The folder whose config and tokenizer files go with ``path`` (a folder, or a file in one)."""
    return path if path.is_dir() else path.parent


def load_config(config: ConfigSource, weights: Path) -> GLMConfig:
    """The model config: ``config`` itself, the config.json/folder/MindFormers YAML it names, or else the
    ``config.json`` beside ``weights``; without any, ChatGLM-6B's (said in a log line).
    """
    if isinstance(config, GLMConfig):
        return config
    file = config_file(config, weights)
    if file is not None:
        return GLMConfig.from_yaml(file) if file.suffix in (".yaml", ".yml") else GLMConfig.from_pretrained(file)
    logger.info("no %s beside %s: assuming ChatGLM-6B's shapes (pass --config for another model)", CONFIG_NAME,
                weights)
    return GLMConfig.from_name("glm_6b")


def config_file(config: ConfigSource, weights: Path) -> Path | None:
    """The file :func:`load_config` reads for the same arguments; None for a :class:`GLMConfig` or the preset."""
    if isinstance(config, GLMConfig):
        return None
    if config is not None:
        path = Path(config)
        return path / CONFIG_NAME if path.is_dir() else path
    beside = folder_of(weights) / CONFIG_NAME
    return beside if beside.is_file() else None


def hf_config(config: GLMConfig, torch_dtype: str) -> dict[str, Any]:
    """THUDM/chatglm-6b's ``config.json`` for ``config``, as its ``ChatGLMConfig`` reads it."""
    return {
        "architectures": ["ChatGLMModel"],
        "auto_map": {
            "AutoConfig": "configuration_chatglm.ChatGLMConfig",
            "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
            "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        },
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "mask_token_id": config.mask_token_id,
        "gmask_token_id": config.gmask_token_id,
        "pad_token_id": config.pad_token_id,
        "hidden_size": config.hidden_size,
        "inner_hidden_size": config.inner_hidden_size,
        "layernorm_epsilon": config.layernorm_epsilon,
        "max_sequence_length": config.seq_length,
        "model_type": "chatglm",
        "num_attention_heads": config.num_heads,
        "num_layers": config.num_layers,
        "position_encoding_2d": config.position_encoding_2d,
        "quantization_bit": 0,
        "pre_seq_len": None,
        "prefix_projection": False,
        "tie_word_embeddings": True,
        "torch_dtype": torch_dtype,
        "use_cache": True,
        "vocab_size": config.vocab_size,
    }

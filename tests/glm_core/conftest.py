"""glm-core fixtures: the golden tiny model, converted from its Hugging Face shards without torch."""

import shutil

import mindspore as ms
import pytest
from torch_free_weights import read_mindformers_state

from glm_core import GLMChatModel, GLMConfig, GLMForPreTraining
from glm_core.checkpoint import load_state, save_checkpoint
from glm_tokenizer import ChatGLMTokenizer

TOKENIZER_FILES = ("ice_text.model", "tokenizer_config.json")

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")


@pytest.fixture(scope="session")
def golden_config(golden_hf_dir) -> GLMConfig:
    return GLMConfig.from_pretrained(golden_hf_dir)


@pytest.fixture(scope="session")
def golden_state(golden_hf_dir) -> dict:
    """The golden weights under MindFormers' names (float16 arrays, as on disk)."""
    return read_mindformers_state(golden_hf_dir)


@pytest.fixture(scope="session")
def golden_ckpt(golden_state, tmp_path_factory):
    """The golden weights as a MindSpore .ckpt file."""
    return save_checkpoint(golden_state, tmp_path_factory.mktemp("golden") / "glm_tiny.ckpt")


@pytest.fixture(scope="session")
def golden_model(golden_config, golden_state) -> GLMForPreTraining:
    """The golden model, float32, an inference model (Linears on glm_core.kernels' CPU kernel)."""
    model = GLMForPreTraining(golden_config, inference=True)
    load_state(model, golden_state, source="golden")
    return model


@pytest.fixture(scope="session")
def chat_model(golden_config, golden_state) -> GLMChatModel:
    """The golden weights in the chat model (KV cache, CPU kernel); shared, so graphs compile once."""
    model = GLMChatModel(golden_config)
    load_state(model, golden_state, source="golden")
    return model


@pytest.fixture(scope="session")
def tokenizer(golden_hf_dir) -> ChatGLMTokenizer:
    return ChatGLMTokenizer.from_pretrained(golden_hf_dir)


def make_model_folder(directory, golden_hf_dir, golden_ckpt):
    """A model folder as glm-convert writes it: config.json, the .ckpt and the tokenizer files."""
    GLMConfig.from_pretrained(golden_hf_dir).save_pretrained(directory)
    shutil.copy(golden_ckpt, directory)
    for name in TOKENIZER_FILES:
        shutil.copy(golden_hf_dir / name, directory)
    return directory


@pytest.fixture(scope="session")
def model_dir(golden_hf_dir, golden_ckpt, tmp_path_factory):
    """A model folder holding the golden weights and tokenizer."""
    return make_model_folder(tmp_path_factory.mktemp("model"), golden_hf_dir, golden_ckpt)

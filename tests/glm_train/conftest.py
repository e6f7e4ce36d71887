"""glm-train fixtures: the golden tiny model and its tokenizer, built from the golden HF shards without torch.

glm-train's tests run without torch. The shard reader is glm-core's test helper
(``tests/glm_core/torch_free_weights.py``), imported from that folder rather than copied.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")  # before MindSpore is first imported: its INFO logs bury failures

import mindspore as ms
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "glm_core"))
from torch_free_weights import read_hf_folder

from glm_core import GLMChatModel, GLMConfig
from glm_core.checkpoint import load_state, mindformers_name
from glm_tokenizer import ChatGLMTokenizer

ADGEN_SAMPLE = Path(__file__).parents[2] / "packages" / "glm-data" / "src" / "glm_data" / "sample"

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")


@pytest.fixture(scope="session")
def golden_config(golden_hf_dir) -> GLMConfig:
    return GLMConfig.from_pretrained(golden_hf_dir)


@pytest.fixture(scope="session")
def golden_state(golden_hf_dir) -> dict:
    """The golden weights under MindFormers' names (float16 arrays, as on disk)."""
    state = {}
    for name, array in read_hf_folder(golden_hf_dir).items():
        target = mindformers_name(name)
        if target is not None:
            state[target] = array
    return state


@pytest.fixture(scope="session")
def chat_model(golden_config, golden_state) -> GLMChatModel:
    """The golden weights in glm-core's inference model; shared, so its decoder graphs compile once."""
    model = GLMChatModel(golden_config)
    load_state(model, golden_state, source="golden")
    return model


@pytest.fixture(scope="session")
def tokenizer(golden_hf_dir) -> ChatGLMTokenizer:
    return ChatGLMTokenizer.from_pretrained(golden_hf_dir)


@pytest.fixture(scope="session")
def adgen_dev_file() -> Path:
    """The ADGEN sample's dev split shipped with glm-data (JSON lines of content and summary)."""
    return ADGEN_SAMPLE / "dev.json"

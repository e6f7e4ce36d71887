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
from torch_free_weights import read_mindformers_state

from glm_core import GLMChatModel, GLMConfig
from glm_core.checkpoint import load_state
from glm_tokenizer import ChatGLMTokenizer

ADGEN_SAMPLE = Path(__file__).parents[2] / "packages" / "glm-data" / "src" / "glm_data" / "sample"

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")


@pytest.fixture(scope="session")
def golden_config(golden_hf_dir) -> GLMConfig:
    return GLMConfig.from_pretrained(golden_hf_dir)


@pytest.fixture(scope="session")
def golden_state(golden_hf_dir) -> dict:
    """The golden weights under MindFormers' names (float16 arrays, as on disk)."""
    return read_mindformers_state(golden_hf_dir)


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


@pytest.fixture(scope="session")
def adgen_train_lines() -> list:
    """The lines of the ADGEN sample's train split shipped with glm-data."""
    return (ADGEN_SAMPLE / "train.json").read_text(encoding="utf-8").splitlines(keepends=True)


@pytest.fixture(scope="session")
def golden_model_dir(golden_hf_dir, golden_state, tmp_path_factory) -> Path:
    """A model folder (config.json, model.ckpt, tokenizer) holding the golden weights, as glm-convert writes one."""
    import shutil

    from glm_core.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("golden_model")
    GLMConfig.from_pretrained(golden_hf_dir).save_pretrained(folder)
    save_checkpoint({name: array for name, array in golden_state.items()}, folder / "model.ckpt")
    for name in ("ice_text.model", "tokenizer_config.json"):
        shutil.copy(golden_hf_dir / name, folder)
    return folder


@pytest.fixture(scope="session")
def make_train_file(golden_hf_dir, adgen_train_lines, tmp_path_factory):
    """``make_train_file(records)``: training records (32 + 32 tokens, the golden tokenizer) of the sample's
    first ``records`` lines, written once per size."""
    from glm_data import adgen_to_mindrecord

    made = {}

    def make(records: int) -> Path:
        if records not in made:
            folder = tmp_path_factory.mktemp(f"train_{records}")
            lines = folder / "train.json"
            lines.write_text("".join(adgen_train_lines[:records]), encoding="utf-8")
            made[records] = folder / "train.mindrecord"
            adgen_to_mindrecord(lines, golden_hf_dir / "ice_text.model", made[records], max_source_length=32,
                                max_target_length=32)
        return made[records]

    return make

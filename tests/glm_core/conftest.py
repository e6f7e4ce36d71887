"""glm-core fixtures: the golden tiny model, converted from its Hugging Face shards without torch."""

import mindspore as ms
import pytest
from torch_free_weights import read_hf_folder

from glm_core import GLMConfig, GLMForPreTraining
from glm_core.checkpoint import load_state, mindformers_name, save_checkpoint

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
def golden_ckpt(golden_state, tmp_path_factory):
    """The golden weights as a MindSpore .ckpt file."""
    return save_checkpoint(golden_state, tmp_path_factory.mktemp("golden") / "glm_tiny.ckpt")


@pytest.fixture(scope="session")
def golden_model(golden_config, golden_state) -> GLMForPreTraining:
    """The golden model, float32, inference layout (Linear weights held [in, out])."""
    model = GLMForPreTraining(golden_config, in_out_layout=True)
    load_state(model, golden_state, source="golden")
    return model

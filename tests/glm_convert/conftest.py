"""glm-convert fixtures: the golden tiny checkpoint in every source layout the converter reads."""

import shutil

import mindspore as ms
import pytest
import torch
from golden_layouts import PTH, SAFETENSORS, SHARDED_BIN, SINGLE_BIN, copy_model_files, read_torch_folder
from safetensors.torch import save_file

from glm_convert import convert_hf_to_ms
from glm_core import GLMConfig

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")


@pytest.fixture(scope="session")
def golden_config(golden_hf_dir) -> GLMConfig:
    return GLMConfig.from_pretrained(golden_hf_dir)


@pytest.fixture(scope="session")
def golden_torch_state(golden_hf_dir) -> dict:
    """The golden weights: Hugging Face names → float16 torch tensors (``inv_freq`` and ``lm_head`` included)."""
    return read_torch_folder(golden_hf_dir)


@pytest.fixture(scope="session")
def golden_sources(golden_hf_dir, golden_torch_state, tmp_path_factory) -> dict:
    """The golden weights as the HF shards, one merged ``pytorch_model.bin``, a ``.pth`` and safetensors shards."""
    root = tmp_path_factory.mktemp("sources")
    single = root / "single"
    copy_model_files(golden_hf_dir, single)
    torch.save(golden_torch_state, single / "pytorch_model.bin")
    pth = root / "pth" / "pt_glm_6b.pth"
    pth.parent.mkdir()
    torch.save(golden_torch_state, pth)
    shards = root / "safetensors"
    copy_model_files(golden_hf_dir, shards)
    names = list(golden_torch_state)
    for number, part in enumerate((names[: len(names) // 2], names[len(names) // 2:]), start=1):
        save_file({name: golden_torch_state[name] for name in part},
                  shards / f"model-0000{number}-of-00002.safetensors", metadata={"format": "pt"})
    return {SHARDED_BIN: golden_hf_dir, SINGLE_BIN: single, PTH: pth, SAFETENSORS: shards}


@pytest.fixture(scope="session")
def golden_ckpt(golden_hf_dir, tmp_path_factory):
    """The golden HF shards converted to a MindSpore checkpoint (float16, as the source)."""
    path = tmp_path_factory.mktemp("converted") / "glm_tiny.ckpt"
    convert_hf_to_ms(golden_hf_dir, path)
    return path


@pytest.fixture
def hf_copy(golden_hf_dir, tmp_path):
    """A writable copy of the golden HF folder, for tests that damage it."""
    copy = tmp_path / "hf"
    shutil.copytree(golden_hf_dir, copy)
    return copy

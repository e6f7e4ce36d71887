"""Helpers of the glm-convert tests: the source layouts and reading a folder of torch shards."""

import shutil

import torch

SHARDED_BIN, SINGLE_BIN, PTH, SAFETENSORS = "sharded .bin", "single .bin", ".pth", "safetensors"
TOKENIZER_AND_CONFIG = ("config.json", "ice_text.model", "tokenizer_config.json")


def read_torch_folder(folder) -> dict:
    """Every tensor of a Hugging Face folder of .bin shards, as torch tensors."""
    state = {}
    for shard in sorted(folder.glob("pytorch_model*.bin")):
        state.update(torch.load(shard, map_location="cpu", weights_only=True))
    return state


def copy_model_files(source, destination) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_AND_CONFIG:
        shutil.copyfile(source / name, destination / name)

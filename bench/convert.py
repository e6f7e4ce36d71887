"""Speed and peak memory of ``glm-convert hf-to-ms`` on a checkpoint with ChatGLM-6B's tensor shapes.

Builds a synthetic Hugging Face folder under /tmp: the 6B model's shapes (vocabulary 130,528, hidden
4,096, MLP 16,384) but 2 layers instead of 28, float16, HF names (``inv_freq`` and ``lm_head`` included),
split into shards as transformers splits them (default "1GB", which gives the word embeddings and the
head a shard each). Then it runs the converter as users do, in its own process, and prints seconds,
MB/s and the process's peak RSS next to the largest shard. Streaming holds the peak to
1.5 × the largest shard + 300 MB; the exit status is 1 when it does not. Everything is deleted afterwards.

    hatch run pkg-convert:python bench/convert.py [--layers 2] [--max-shard-size 1GB]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from glm_convert.hf_weights import TORCH_INDEX
from glm_convert.layout import hf_weight_shapes, inv_freq
from glm_convert.model_folder import hf_config
from glm_convert.ms_to_hf import parse_size, plan_shards
from glm_core import GLMConfig

MB = 1e6


def synthetic_tensor(shape: tuple[int, ...], block: np.ndarray) -> torch.Tensor:
    """A float16 tensor of ``shape`` filled by repeating a random block (random values, no slow sampling)."""
    return torch.from_numpy(np.resize(block, shape))


def build_checkpoint(folder: Path, config: GLMConfig, max_shard_bytes: int) -> list[Path]:
    """Write a sharded Hugging Face folder for ``config``; returns the shard paths."""
    shapes = hf_weight_shapes(config)
    sizes = {name: int(np.prod(shape)) * 2 for name, shape in shapes.items()}
    shards = plan_shards(sizes, max_shard_bytes)
    names = [f"pytorch_model-{n:05d}-of-{len(shards):05d}.bin" for n in range(1, len(shards) + 1)]
    block = (np.random.default_rng(0).standard_normal(1 << 22) * 0.02).astype(np.float16)
    for shard_name, members in zip(names, shards):
        state = {name: torch.from_numpy(inv_freq(config)) if name.endswith("inv_freq")
                 else synthetic_tensor(shapes[name], block) for name in members}
        torch.save(state, folder / shard_name)
        del state
    index = {"metadata": {"total_size": sum(sizes.values())},
             "weight_map": {name: shard for shard, members in zip(names, shards) for name in members}}
    (folder / TORCH_INDEX).write_text(json.dumps(index, indent=2))
    (folder / "config.json").write_text(json.dumps(hf_config(config, "float16"), indent=2))
    return [folder / name for name in names]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2, help="transformer layers (the real model has 28)")
    parser.add_argument("--max-shard-size", default="1GB", help="shard size limit, as transformers reads it")
    args = parser.parse_args()

    config = GLMConfig.from_name("glm_6b", num_layers=args.layers)
    workdir = Path(tempfile.mkdtemp(prefix="glm-convert-bench-", dir="/tmp"))
    try:
        source = workdir / "hf"
        source.mkdir()
        started = time.perf_counter()
        shards = build_checkpoint(source, config, parse_size(args.max_shard_size))
        sizes = [shard.stat().st_size for shard in shards]
        print(f"synthetic ChatGLM-6B shapes, {args.layers} layers, float16: {len(shards)} shards, "
              f"{sum(sizes) / MB:,.0f} MB, largest {max(sizes) / MB:,.0f} MB "
              f"(built in {time.perf_counter() - started:.1f} s)")

        target = workdir / "glm.ckpt"
        command = [sys.executable, "-m", "glm_convert.cli", "hf-to-ms", str(source), str(target), "--quiet"]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
        bound = 1.5 * max(sizes) + 300 * MB
        print(f"glm-convert: {result.stdout.strip()}")
        print(f"process: {seconds:.1f} s with imports, {sum(sizes) / MB / seconds:,.0f} MB/s; "
              f"peak RSS {peak / MB:,.0f} MB vs largest shard {max(sizes) / MB:,.0f} MB "
              f"(bound 1.5 × shard + 300 MB = {bound / MB:,.0f} MB): {'ok' if peak <= bound else 'OVER'}")
        return 0 if peak <= bound else 1
    finally:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    sys.exit(main())

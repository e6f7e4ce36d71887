"""Peak memory and time of ``AutoModel.from_pretrained`` on a checkpoint with ChatGLM-6B's widths.

Writes a model folder under a temporary directory: ChatGLM-6B's widths (vocabulary 130,528, hidden 4,096,
MLP 16,384, 32 heads) with ``--layers`` layers (default 4; the released model has 28), float16 as
released or, with ``--weights int8|int4``, quantized as ``glm-convert hf-to-ms --quantize`` writes it,
through the streaming checkpoint writer (no model is built). Then it times reading the file
once into new memory (after writing it, so from the page cache, as the load then reads it), and loads the folder
with the public API in a fresh process, which reports its own import and load times; the parent reads
that process's peak RSS (ru_maxrss). Targets: peak RSS <= 1.2 x checkpoint size + 500 MB, and load time
<= 1.5 x the time to read the file. The exit status is 1 when a target is missed.

``--generate N`` then loads it again in another process and generates N tokens greedily (float16
weights: slow on CPU), printing the time. Everything is deleted afterwards unless ``--keep``.

    hatch run python bench/load.py [--layers 4] [--weights float16|int8|int4] [--generate 4] [--dir /tmp] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from glm_convert.layout import mindspore_weight_shapes
from glm_core import GLMConfig
from glm_core import quantize as formats
from glm_core.checkpoint_file import CheckpointWriter
from glm_core.names import CHECKPOINT_NAME

MB = 1e6
TOKENIZER_ASSETS = Path(__file__).resolve().parents[1] / "packages/glm-convert/src/glm_convert/assets/tiny_hf"
READ_CHUNK = 1 << 30

# Runs in a fresh process: argv = folder, overrides (JSON), tokens to generate.
CHILD = r"""
import json, sys, time
started = time.perf_counter()
import mindspore as ms
ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
from glm_core import AutoModel, generate
imported = time.perf_counter()
model = AutoModel.from_pretrained(sys.argv[1], **json.loads(sys.argv[2]))
loaded = time.perf_counter()
result = {"import_s": imported - started, "load_s": loaded - imported,
          "param_dtype": str(model.lm_head.weight.dtype),
          "layer_dtype": str(model.transformer.layers[0].mlp.dense_h_to_4h.weight.dtype)}
tokens = int(sys.argv[3])
if tokens:
    prompt = [5, 64, 91, 130001, 130004]
    output = generate(model, [prompt], max_new_tokens=tokens)
    result["generate_s"] = time.perf_counter() - loaded
    result["generated"] = output[0][len(prompt):].tolist()
print(json.dumps(result))
"""


def write_model_folder(folder: Path, config: GLMConfig, weights: str = "float16") -> Path:
    """A model folder for ``config``: float16 weights (a repeated random block), or its Linears quantized to
    ``weights`` (int8, int4) as glm-convert writes them; config and tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    block = (np.random.default_rng(0).standard_normal(1 << 22) * 0.02).astype(np.float16)
    with CheckpointWriter(folder / CHECKPOINT_NAME) as writer:
        for name, shape in mindspore_weight_shapes(config).items():
            values = np.ones(shape, np.float16) if name.endswith("gamma") else np.resize(block, shape)
            if weights == "float16":
                writer.add(name, values)
            elif formats.linear_storage(name, weights) is not None:
                stored, scales = formats.quantize(values, formats.linear_storage(name, weights))
                writer.add(name, stored)
                if scales is not None:
                    writer.add(formats.scale_name(name), scales)
            else:
                writer.add(name, values, np.float16 if name.endswith("embedding_table") else np.float32)
    config.save_pretrained(folder)
    for name in ("ice_text.model", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZER_ASSETS / name, folder / name)
    return folder / CHECKPOINT_NAME


def read_seconds(path: Path) -> float:
    """Seconds to read ``path`` into new memory of its size, as a load must (the pages are fresh)."""
    started = time.perf_counter()
    data = memoryview(np.empty(path.stat().st_size, np.uint8))
    with open(path, "rb", buffering=0) as file:
        filled = 0
        while filled < len(data):
            filled += file.readinto(data[filled:filled + READ_CHUNK])
    return time.perf_counter() - started


def run_child(folder: Path, overrides: dict, tokens: int) -> tuple[dict, int]:
    """Load ``folder`` in a fresh process; returns what it printed and its peak RSS in bytes."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), json.dumps(overrides), str(tokens)],
                                   stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, not all children's
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if process.returncode:
            sys.exit(f"loading failed (exit status {process.returncode}):\n{err.read()[-3000:]}")
        return json.loads(out.read().strip().splitlines()[-1]), usage.ru_maxrss * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4, help="GLM blocks (default 4; ChatGLM-6B has 28)")
    parser.add_argument("--weights", choices=("float16", "int8", "int4"), default="float16",
                        help="how the checkpoint stores the Linears (default float16, as released)")
    parser.add_argument("--generate", type=int, default=0, metavar="N", help="then generate N tokens")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the folder (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the model folder")
    args = parser.parse_args()
    config = GLMConfig.from_name("glm_6b", num_layers=args.layers, seq_length=512)
    root = Path(tempfile.mkdtemp(prefix="glm-load-", dir=args.dir))
    try:
        started = time.perf_counter()
        checkpoint = write_model_folder(root / "model", config, args.weights)
        size = checkpoint.stat().st_size
        print(f"checkpoint: {config.num_layers} layers at ChatGLM-6B's widths, {args.weights}, {size / MB:,.0f} MB "
              f"(written in {time.perf_counter() - started:.1f} s)")
        read = read_seconds(checkpoint)
        print(f"reading the file into new memory: {read:.2f} s ({size / MB / read:,.0f} MB/s)")
        result, peak = run_child(root / "model", {}, 0)
        bound = 1.2 * size + 500 * MB
        print(f"AutoModel.from_pretrained: {result['load_s']:.2f} s ({result['load_s'] / read:.2f} x reading "
              f"the file; target <= 1.5 x), after {result['import_s']:.1f} s of imports; LM head "
              f"{result['param_dtype']}, layers {result['layer_dtype']}")
        print(f"peak RSS of the loading process: {peak / MB:,.0f} MB; bound 1.2 x {size / MB:,.0f} MB + 500 MB "
              f"= {bound / MB:,.0f} MB")
        if args.generate:
            generated, _ = run_child(root / "model", {}, args.generate)
            print(f"load + {args.generate} greedy tokens: {generated['generate_s']:.1f} s after the load "
                  f"(compilation included): {generated['generated']}")
        return 0 if peak <= bound and result["load_s"] <= 1.5 * read else 1
    finally:
        if args.keep:
            print(f"kept {root / 'model'}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

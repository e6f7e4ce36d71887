"""Regenerate ``tiny_hf/``: a small ChatGLM-6B-shaped checkpoint with fresh random weights, in the Hugging
Face layout of ``THUDM/chatglm-6b`` (float16 ``.bin`` shards with their index, config.json, tokenizer).

    python -m glm_convert.assets.generate [--out DIR]     # rewrites tiny_hf/ here, identically

The weights are drawn as a new ChatGLM-6B is initialised (Linear weights and the embedding table from
Normal(0, 0.02) with a fixed seed, biases 0, layernorms 1 and 0; the head tied to the embeddings), at a width
(128, 2 layers, 4 heads) that fine-tunes on glm-data's ADGEN sample within the demo's few minutes. The
tokenizer files are the golden test vocabulary's (3088 pieces, special ids 3000-3005).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from glm_convert.ms_to_hf import convert_ms_to_hf
from glm_core.checkpoint import save_checkpoint
from glm_core.config import GLMConfig

HERE = Path(__file__).parent
SEED = 20231203
SHAPE = dict(hidden_size=128, num_layers=2, num_heads=4, inner_hidden_size=512)
HF_CONFIG_CHANGES = {"hidden_size": 128, "num_layers": 2, "num_attention_heads": 4, "inner_hidden_size": 512}


def fresh_weights(config: GLMConfig, seed: int = SEED) -> dict[str, np.ndarray]:
    """float16 weights by MindFormers name, drawn as a new model draws them (tied head included)."""
    from glm_core.model import GLMForPreTraining

    rng = np.random.default_rng(seed)
    state = {}
    for parameter in GLMForPreTraining(config).get_parameters():
        name, shape = parameter.name, tuple(parameter.shape)
        if name.endswith(("gamma",)):
            value = np.ones(shape)
        elif name.endswith(("beta", "bias")):
            value = np.zeros(shape)
        else:
            value = rng.normal(0.0, 0.02, shape)
        state[name] = value.astype(np.float16)
    state["lm_head.weight"] = state["transformer.word_embeddings.embedding_table"]
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "tiny_hf")
    args = parser.parse_args()
    tokenizer = HERE / "tiny_hf"
    hf_config = json.loads((tokenizer / "config.json").read_text(encoding="utf-8"))
    config = GLMConfig.from_dict({**hf_config, **HF_CONFIG_CHANGES})
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "ms"
        config.save_pretrained(folder)
        save_checkpoint(fresh_weights(config), folder / "model.ckpt")
        for name in ("ice_text.model", "tokenizer_config.json"):
            shutil.copy(tokenizer / name, folder / name)
        converted = Path(scratch) / "hf"
        convert_ms_to_hf(folder / "model.ckpt", converted, max_shard_size=1_000_000)
        (converted / "config.json").write_text(json.dumps({**hf_config, **HF_CONFIG_CHANGES}, indent=2) + "\n",
                                               encoding="utf-8")
        if args.out.exists():
            shutil.rmtree(args.out)
        shutil.copytree(converted, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

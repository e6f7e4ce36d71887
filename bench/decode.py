"""Decode speed of the KV-cache decoder against the machine's weight-streaming ceiling.

Decoding one token is matrix-vector work: every weight of every layer and of the LM head is read once
per step, so the speed limit is memory bandwidth. This bench runs ``glm_bench`` (the real 130528-row
vocabulary, hidden 1024, 8 layers; random float32 weights), batch 1, a 128-token prompt and 128 new
tokens, and prints beside the decode speed the machine's ceiling: the best bandwidth of numpy's float32
matrix-vector product over the LM head's matrix, in either layout, and the tokens/s it allows for the bytes
a step reads. ``--weights`` stores the Linears as float32, float16, int8 or int4 (``model.quantize``), each
in turn in the same run, from the same random weights; the speed of each is also given as a multiple of
float32's when that is among them, and its quality: how often a full forward over the prompt picks float32's
top token, and how far its logits move. Decode time is wall time per step, its
inputs and its token choice included (``GenerationStats``). The ceiling is measured right before and
right after every timed generation, and each generation is compared with the better of its two: on a
shared machine the bandwidth drifts by 10-20 % within a minute, and a ceiling taken at another moment
would compare the decoder with a different machine.

    hatch run python bench/decode.py [--threads 2] [--prompt 128] [--new 128] [--config glm_bench]
        [--weights float32 float16 int8 int4] [--group-size 64]
"""

from __future__ import annotations

import argparse
import time

import mindspore as ms
import numpy as np

from glm_core import Generator, GLMConfig, GLMForPreTraining, kernels
from glm_core.checkpoint import load_state, state_dict
from glm_core.quantize import DEFAULT_GROUP_SIZE, STORAGES
from glm_core.quantized_model import quantize_model


def weights_read_per_step(model: GLMForPreTraining) -> int:
    """Bytes of weights a decode step streams: every Linear (layers and LM head, with any scales) plus the
    layernorms and biases."""
    total = 0
    for name, parameter in model.parameters_and_names():
        if "embedding_table" not in name:
            total += parameter.size * parameter.itemsize
    return total


def streaming_ceiling(rows: int, columns: int, repeats: int = 10) -> dict[str, float]:
    """GB/s of numpy's (OpenBLAS, all CPUs) best float32 matrix-vector product over a ``[rows, columns]``
    matrix, held ``[out, in]`` (``W @ v``) and ``[in, out]`` (``v @ W``)."""
    weight = np.random.default_rng(0).standard_normal((rows, columns), dtype=np.float32)
    products = {"[out, in]": (weight, np.ones(columns, np.float32)),
                "[in, out]": (np.ones(rows, np.float32), weight)}
    best = {}
    for layout, (left, right) in products.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            left @ right
            times.append(time.perf_counter() - start)
        best[layout] = weight.nbytes / min(times) / 1e9
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="glm_bench", help="GLMConfig preset (default glm_bench)")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads of glm-core's kernels (default 2); MindSpore's own ops run on one")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens (default 128)")
    parser.add_argument("--new", type=int, default=128, help="new tokens (default 128)")
    parser.add_argument("--runs", type=int, default=5, help="timed generations after the compiling one (default 5)")
    parser.add_argument("--weights", nargs="+", choices=STORAGES, default=["float32"],
                        help="how the Linears store their weights; several are run in turn (default float32)")
    parser.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE,
                        help=f"inputs per int4 scale (default {DEFAULT_GROUP_SIZE})")
    args = parser.parse_args()

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    kernels.configure_cpu_threads(args.threads)  # the kernels get --threads, MindSpore's small ops one
    # A plain preset, as a user builds it: generation takes the kernels whatever use_past says.
    config = GLMConfig.from_name(args.config, seq_length=max(512, args.prompt + args.new))
    ms.set_seed(0)  # the same random weights in every run: the quality figures depend on them
    model = GLMForPreTraining(config)
    model.init_parameters_data()
    weights = state_dict(model)  # every storage starts from these
    rng = np.random.default_rng(0)
    prompt = [*rng.integers(10, 1000, size=args.prompt - 2).tolist(), config.gmask_token_id, config.bos_token_id]
    reference = model(ms.Tensor([prompt], ms.int32)).asnumpy()[0]  # float32 logits at every prompt position
    del model
    speeds = {}
    for storage in args.weights:
        speeds[storage] = measure(config, weights, storage, args, np.array([prompt]), reference)
        if "float32" in speeds and storage != "float32":
            print(f"{storage} decodes {speeds[storage] / speeds['float32']:.2f}x as fast as float32 in this run")
        print()


def measure(config: GLMConfig, weights: dict, storage: str, args: argparse.Namespace, ids: np.ndarray,
            reference: np.ndarray) -> float:
    """Build ``config``'s model from ``weights`` with its Linears in ``storage``, time its decoding and print the
    figures, and its logits over ``ids`` against float32's ``reference``; returns the best decode tokens/s."""
    start = time.perf_counter()
    model = GLMForPreTraining(config)
    load_state(model, weights)
    if storage != "float32":
        quantize_model(model, storage, args.group_size)
    generator = Generator(model)
    group = f", groups of {args.group_size}" if storage == "int4" else ""
    print(f"model {args.config}: {sum(p.size for p in model.get_parameters()) / 1e6:.1f}M values, Linears in "
          f"{storage}{group}, generating on {'glm-core CPU kernels' if generator.uses_kernels else 'MindSpore'} "
          f"(built in {time.perf_counter() - start:.1f}s)")
    eos = -1  # random weights: never stop early, always generate --new tokens

    generator.generate(ids, max_new_tokens=args.new, eos_token_id=eos)
    compile_seconds = generator.stats.compile_seconds
    step_bytes = weights_read_per_step(model)
    runs = []  # (stats, decode GB/s, ceiling GB/s measured around that generation)
    for _ in range(args.runs):
        before = max(streaming_ceiling(config.vocab_size, config.hidden_size).values())
        generator.generate(ids, max_new_tokens=args.new, eos_token_id=eos)
        after = max(streaming_ceiling(config.vocab_size, config.hidden_size).values())
        stats = generator.stats
        runs.append((stats, step_bytes * stats.decode_tokens_per_second / 1e9, max(before, after)))
    best = max(runs, key=lambda run: run[0].decode_tokens_per_second)[0]
    shares = sorted(100 * bandwidth / ceiling for _, bandwidth, ceiling in runs)
    speeds = sorted(stats.decode_tokens_per_second for stats, _, _ in runs)
    ceilings = [ceiling for _, _, ceiling in runs]

    print(f"compile (prompt + step graphs, once per session): {compile_seconds:.2f}s")
    print(f"prefill: {args.prompt / best.prefill_seconds:.1f} tokens/s ({best.prefill_seconds * 1e3:.1f} ms for "
          f"{args.prompt} tokens)")
    print(f"decode:  {best.decode_tokens_per_second:.2f} tokens/s ({1e3 / best.decode_tokens_per_second:.2f} ms/token,"
          f" best of {args.runs} runs of {best.steps} steps; median {np.median(speeds):.2f} tokens/s)")
    print(f"weights read per decode step: {step_bytes / 1e6:.1f} MB -> "
          f"{step_bytes * best.decode_tokens_per_second / 1e9:.1f} GB/s in the best run")
    print(f"ceiling (numpy's best float32 matrix-vector product over the LM head's {config.vocab_size}x"
          f"{config.hidden_size} matrix, around each run): {min(ceilings):.1f}-{max(ceilings):.1f} GB/s")
    print(f"decode / ceiling, run by run: {', '.join(f'{share:.0f}%' for share in shares)}")
    print(f"decode reaches {np.median(shares):.0f}% of the ceiling (median of {args.runs} runs; at "
          f"{np.median(ceilings):.1f} GB/s the ceiling is {np.median(ceilings) * 1e9 / step_bytes:.1f} tokens/s "
          f"for {step_bytes / 1e6:.1f} MB a step)")
    if storage != "float32":
        logits = model(ms.Tensor(ids, ms.int32)).asnumpy()[0]
        delta = np.abs(logits - reference)
        print(f"quality: float32's top token at {(logits.argmax(-1) == reference.argmax(-1)).mean():.1%} of "
              f"{len(logits)} prompt positions; logit deltas max {delta.max():.4f}, mean {delta.mean():.5f} "
              f"(float32 logits: std {reference.std():.3f})")
    return best.decode_tokens_per_second


if __name__ == "__main__":
    main()

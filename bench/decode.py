"""Decode speed of the KV-cache decoder against the machine's weight-streaming ceiling.

Decoding one token is matrix-vector work: every weight of every layer and of the LM head is read once
per step, so the speed limit is memory bandwidth. This bench runs ``glm_bench`` (the real 130528-row
vocabulary, hidden 1024, 8 layers; random float32 weights), batch 1, a 128-token prompt and 128 new
tokens, and prints beside the decode speed the machine's ceiling: the best bandwidth of numpy's float32
matrix-vector product over the LM head's matrix, in either layout. Decode time is wall time per step, its
inputs and its token choice included (``GenerationStats``). The ceiling is measured right before and
right after every timed generation, and each generation is compared with the better of its two: on a
shared machine the bandwidth drifts by 10-20 % within a minute, and a ceiling taken at another moment
would compare the decoder with a different machine.

    hatch run python bench/decode.py [--threads 2] [--prompt 128] [--new 128] [--config glm_bench]
"""

from __future__ import annotations

import argparse
import time

import mindspore as ms
import numpy as np

from glm_core import Generator, GLMConfig, GLMForPreTraining, kernels


def weights_read_per_step(model: GLMForPreTraining) -> int:
    """Bytes of weights a decode step streams: every Linear (layers and LM head) plus the layernorms."""
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
    args = parser.parse_args()

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    kernels.configure_cpu_threads(args.threads)  # the kernels get --threads, MindSpore's small ops one
    # A plain preset, as a user builds it: generation takes the kernels whatever use_past says.
    config = GLMConfig.from_name(args.config, seq_length=max(512, args.prompt + args.new))
    start = time.perf_counter()
    model = GLMForPreTraining(config)
    model.init_parameters_data()
    generator = Generator(model)
    print(f"model {args.config}: {sum(p.size for p in model.get_parameters()) / 1e6:.1f}M parameters, "
          f"float32, generating on {'glm-core CPU kernels' if generator.uses_kernels else 'MindSpore'} "
          f"(built in {time.perf_counter() - start:.1f}s)")

    rng = np.random.default_rng(0)
    prompt = [*rng.integers(10, 1000, size=args.prompt - 2).tolist(), config.gmask_token_id, config.bos_token_id]
    ids = np.array([prompt])
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
          f"{np.median(ceilings):.1f} GB/s the ceiling is {np.median(ceilings) * 1e9 / step_bytes:.1f} tokens/s)")


if __name__ == "__main__":
    main()

"""Decode speed of the KV-cache decoder against the machine's weight-streaming ceiling.

Decoding one token is matrix-vector work: every weight of every layer and of the LM head is read once per
step, and so are the keys and values of the tokens before it, so the speed limit is memory bandwidth. This
bench runs ``glm_bench`` (the real 130528-row vocabulary, hidden 1024, 8 layers; random float32 weights),
batch 1, a 128-token prompt and 128 new tokens, and prints beside the decode speed the machine's ceiling: the
best bandwidth of numpy's float32 matrix-vector product over the LM head's matrix, in either layout, and the
tokens/s it allows for the bytes a step reads (the weights, and the KV cache on average over the generation).
``--weights`` stores the Linears as float32, float16, int8 or int4 (``model.quantize``), all from the same
random weights, run round by round in the same run (each run of each storage in turn); the speed of each is
also given as a multiple of float32's when that is among them, and its quality: how often a full forward over
the prompt picks float32's top token, and how far its logits move. Decode time is wall time per step, its
inputs and its token choice included (``GenerationStats``). The ceiling is measured right before and right
after every timed generation, and each generation is compared with the better of its two: on a shared machine
the bandwidth drifts by 10-20 % within a minute, and a ceiling taken at another moment would compare the
decoder with a different machine.

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

EOS = -1  # random weights: never stop early, always generate --new tokens


def weights_read_per_step(model: GLMForPreTraining) -> int:
    """Bytes of weights a decode step streams: every Linear (layers and LM head, with any scales) plus the
    layernorms and biases."""
    total = 0
    for name, parameter in model.parameters_and_names():
        if "embedding_table" not in name:
            total += parameter.size * parameter.itemsize
    return total


def cache_read_per_step(config: GLMConfig, prompt: int, new: int) -> int:
    """Bytes of the KV cache a decode step reads, on average over a generation of ``new`` tokens after ``prompt``:
    the keys and values (float32) of every slot written so far, in every layer (masked slots are not read)."""
    slots = prompt + (new - 1) / 2  # the average over the decode steps, which follow the prefill's token
    return int(slots * config.num_layers * 2 * config.hidden_size * 4)


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
    ids = np.array([prompt])
    benches = [StorageBench(config, weights, storage, args, ids, reference) for storage in args.weights]
    # Round by round, every storage in turn: the machine's speed drifts (other work, shared bandwidth), and
    # each storage then meets the same drift; the ratios between them are those of the same moments.
    for _ in range(args.runs):
        for bench in benches:
            bench.run()
    speeds = {}
    for bench in benches:
        speeds[bench.storage] = bench.report()
        if "float32" in speeds and bench.storage != "float32":
            print(f"{bench.storage} decodes {speeds[bench.storage] / speeds['float32']:.2f}x as fast as float32 in "
                  f"this run (best runs; medians: "
                  f"{bench.median_speed() / benches[args.weights.index('float32')].median_speed():.2f}x)")
        print()


class StorageBench:
    """One storage's model built from the shared ``weights``, its generator compiled, and its timed runs."""

    def __init__(self, config: GLMConfig, weights: dict, storage: str, args: argparse.Namespace, ids: np.ndarray,
                 reference: np.ndarray):
        start = time.perf_counter()
        self.config, self.storage, self.args, self.ids, self.reference = config, storage, args, ids, reference
        self.model = GLMForPreTraining(config)
        load_state(self.model, weights)
        if storage != "float32":
            quantize_model(self.model, storage, args.group_size)
        self.generator = Generator(self.model)
        self.build_seconds = time.perf_counter() - start
        self.generator.generate(ids, max_new_tokens=args.new, eos_token_id=EOS)
        self.compile_seconds = self.generator.stats.compile_seconds
        self.weight_bytes = weights_read_per_step(self.model)
        self.cache_bytes = cache_read_per_step(config, args.prompt, args.new)
        self.step_bytes = self.weight_bytes + self.cache_bytes
        self.runs = []  # (stats, decode GB/s, ceiling GB/s measured around that generation)

    def run(self) -> None:
        """One timed generation, with the ceiling measured right before and right after it."""
        config = self.config
        before = max(streaming_ceiling(config.vocab_size, config.hidden_size).values())
        self.generator.generate(self.ids, max_new_tokens=self.args.new, eos_token_id=EOS)
        after = max(streaming_ceiling(config.vocab_size, config.hidden_size).values())
        stats = self.generator.stats
        self.runs.append((stats, self.step_bytes * stats.decode_tokens_per_second / 1e9, max(before, after)))

    def median_speed(self) -> float:
        return float(np.median([stats.decode_tokens_per_second for stats, _, _ in self.runs]))

    def report(self) -> float:
        """Print the figures; returns the best decode tokens/s."""
        args, config, storage, step_bytes = self.args, self.config, self.storage, self.step_bytes
        group = f", groups of {args.group_size}" if storage == "int4" else ""
        print(f"model {args.config}: {sum(p.size for p in self.model.get_parameters()) / 1e6:.1f}M values, "
              f"Linears in {storage}{group}, generating on "
              f"{'glm-core CPU kernels' if self.generator.uses_kernels else 'MindSpore'} (built in "
              f"{self.build_seconds:.1f}s)")
        best = max(self.runs, key=lambda run: run[0].decode_tokens_per_second)[0]
        shares = sorted(100 * bandwidth / ceiling for _, bandwidth, ceiling in self.runs)
        ceilings = [ceiling for _, _, ceiling in self.runs]
        print(f"compile (prompt + step graphs, once per session): {self.compile_seconds:.2f}s")
        print(f"prefill: {args.prompt / best.prefill_seconds:.1f} tokens/s ({best.prefill_seconds * 1e3:.1f} ms for "
              f"{args.prompt} tokens)")
        print(f"decode:  {best.decode_tokens_per_second:.2f} tokens/s ({1e3 / best.decode_tokens_per_second:.2f} "
              f"ms/token, best of {len(self.runs)} runs of {best.steps} steps; median {self.median_speed():.2f} "
              "tokens/s)")
        print(f"read per decode step: {step_bytes / 1e6:.1f} MB (weights {self.weight_bytes / 1e6:.1f} MB, KV cache "
              f"{self.cache_bytes / 1e6:.1f} MB on average) -> {step_bytes * best.decode_tokens_per_second / 1e9:.1f} "
              "GB/s in the best run")
        print(f"ceiling (numpy's best float32 matrix-vector product over the LM head's {config.vocab_size}x"
              f"{config.hidden_size} matrix, around each run): {min(ceilings):.1f}-{max(ceilings):.1f} GB/s")
        print(f"decode / ceiling, run by run: {', '.join(f'{share:.0f}%' for share in shares)}")
        print(f"decode reaches {np.median(shares):.0f}% of the ceiling (median of {len(self.runs)} runs; at "
              f"{np.median(ceilings):.1f} GB/s the ceiling is {np.median(ceilings) * 1e9 / step_bytes:.1f} "
              f"tokens/s for {step_bytes / 1e6:.1f} MB a step)")
        if storage != "float32":
            logits = self.model(ms.Tensor(self.ids, ms.int32)).asnumpy()[0]
            delta = np.abs(logits - self.reference)
            print(f"quality: float32's top token at {(logits.argmax(-1) == self.reference.argmax(-1)).mean():.1%} "
                  f"of {len(logits)} prompt positions; logit deltas max {delta.max():.4f}, mean {delta.mean():.5f} "
                  f"(float32 logits: std {self.reference.std():.3f})")
        return best.decode_tokens_per_second


if __name__ == "__main__":
    main()

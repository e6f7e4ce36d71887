"""Training speed and memory: glm-train's compiled step on the glm_bench shape, full and LoRA.

    hatch run python bench/train.py [--steps 5] [--batch 4] [--seq 128] [--threads 2] [--modes full lora]

Each mode runs in a fresh process (so its peak RSS is its own): the glm_bench network (8 layers, hidden 1024,
the real 130528-row vocabulary, float32, random weights), random ADGEN-like records (the first half of each
sequence is prompt, labelled -100), one TrainStep with AdamWeightDecay and gradient clipping. Printed per
mode: compile time (the first step), the median step time, tokens/s, peak RSS and optimizer-state bytes, and
where the peak goes: the process before the network is built (Python, MindSpore), the weights, Adam's moments,
one gradient per trained weight, and the rest (activations, the tied table's second gradient for a moment,
logits, the memory pool's slack).

The ceiling beside them: numpy's float32 matrix product on this machine (GFLOP/s, best of a few calls on a
training-sized product), against which a step's arithmetic (6 × parameters × tokens: the forward and both
backward products; 4 for LoRA's frozen weights, which get no weight gradient; the head's only for the
positions it computes) gives the share of the machine's matmul speed the step reaches.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

# The original PyTorch code on this shape, measured here (see issue 14): 12-13 s a step, 42 tokens/s, 8.1 GB.
REFERENCE_TOKENS_PER_SECOND, REFERENCE_PEAK_GB = 42.0, 8.1


def matmul_ceiling(seconds: float = 2.0) -> float:
    """numpy's float32 GEMM speed in GFLOP/s on a [512, 1024] x [1024, 4096] product (best call)."""
    a = np.random.default_rng(0).standard_normal((512, 1024), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((1024, 4096), dtype=np.float32)
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 512 * 1024 * 4096 / best / 1e9


def run_mode(mode: str, steps: int, batch: int, seq: int, threads: int, window: bool, recompute: bool) -> dict:
    """One mode in this process: build, compile, time. Returns the figures."""
    import mindspore as ms

    from glm_core import GLMConfig
    from glm_core.lora import LoRAConfig, apply_lora
    from glm_train.network import GLMForTraining
    from glm_train.train_step import TrainStep, WarmupPolynomialDecay, compile_step, make_optimizer

    base_rss = current_rss_gb()
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.set_seed(0)
    ms.device_context.cpu.op_tuning.threads_num(threads)
    config = GLMConfig.from_name("glm_bench")
    network = GLMForTraining(config, loss_window=seq - seq // 2 if window else None)
    if recompute:
        for block in network.transformer.layers:
            block.recompute()
    if mode == "lora":
        apply_lora(network, LoRAConfig(lora_rank=8, lora_alpha=32, lora_dropout=0.1))
    trainable = network.trainable_params()
    optimizer = make_optimizer(trainable, WarmupPolynomialDecay(5e-5, 1e-6, 10, 1000), 0.9, 0.95, 1e-8, 0.1)
    step = TrainStep(network, optimizer, max_grad_norm=1.0)
    rng = np.random.default_rng(0)
    input_ids = rng.integers(5, 130000, (1, batch, seq), dtype=np.int32)
    prompt = seq // 2
    input_ids[..., prompt - 2], input_ids[..., prompt - 1] = config.gmask_token_id, config.bos_token_id
    labels = input_ids.copy()
    labels[..., :prompt] = -100
    inputs = (ms.Tensor(input_ids), ms.Tensor(labels))
    start = time.perf_counter()
    compile_step(step, *inputs)
    step(*inputs)[0].asnumpy()
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(*inputs)[0].asnumpy()
        times.append(time.perf_counter() - start)
    parameters = sum(p.size for p in network.get_parameters())
    head = config.vocab_size * config.hidden_size  # the tied table: no arithmetic as an embedding, all as the head
    head_tokens = batch * (network.loss_window or seq)
    # forward 2 and input gradients 2 FLOPs per weight and token, weight gradients 2 more where trained
    per_weight = 6 if mode == "full" else 4
    flops = per_weight * ((parameters - head) * batch * seq + head * head_tokens)
    trained = sum(p.size for p in trainable)
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    optimizer_bytes = sum(p.asnumpy().nbytes for p in optimizer.get_parameters()
                          if p.name.startswith(("adam_m.", "adam_v.")))
    return {"mode": mode, "compile_seconds": compile_seconds, "step_seconds": statistics.median(times),
            "tokens_per_second": batch * seq / statistics.median(times), "peak_rss_gb": peak_rss_gb,
            "base_rss_gb": base_rss, "weight_bytes": sum(p.asnumpy().nbytes for p in network.get_parameters()),
            "gradient_bytes": sum(p.asnumpy().nbytes for p in trainable),
            "optimizer_state_bytes": optimizer_bytes, "parameters": parameters, "trained_parameters": trained,
            "flops": flops}


def current_rss_gb() -> float:
    """This process's resident memory now, in GiB (Linux)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the compiling one")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--no-window", action="store_true",
                        help="logits at every position (default: only the answer's, as glm-train computes them)")
    parser.add_argument("--recompute", action="store_true", help="recompute each block's activations in backward")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.child, args.steps, args.batch, args.seq, args.threads, not args.no_window,
                                  args.recompute)))
        return
    ceiling = matmul_ceiling()
    print(f"glm_bench training step, batch {args.batch} x seq {args.seq} (the second half answer), float32, "
          f"{args.threads} threads; logits {'everywhere' if args.no_window else 'on the answer'}"
          f"{', recompute' if args.recompute else ''}")
    print(f"ceiling: numpy float32 matmul {ceiling:.0f} GFLOP/s")
    print(f"reference (original PyTorch code, full): {REFERENCE_TOKENS_PER_SECOND:.0f} tokens/s, "
          f"{REFERENCE_PEAK_GB} GB peak RSS")
    for mode in args.modes:
        child = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(args.steps), "--batch",
                                str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads),
                                *(["--no-window"] if args.no_window else []),
                                *(["--recompute"] if args.recompute else [])],
                               capture_output=True, text=True)
        if child.returncode != 0:
            print(f"{mode}: failed\n{child.stderr[-2000:]}")
            continue
        result = json.loads(child.stdout.strip().splitlines()[-1])
        flops = result["flops"]
        speedup = result["tokens_per_second"] / REFERENCE_TOKENS_PER_SECOND
        print(f"{mode:5s} compile {result['compile_seconds']:5.1f} s | step {result['step_seconds']:6.2f} s | "
              f"{result['tokens_per_second']:6.1f} tokens/s ({speedup:.2f}x the original) | "
              f"peak RSS {result['peak_rss_gb']:.2f} GB | optimizer state "
              f"{result['optimizer_state_bytes'] / 2 ** 20:,.1f} MiB for {result['trained_parameters']:,} trained "
              f"parameters | {flops / result['step_seconds'] / 1e9:.0f} GFLOP/s = "
              f"{flops / result['step_seconds'] / 1e9 / ceiling:.0%} of the ceiling")
        parts = {"before the network": result["base_rss_gb"], "weights": result["weight_bytes"] / 2 ** 30,
                 "Adam moments": result["optimizer_state_bytes"] / 2 ** 30,
                 "gradients": result["gradient_bytes"] / 2 ** 30}
        rest = result["peak_rss_gb"] - sum(parts.values())
        print(f"{'':6s}peak RSS = " + " + ".join(f"{name} {gb:.2f}" for name, gb in parts.items())
              + f" + the rest {rest:.2f} GB (activations, logits, the table's gradient copy, pool slack)")


if __name__ == "__main__":
    main()

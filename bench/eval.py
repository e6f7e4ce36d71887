"""Scoring throughput of glm_eval.score, in pairs per second, for 1 and 2 worker processes.

The pairs are ADGEN-like: references of about 100 Chinese characters (the length of an ADGEN
summary) assembled from the words of the golden ADGEN examples, predictions that keep about half of
their reference's words. The ADGEN dev set has 1,070 pairs; the default here is 2,000.

    hatch run pkg-eval:python bench/eval.py [--pairs 2000] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import jieba

import glm_eval
from glm_eval.scoring import load_jieba

ADGEN_CASE = (
    Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "golden" / "tiny" / "cases" / "adgen.json"
)
REFERENCE_CHARACTERS = 100


def adgen_vocabulary() -> list[str]:
    """The jieba words of the golden ADGEN summaries."""
    examples = json.loads(ADGEN_CASE.read_text(encoding="utf-8"))["examples"]
    load_jieba()
    return [word for example in examples for word in jieba.cut(example["summary"])]


def adgen_like_pairs(count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``count`` (prediction, reference) pairs shaped like a model's output on ADGEN."""
    rng = random.Random(seed)
    vocabulary = adgen_vocabulary()
    predictions, references = [], []
    for _ in range(count):
        words: list[str] = []
        while sum(map(len, words)) < REFERENCE_CHARACTERS:
            words.append(rng.choice(vocabulary))
        kept = [word if rng.random() < 0.5 else rng.choice(vocabulary) for word in words]
        predictions.append("".join(kept))
        references.append("".join(words))
    return predictions, references


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000, help="pairs to score (default: 2000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default: 1 2)")
    args = parser.parse_args()

    predictions, references = adgen_like_pairs(args.pairs)
    results = {}
    for workers in args.workers:
        start = time.perf_counter()
        results[workers] = glm_eval.score(predictions, references, workers=workers)
        seconds = time.perf_counter() - start
        print(
            f"workers={workers}: {args.pairs} pairs in {seconds:.2f} s = {args.pairs / seconds:.0f} pairs/s"
        )
    if len({json.dumps(result, sort_keys=True) for result in results.values()}) != 1:
        raise SystemExit(f"scores differ between worker counts: {results}")
    print("scores (identical for every worker count):", results[args.workers[0]])


if __name__ == "__main__":
    main()

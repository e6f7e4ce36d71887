"""Tokenizer throughput: glm_tokenizer.ChatGLMTokenizer against raw SentencePiece on ADGEN-like lines.

Both sides encode one line per call. Raw SentencePiece gets the text already preprocessed (``<n>``,
``<|tab|>``, ``<|blank_N|>``) outside the timed loop; ours preprocesses, encodes and appends
``[gMASK] <sop>`` inside it. So the ratio is the whole cost of the ChatGLM rules. For context the
reference's own preprocessing (80 ``str.replace`` calls per text) plus SentencePiece is timed too.

    hatch run python bench/tokenizer.py [--vocab PATH] [--lines N] [--repeat R]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import sentencepiece as spm

from glm_tokenizer import ChatGLMTokenizer

GOLDEN_VOCAB = Path(__file__).resolve().parents[1] / "tests/fixtures/golden/tiny/hf/ice_text.model"

ATTRIBUTES = {
    "类型": ["上衣", "裙", "裤", "外套", "衬衫", "连衣裙", "卫衣", "毛衣"],
    "版型": ["宽松", "显瘦", "修身", "直筒", "收腰", "A字"],
    "风格": ["简约", "休闲", "文艺", "复古", "街头", "通勤", "甜美"],
    "图案": ["线条", "条纹", "格子", "印花", "纯色", "刺绣"],
    "材质": ["棉", "牛仔布", "针织", "雪纺", "羊毛", "蕾丝"],
    "衣袖型": ["泡泡袖", "灯笼袖", "喇叭袖", "落肩袖"],
    "衣领型": ["圆领", "V领", "翻领", "立领"],
    "裙长": ["短裙", "中长裙", "长裙"],
}
PHRASES = [
    "这款{0}采用{1}的版型设计",
    "穿着舒适自在",
    "线条流畅，显瘦又时尚",
    "搭配一双小白鞋就很好看",
    "{1}的剪裁修饰身形",
    "面料柔软亲肤，透气性好",
    "细节处的{2}设计增添了几分趣味",
    "无论是日常通勤还是周末出游都很合适",
    "简单大方，尽显优雅气质",
    "Very chic, easy to match",
]


def adgen_like_lines(count: int, seed: int = 0) -> list[str]:
    """``count`` synthetic ADGEN lines: an attribute string, a tab or newline, a few description phrases.

    Some lines hold double spaces or a newline inside the description, as scraped text does.
    """
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        keys = rng.sample(sorted(ATTRIBUTES), rng.randint(3, 6))
        values = [rng.choice(ATTRIBUTES[key]) for key in keys]
        attributes = "*".join(f"{key}#{value}" for key, value in zip(keys, values))
        phrases = [rng.choice(PHRASES).format(*values) for _ in range(rng.randint(2, 6))]
        separator = rng.choice(["，", "，", "。", "  ", "\n", " "])
        lines.append(attributes + rng.choice(["\t", "\n", " "]) + separator.join(phrases) + "。")
    return lines


def reference_preprocess(text: str, max_blank_length: int = 80) -> str:
    """The original tokenizer's whitespace rewrite, one ``str.replace`` per blank length."""
    text = text.replace("\n", "<n>").replace("\t", "<|tab|>")
    for length in range(max_blank_length, 1, -1):
        text = text.replace(" " * length, f"<|blank_{length}|>")
    return text


def best_times(runs: dict, repeat: int) -> dict[str, float]:
    """The fastest of ``repeat`` timings of each ``runs[name]()``, in seconds.

    The runs take turns within each repetition, so a burst of load from elsewhere on the machine
    slows all of them rather than one.
    """
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def benchmark(vocab: Path, count: int, repeat: int) -> dict[str, float]:
    """Time both tokenizers on ``count`` lines; check they agree first. Returns lines/s and the ratio."""
    tokenizer = ChatGLMTokenizer(vocab)
    processor = spm.SentencePieceProcessor(model_file=str(vocab))
    lines = adgen_like_lines(count)
    preprocessed = [reference_preprocess(line) for line in lines]
    specials = [tokenizer.gmask_token_id, tokenizer.bos_token_id]
    for line, text in zip(lines, preprocessed):
        if tokenizer.encode(line) != processor.encode(text) + specials:
            raise AssertionError(f"glm_tokenizer disagrees with SentencePiece on {line!r}")

    times = best_times(
        {
            "ours": lambda: [tokenizer.encode(line) for line in lines],
            "raw": lambda: [processor.encode(text) for text in preprocessed],
            "reference": lambda: [processor.encode(reference_preprocess(line)) for line in lines],
        },
        repeat,
    )
    return {
        "ours_lines_per_s": count / times["ours"],
        "raw_lines_per_s": count / times["raw"],
        "reference_lines_per_s": count / times["reference"],
        "ratio": times["ours"] / times["raw"],
    }


def main() -> None:
    """Parse arguments, run the benchmark, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=Path, default=GOLDEN_VOCAB, help="ice_text.model to load")
    parser.add_argument("--lines", type=int, default=20_000, help="how many synthetic lines")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per side; the best counts")
    args = parser.parse_args()
    figures = benchmark(args.vocab, args.lines, args.repeat)
    print(f"{args.lines} ADGEN-like lines, vocab {args.vocab}")
    print(f"glm_tokenizer.encode:              {figures['ours_lines_per_s']:>10,.0f} lines/s")
    print(f"raw SentencePiece (preprocessed):  {figures['raw_lines_per_s']:>10,.0f} lines/s")
    print(f"reference preprocessing + SP:      {figures['reference_lines_per_s']:>10,.0f} lines/s")
    print(f"ours / raw time: {figures['ratio']:.2f}x (target <= 1.30x)")


if __name__ == "__main__":
    main()

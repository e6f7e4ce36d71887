"""Show how ChatGLM-6B tokenizes text: ``python -m glm_tokenizer.demo [--vocab PATH] [TEXT...]``.

Without ``--vocab`` it loads the small test vocabulary shipped in ``glm_tokenizer/assets/tiny`` (3088
pieces, the real ice_text.model layout, special ids 3000..3005), not the real 6B one: pass the
``ice_text.model`` of a ChatGLM-6B checkpoint to see the real ids.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from glm_tokenizer.tokenizer import ChatGLMTokenizer

TINY_VOCABULARY = Path(__file__).parent / "assets" / "tiny"
SAMPLE_TEXTS = (
    "你好",
    "类型#上衣*版型#宽松*图案#线条",
    "def f(x):\n    return x",
    "Hello world!",
)


def describe(tokenizer: ChatGLMTokenizer, text: str) -> str:
    """Three lines for ``text``: the text, its pieces, its ids with ``[gMASK] <sop>`` appended."""
    return f"text:   {text!r}\ntokens: {tokenizer.tokenize(text)}\nids:    {tokenizer.encode(text)}"


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and print ``describe`` for each text (the samples when none is given)."""
    parser = argparse.ArgumentParser(description="Tokenize text with the ChatGLM-6B tokenizer.")
    parser.add_argument(
        "--vocab", type=Path, help="an ice_text.model (default: the shipped tiny test vocabulary)"
    )
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to tokenize (default: a few samples)")
    args = parser.parse_args(argv)
    if args.vocab is None:
        tokenizer = ChatGLMTokenizer.from_pretrained(TINY_VOCABULARY)
        print(f"vocabulary: the tiny test vocabulary in {TINY_VOCABULARY}, not the real ChatGLM-6B one")
    else:
        tokenizer = ChatGLMTokenizer(args.vocab)
        print(f"vocabulary: {args.vocab}")
    print(
        f"{tokenizer.num_pieces} pieces; [gMASK]={tokenizer.gmask_token_id} <sop>={tokenizer.bos_token_id}\n"
    )
    print("\n\n".join(describe(tokenizer, text) for text in args.texts or SAMPLE_TEXTS))


if __name__ == "__main__":
    main()

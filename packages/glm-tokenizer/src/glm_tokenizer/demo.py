"""Show how ChatGLM-6B tokenizes text: ``python -m glm_tokenizer.demo [--vocab PATH] [TEXT...]``.

Without ``--vocab`` it loads the small test vocabulary shipped in ``glm_tokenizer/assets/tiny`` (3088
pieces, the real ice_text.model layout, special ids 3000..3005), not the real 6B one: pass the
``ice_text.model`` of a ChatGLM-6B checkpoint (or its folder) to see the real ids. A TEXT of ``-`` is
the whole of standard input.

Errors are one line on stderr, with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from glm_tokenizer.tokenizer import ChatGLMTokenizer

PROG = "python -m glm_tokenizer.demo"
# Exit statuses: unusable arguments or input (the status argparse uses too); Ctrl-C, as a shell reports it.
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
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


class DemoInputError(ValueError):
    """A vocabulary or text the demo cannot use; the message names it."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser, with its errors on one line (argparse prints the usage above them)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def load_vocabulary(vocab: Path | None) -> tuple[ChatGLMTokenizer, str]:
    """The tokenizer of ``vocab`` (an ``ice_text.model`` or a folder holding one; ``None``: the tiny test
    vocabulary) and a line saying which it is.

    Raises ``DemoInputError`` when it is missing or not a SentencePiece model.
    """
    if vocab is None:
        return (ChatGLMTokenizer.from_pretrained(TINY_VOCABULARY),
                f"the tiny test vocabulary in {TINY_VOCABULARY}, not the real ChatGLM-6B one")
    try:
        tokenizer = ChatGLMTokenizer.from_pretrained(vocab) if vocab.is_dir() else ChatGLMTokenizer(vocab)
    except (OSError, ValueError) as error:
        # SentencePiece's own messages end in spaces and newlines; the error stays on one line.
        raise DemoInputError(f"--vocab {vocab}: {' '.join(str(error).split())}") from None
    return tokenizer, str(vocab)


def read_texts(arguments: Sequence[str]) -> list[str]:
    """The texts to tokenize: each argument, ``-`` standing for the whole of standard input; the samples
    when there is none.

    Raises ``DemoInputError`` for an argument or an input that is not UTF-8 text, or unreadable stdin.
    """
    texts = []
    for position, argument in enumerate(arguments, start=1):
        if argument == "-":
            texts.append(_read_stdin())
            continue
        try:
            # A command line that is not UTF-8 reaches Python as lone surrogates, which no tokenizer takes.
            argument.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(argument)
            raise DemoInputError(f"TEXT {position} ({shown!r:.60}) is not UTF-8 text") from None
        texts.append(argument)
    return texts or list(SAMPLE_TEXTS)


def _read_stdin() -> str:
    if sys.stdin is None:  # started with standard input closed
        raise DemoInputError("TEXT '-': standard input is closed")
    try:
        data = sys.stdin.buffer.read()
    except OSError as error:
        raise DemoInputError(f"TEXT '-': cannot read standard input ({error.strerror or error})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DemoInputError(f"TEXT '-': standard input is not UTF-8 text (byte {error.start}: "
                             f"{error.reason})") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and print ``describe`` for each text (the samples when none is given);
    returns the exit status: 0, or 2 after a one-line error for an unusable vocabulary or text."""
    parser = _Parser(prog=PROG, description="Tokenize text with the ChatGLM-6B tokenizer.")
    parser.add_argument(
        "--vocab",
        type=Path,
        help="an ice_text.model, or a model folder holding one (default: the shipped tiny test vocabulary)",
    )
    parser.add_argument(
        "texts", nargs="*", metavar="TEXT", help="texts to tokenize, - for standard input (default: a few samples)"
    )
    args = parser.parse_args(argv)
    try:
        texts = read_texts(args.texts)
        tokenizer, which = load_vocabulary(args.vocab)
        print(f"vocabulary: {which}")
        print(
            f"{tokenizer.num_pieces} pieces; [gMASK]={tokenizer.gmask_token_id} <sop>={tokenizer.bos_token_id}\n"
        )
        print("\n\n".join(describe(tokenizer, text) for text in texts), flush=True)
    except DemoInputError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader (``| head``) has gone: nothing more to say. Point stdout at nothing so that
        # Python's final flush does not report the broken pipe once more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``glm-data``: convert ADGEN JSON lines to MindRecord (``adgen``) and look inside the result (``inspect``).

Each subcommand parses its flags and calls one function of the Python API. Errors are one line on
stderr and exit status 2.
"""

import argparse
import os
import signal
import sys
import threading

from glm_data.adgen import FORMATS, MODES, adgen_to_mindrecord, load_tokenizer
from glm_data.errors import DataError
from glm_data.loader import describe_mindrecord

EXIT_ERROR = 2
EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_GRACE_SECONDS = 5


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only where there is one worth reading."""

    def _get_help_string(self, action):
        if action.default in (None, False, ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The ``glm-data`` argument parser with its ``adgen`` and ``inspect`` subcommands."""
    parser = _Parser(prog="glm-data", description=__doc__.splitlines()[0].replace("``", ""))
    commands = parser.add_subparsers(dest="command", required=True, metavar="{adgen,inspect}")

    adgen = commands.add_parser(
        "adgen",
        help="convert ADGEN JSON lines to MindRecord training or evaluation records",
        description="Convert ADGEN JSON lines ({\"content\": …, \"summary\": …} per line, UTF-8) into MindRecord "
        "records built as ChatGLM-6B's ptuning/main.py builds them. Malformed lines are skipped and "
        "listed at the end (or stop the run with --strict); examples with an empty prompt or answer "
        "are skipped, as the reference does. The output appears only once complete.",
        formatter_class=_HelpFormatter,
    )
    adgen.add_argument("--input_file", required=True, help="ADGEN JSON-lines file (UTF-8)")
    adgen.add_argument("--vocab_file", required=True, help="the model's ice_text.model SentencePiece file")
    adgen.add_argument(
        "--output_file", required=True, help="MindRecord file to write (with --num_splits N: OUTPUT0 … OUTPUT{N-1})"
    )
    adgen.add_argument(
        "--max_source_length", type=int, default=64, help="prompt budget in tokens, [gMASK] <sop> included"
    )
    adgen.add_argument(
        "--max_target_length", type=int, default=64, help="answer budget in tokens, special tokens included"
    )
    adgen.add_argument(
        "--mode",
        choices=MODES,
        default="train",
        help="train: padded prompt+answer records with -100 labels over prompt and padding; "
        "eval: truncated prompt ids, answer ids and the raw content/summary text",
    )
    adgen.add_argument(
        "--format",
        choices=FORMATS,
        default="glm",
        dest="record_format",
        help="glm: input_ids and labels only; mindformers: MindFormers' input_ids, labels (shifted by one), "
        "position_ids [2,S] and attention_mask [1,S,S] (train mode only)",
    )
    adgen.add_argument("--num_splits", type=int, default=1, help="number of MindRecord files to write")
    adgen.add_argument("--prefix", default="", help="text put before every prompt")
    adgen.add_argument("--prompt_column", default="content", help="JSON key of the prompt")
    adgen.add_argument("--response_column", default="summary", help="JSON key of the answer")
    adgen.add_argument(
        "--history_column",
        default=None,
        help="JSON key of earlier rounds [[query, response], …]; prompts then use ChatGLM-6B's "
        "'[Round i]\\n问：…\\n答：…' chat format",
    )
    adgen.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output, all its files (OUTPUT, OUTPUT0 …, their .db), once the new one is complete",
    )
    adgen.add_argument(
        "--workers", type=int, default=1, help="tokenizing processes, this one included (same output for any number)"
    )
    adgen.add_argument("--strict", action="store_true", help="stop at the first malformed line instead of skipping it")
    adgen.add_argument("--no_progress", action="store_true", help="do not show the progress bar")
    adgen.set_defaults(run=_run_adgen)

    inspect = commands.add_parser(
        "inspect",
        help="print a MindRecord file's schema, record count and first records",
        description="Print the schema, the record count and the first records of a file written by "
        "glm-data adgen, decoded back to text when --vocab_file is given.",
        formatter_class=_HelpFormatter,
    )
    inspect.add_argument("file", help="MindRecord file (for a split output, its name or any of its files)")
    inspect.add_argument("--vocab_file", default=None, help="ice_text.model to decode ids with (ids shown otherwise)")
    inspect.add_argument("--num_records", type=int, default=3, help="how many records to show")
    inspect.set_defaults(run=_run_inspect)
    return parser


def _run_adgen(args) -> None:
    summary = adgen_to_mindrecord(
        args.input_file,
        args.vocab_file,
        args.output_file,
        max_source_length=args.max_source_length,
        max_target_length=args.max_target_length,
        mode=args.mode,
        record_format=args.record_format,
        num_splits=args.num_splits,
        prefix=args.prefix,
        prompt_column=args.prompt_column,
        response_column=args.response_column,
        history_column=args.history_column,
        overwrite=args.overwrite,
        workers=args.workers,
        strict=args.strict,
        progress=not args.no_progress,
    )
    print(summary)


def _run_inspect(args) -> None:
    tokenizer = load_tokenizer(args.vocab_file) if args.vocab_file else None
    print(describe_mindrecord(args.file, tokenizer, args.num_records))


class _Terminated(BaseException):
    """SIGTERM, raised as an exception: unlike the default kill, it runs the cleanup of a partial output."""


def _raise_terminated(signum, frame):
    raise _Terminated


def main(argv=None) -> int:
    """Entry point of the ``glm-data`` console script; returns the exit status."""
    os.environ.setdefault("GLOG_v", "3")  # MindSpore's INFO/WARNING logs drown the summary
    args = build_parser().parse_args(argv)
    previous_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        args.run(args)
    except DataError as error:
        print(f"glm-data {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"glm-data {args.command}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"glm-data {args.command}: terminated", file=sys.stderr)
        # Exit normally, but not forever: worker processes terminated with this one (a job scheduler
        # signals the whole group) may have died mid-reply, and Python's exit waits for that reply.
        deadline = threading.Timer(EXIT_GRACE_SECONDS, os._exit, (EXIT_TERMINATED,))
        deadline.daemon = True
        deadline.start()
        return EXIT_TERMINATED
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())

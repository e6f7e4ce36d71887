"""``glm-eval``: the command line of :mod:`glm_eval`. Parses arguments and calls the Python API."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from glm_eval.__about__ import __version__
from glm_eval.files import JSONL_SUFFIX, InputFileError, read_pairs
from glm_eval.scoring import METRICS, score

# Exit status for unusable input, the same argparse uses for unusable arguments.
EXIT_BAD_INPUT = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``glm-eval`` argument parser, with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="glm-eval",
        description="BLEU-4 and ROUGE-1/2/L exactly as ChatGLM-6B's ptuning compute_metrics reports them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    score_parser = commands.add_parser(
        "score",
        help="score predictions against references",
        description=(
            "Score each prediction against the reference on the same line and print the averages "
            "(x100) of BLEU-4, ROUGE-1, ROUGE-2 and ROUGE-L, one per line. A pair whose prediction or "
            "reference is empty or whitespace only scores 0 and is reported on stderr."
        ),
    )
    score_parser.add_argument(
        "--predictions",
        required=True,
        type=Path,
        metavar="P",
        help=(
            "generated texts: a text file with one prediction per line, or a "
            f"{JSONL_SUFFIX} file whose records each have a 'prediction' string"
        ),
    )
    score_parser.add_argument(
        "--references",
        required=True,
        type=Path,
        metavar="R",
        help=(
            "expected texts, as many as predictions: a text file with one reference per line, or a "
            f"{JSONL_SUFFIX} file whose records each have a 'reference' string (may be the same file as P)"
        ),
    )
    score_parser.add_argument(
        "--prediction-field",
        metavar="NAME",
        help=(
            "read P as JSON lines (whatever its suffix) taking each record's NAME string, e.g. 'predict' "
            "for ptuning's generated_predictions.txt or 'response' for glm generate's output"
        ),
    )
    score_parser.add_argument(
        "--reference-field",
        metavar="NAME",
        help="read R as JSON lines taking each record's NAME string, e.g. 'labels' (ptuning) or 'summary' (ADGEN)",
    )
    score_parser.add_argument(
        "--output",
        type=Path,
        metavar="REPORT",
        help="also write the scores, pair counts and input paths to this JSON file (replaced atomically)",
    )
    score_parser.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="score in N processes; the scores do not depend on N (default: 1)",
    )
    score_parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar on stderr (it only appears for runs longer than two seconds)",
    )
    score_parser.set_defaults(run=run_score)
    return parser


def write_report(path: Path, report: dict) -> None:
    """Write ``report`` as JSON to ``path`` through a temporary file, so a reader never sees half of it."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give the report the permissions of any new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(report, file, ensure_ascii=False, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def run_score(args: argparse.Namespace) -> dict[str, float | int]:
    """The ``score`` command: read both files, score them, print the metrics, write the report."""
    if args.output is not None and not args.output.parent.is_dir():
        # Checked first: a long scoring run should not end in a report that cannot be written.
        raise FileNotFoundError(errno.ENOENT, "folder for --output does not exist", str(args.output.parent))
    predictions, references = read_pairs(args.predictions, args.references, args.prediction_field,
                                         args.reference_field)
    scores = score(predictions, references, workers=args.workers, progress=not args.quiet)
    for metric in METRICS:
        # Rounded only to hide float noise such as 68.77118254999999; the report keeps every digit.
        print(f"{metric}: {round(scores[metric], 8)}")
    if scores["empty_predictions"]:
        print(
            f"{scores['empty_predictions']} of {scores['n']} pairs have an empty prediction or reference "
            "and scored 0",
            file=sys.stderr,
        )
    if args.output is not None:
        report = {"predictions": str(args.predictions), "references": str(args.references), **scores}
        write_report(args.output, report)
    return scores


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``glm-eval`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Unreadable or malformed input prints one ``glm-eval: error: ...`` line to stderr and returns 2.
    """
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except InputFileError as error:
        print(f"glm-eval: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        print(f"glm-eval: error: {error.strerror or error}{where}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0

"""``glm-eval``: the command line of :mod:`glm_eval`. Parses arguments and calls the Python API."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from glm_eval.__about__ import __version__
from glm_eval.files import JSONL_SUFFIX, InputFileError, read_pairs
from glm_eval.scoring import METRICS, score

# Exit statuses: unusable input or arguments (the status argparse uses too); a report that could not be
# written (a full disk, say); Ctrl-C and SIGTERM, as a shell reports a process those signals killed.
EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM
# Seconds a terminated run may take to stop its worker processes before it exits regardless.
EXIT_GRACE_SECONDS = 5


class _Parser(argparse.ArgumentParser):
    """argparse's parser, with its errors on one line (argparse prints the usage above them)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


class UsageError(ValueError):
    """An argument that parses but cannot be used (an --output that would overwrite an input, say)."""


class ReportWriteError(OSError):
    """The scores were computed but the report could not be written; the previous report is intact."""


class _Terminated(BaseException):
    """SIGTERM raised as an exception, so that a report being written is removed as on Ctrl-C."""


def available_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    # More processes than CPUs score no faster, and a mistyped count would start thousands of them.
    if value > available_cpus():
        raise argparse.ArgumentTypeError(f"at most {available_cpus()} (the CPUs this process may use), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``glm-eval`` argument parser, with one subparser per command."""
    parser = _Parser(
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
        help=(
            "also write the scores, pair counts and input paths to this JSON file (replaced atomically; "
            "it may not be P or R)"
        ),
    )
    score_parser.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="score in N processes, at most one per CPU; the scores do not depend on N (default: 1)",
    )
    score_parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar on stderr (it only appears for runs longer than two seconds)",
    )
    score_parser.set_defaults(run=run_score)
    return parser


def write_report(path: Path, report: dict) -> None:
    """Write ``report`` as JSON to ``path`` through a temporary file, so a reader never sees half of it.

    Whatever stops the write (an error, a full disk, Ctrl-C, SIGTERM raised as an exception) removes the
    temporary file and leaves an earlier report at ``path`` as it was.
    """
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


def check_output(output: Path, inputs: dict[str, Path]) -> None:
    """Refuse, before any scoring, an ``--output`` the report could not be written to, or should not be.

    Args:
        output: the report's path.
        inputs: the input files by flag, e.g. ``{"--predictions": Path(...)}``.

    Raises:
        UsageError: ``output`` is one of ``inputs`` (under any name), a folder or a device, lies in a
            folder that does not exist, or one where no file can be created.
    """
    for flag, path in inputs.items():
        with contextlib.suppress(OSError):  # a missing input is reported when it is read
            if os.path.samefile(output, path):
                raise UsageError(f"--output {output} is the {flag} file, which the report would replace: "
                                 "name another file")
    if output.exists() and not output.is_file():
        raise UsageError(f"--output {output} is not a regular file (a folder or a device): name a file")
    if not output.parent.is_dir():
        raise UsageError(f"folder for --output does not exist: {output.parent}")
    try:
        # A long scoring run should not end in a report that cannot be written: try now.
        handle, probe = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    except OSError as error:
        raise UsageError(f"--output {output}: cannot create a file in {output.parent} ({error.strerror})") from None
    os.close(handle)
    os.unlink(probe)


def run_score(args: argparse.Namespace) -> dict[str, float | int]:
    """The ``score`` command: read both files, score them, print the metrics, write the report."""
    if args.output is not None:
        check_output(args.output, {"--predictions": args.predictions, "--references": args.references})
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
        try:
            write_report(args.output, report)
        except OSError as error:
            raise ReportWriteError(error.errno, f"cannot write the report {args.output} "
                                                f"({error.strerror or error}); it is left as it was") from None
    return scores


def _raise_terminated(signum, frame):
    # Closing the worker pool can hang for good when its workers died with this process (a job scheduler
    # signals the whole group): from here on a deadline ends the process whatever the pool does.
    deadline = threading.Timer(EXIT_GRACE_SECONDS, _exit_terminated)
    deadline.daemon = True
    deadline.start()
    raise _Terminated


_said_terminated = threading.Event()


def _say_terminated() -> None:
    if not _said_terminated.is_set():
        _said_terminated.set()
        print("glm-eval: terminated", file=sys.stderr, flush=True)


def _exit_terminated() -> None:
    _say_terminated()
    os._exit(EXIT_TERMINATED)


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    """Within the block, SIGTERM raises ``_Terminated`` in this process, where it would kill it outright."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``glm-eval`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Every error is one ``glm-eval: error: ...`` line on stderr: unusable arguments or input return 2, a
    report that cannot be written 1; Ctrl-C returns 130 and SIGTERM 143, leaving any earlier report intact.
    """
    args = build_parser().parse_args(argv)
    try:
        with _sigterm_as_exception():
            args.run(args)
    except (InputFileError, UsageError) as error:
        print(f"glm-eval: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ReportWriteError as error:
        print(f"glm-eval: error: {error.strerror}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        print(f"glm-eval: error: {error.strerror or error}{where}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("glm-eval: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        _say_terminated()  # and exit normally, within the deadline the signal set
        return EXIT_TERMINATED
    return 0

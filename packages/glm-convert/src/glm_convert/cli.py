"""``glm-convert``: the command line of :mod:`glm_convert`. Parses arguments and calls the Python API.

    glm-convert hf-to-ms SRC OUT            # HF folder or weights file → OUT.ckpt, or a model folder OUT
    glm-convert hf-to-ms SRC OUT --quantize int4   # the same, quantized for glm-core's CPU kernels
    glm-convert ms-to-hf CKPT OUT_DIR       # .ckpt → HF folder (sharded .bin or safetensors)
    glm-convert --pt_ckpt_path PATH --ms_ckpt_path OUT.ckpt   # MindFormers' convert_weight.py flags
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from glm_convert.__about__ import __version__
from glm_convert.errors import ConversionError
from glm_convert.hf_to_ms import QUANTIZATIONS, convert_hf_to_ms
from glm_convert.ms_to_hf import DEFAULT_MAX_SHARD_BYTES, convert_ms_to_hf
from glm_convert.summary import ConversionSummary
from glm_core.checkpoint_file import TENSOR_TYPES
from glm_core.quantize import DEFAULT_GROUP_SIZE

EXIT_BAD_INPUT = 2  # as argparse uses for unusable arguments



class OneLineErrorParser(argparse.ArgumentParser):
    """argparse's parser with its errors on one line and exit status 2 (argparse prints its usage above them);
    its subcommands' parsers are of the same class."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")

def _add_common_options(parser: argparse.ArgumentParser, on_command: bool) -> None:
    """Options accepted before and after the command. On a command their defaults are SUPPRESS, so that
    a value given before the command is not overwritten by the command's default."""
    parser.add_argument("--config", type=Path, metavar="PATH", default=argparse.SUPPRESS if on_command else None,
                        help="the model's config.json, model folder or MindFormers YAML (default: the "
                             "config.json beside the input, else ChatGLM-6B's)")
    for flag, help_text in (("--quiet", "no progress bar and no log lines on stderr"),
                            ("--debug", "show the traceback of an error")):
        parser.add_argument(flag, action="store_true", default=argparse.SUPPRESS if on_command else False,
                            help=help_text)


def _add_dtype_option(parser: argparse.ArgumentParser, on_command: bool) -> None:
    parser.add_argument("--dtype", choices=list(TENSOR_TYPES), default=argparse.SUPPRESS if on_command else None,
                        help="dtype of the MindSpore tensors (default: each tensor's source dtype)")


def build_parser() -> argparse.ArgumentParser:
    """The ``glm-convert`` argument parser: the two commands, and MindFormers' flags without a command."""
    parser = OneLineErrorParser(
        prog="glm-convert",
        description="Convert Hugging Face ChatGLM-6B checkpoints to MindSpore .ckpt (MindFormers' names) and back.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--pt_ckpt_path", type=Path, metavar="PATH",
                        help="without a command: the torch weights (.pth/.bin file or HF folder) to convert")
    parser.add_argument("--ms_ckpt_path", type=Path, metavar="OUT.ckpt",
                        help="without a command: the MindSpore checkpoint to write")
    _add_dtype_option(parser, on_command=False)
    _add_common_options(parser, on_command=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    hf_to_ms = commands.add_parser(
        "hf-to-ms", help="Hugging Face weights → MindSpore .ckpt or model folder",
        description="Convert a Hugging Face ChatGLM-6B folder (sharded or single .bin, or safetensors) or one "
                    "weights file (.pth/.bin/.safetensors) to a MindSpore checkpoint with MindFormers' names. "
                    "OUT ending in .ckpt gets the checkpoint alone; any other OUT becomes a model folder with "
                    "model.ckpt, config.json, ice_text.model and tokenizer_config.json.")
    hf_to_ms.add_argument("source", type=Path, metavar="SRC")
    hf_to_ms.add_argument("destination", type=Path, metavar="OUT")
    _add_dtype_option(hf_to_ms, on_command=True)
    hf_to_ms.add_argument("--quantize", choices=QUANTIZATIONS,
                          help="write the Linears quantized for glm-core's CPU kernels (a CPU inference feature): "
                               "int8 (one scale per row, as the original's quantize(8)) or int4 (one scale per "
                               "group of inputs); the LM head one step wider (float16 beside int8, int8 beside "
                               "int4), embeddings float16, biases and layernorms float32; excludes --dtype")
    hf_to_ms.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE, metavar="N",
                          help="inputs per int4 scale, a multiple of 32 dividing the model's widths "
                               "(default: %(default)s)")
    _add_common_options(hf_to_ms, on_command=True)
    hf_to_ms.set_defaults(run=run_hf_to_ms)

    ms_to_hf = commands.add_parser(
        "ms-to-hf", help="MindSpore .ckpt → Hugging Face folder",
        description="Convert a MindSpore checkpoint with MindFormers' names to a Hugging Face ChatGLM-6B folder: "
                    "sharded pytorch_model-*.bin (or model-*.safetensors) with their index, config.json, and the "
                    "tokenizer files found beside the checkpoint.")
    ms_to_hf.add_argument("source", type=Path, metavar="CKPT")
    ms_to_hf.add_argument("destination", type=Path, metavar="OUT_DIR")
    ms_to_hf.add_argument("--safetensors", action="store_true",
                          help="write model-*.safetensors shards instead of torch .bin")
    ms_to_hf.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_BYTES, metavar="SIZE",
                          help="largest shard, e.g. 2GB, 500MB, 1GiB (default: 2GB)")
    _add_common_options(ms_to_hf, on_command=True)
    ms_to_hf.set_defaults(run=run_ms_to_hf)
    return parser


def run_hf_to_ms(args: argparse.Namespace) -> ConversionSummary:
    """The ``hf-to-ms`` command (and the command-less MindFormers flags)."""
    return convert_hf_to_ms(args.source, args.destination, args.dtype, config=args.config, progress=not args.quiet,
                            quantize=getattr(args, "quantize", None),
                            group_size=getattr(args, "group_size", DEFAULT_GROUP_SIZE))


def run_ms_to_hf(args: argparse.Namespace) -> ConversionSummary:
    """The ``ms-to-hf`` command."""
    return convert_ms_to_hf(args.source, args.destination, config=args.config, safetensors=args.safetensors,
                            max_shard_size=args.max_shard_size, progress=not args.quiet)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    seed_flags = args.pt_ckpt_path is not None or args.ms_ckpt_path is not None
    if args.command is not None and seed_flags:
        parser.error("--pt_ckpt_path/--ms_ckpt_path stand for a command: give them or a command, not both")
    if args.command == "ms-to-hf" and args.dtype is not None:
        parser.error("ms-to-hf keeps the checkpoint's dtypes; --dtype is for hf-to-ms")
    if args.command is None:
        if args.pt_ckpt_path is None or args.ms_ckpt_path is None:
            parser.error("give a command (hf-to-ms, ms-to-hf), or both --pt_ckpt_path and --ms_ckpt_path")
        args.source, args.destination, args.run = args.pt_ckpt_path, args.ms_ckpt_path, run_hf_to_ms
    return args


def _interrupt(signal_number: int, frame) -> None:
    """SIGTERM handler: unwind as Ctrl-C does, so that temporary files are removed on the way out."""
    raise KeyboardInterrupt(signal.Signals(signal_number).name)


def _error_text(error: Exception) -> str:
    """One line for an error: an OSError as ``path: reason``, without its errno prefix."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``glm-convert`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Prints the summary on stdout. Unusable input prints ``glm-convert: error: ...`` on stderr and returns 2
    (with ``--debug``, the traceback instead); nothing is written then. Ctrl-C or SIGTERM removes what was
    being written and returns 128 + the signal number (130, 143).
    """
    args = _parse(build_parser(), argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("glm-convert: %(message)s"))
    logger = logging.getLogger("glm_convert")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = args.run(args)
    except (ConversionError, ValueError, OSError) as error:
        if args.debug:
            raise
        print(f"glm-convert: error: {_error_text(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as interruption:
        name = str(interruption) or "SIGINT"
        print(f"glm-convert: interrupted ({name}); nothing was written", file=sys.stderr)
        return 128 + signal.Signals[name].value
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        logger.removeHandler(handler)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

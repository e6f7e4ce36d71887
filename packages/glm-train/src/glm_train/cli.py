"""The ``glm-train`` command: MindFormers' ``run_mindformer.py`` flags, plus tool subcommands.

    glm-train --config run_glm_6b_lora.yaml --run_mode finetune --load_checkpoint glm_6b \
              --train_dataset_dir train.mindrecord
    glm-train merge-lora --base glm_6b.ckpt --adapter glm-6b-lora_rank_0-1_500.ckpt --output merged.ckpt

Each run mode calls one function of the Python API (:func:`glm_train.runs.run`); errors print one line
(``glm-train: error: …``, exit status 2 for a bad config, flag, file or checkpoint) unless ``--debug``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from glm_train.run_config import RUN_MODES, shipped_configs

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130
SUBCOMMANDS = ("merge-lora", "compare", "launch", "hccl-table", "merge-hccl", "merge")  # see _subcommands


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse's parser with its errors on one line and exit status 2 (argparse prints its usage above them)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_run_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="glm-train",
        description="Fine-tune, evaluate and run ChatGLM-6B on MindSpore, configured by MindFormers' YAML run "
                    "configs. Tool subcommands (each with --help): "
                    f"{', '.join(SUBCOMMANDS)}.",
        epilog=f"shipped configs (give the name or a path): {', '.join(shipped_configs())}")
    parser.add_argument("--config", required=True, help="a run config YAML (MindFormers' layout) or a shipped name")
    parser.add_argument("--run_mode", choices=RUN_MODES, help="what to run (default: the config's run_mode)")
    parser.add_argument("--load_checkpoint", help="model weights to start from: a .ckpt or a model folder")
    parser.add_argument("--train_dataset_dir", help="training records (glm-data adgen --mode train)")
    parser.add_argument("--eval_dataset_dir", help="evaluation records (glm-data adgen --mode eval)")
    parser.add_argument("--predict_data", nargs="+", help="predict: prompts, or one text file of prompts per line")
    parser.add_argument("--output_dir", help="where checkpoints, logs, predictions and metrics go")
    parser.add_argument("--device_target", choices=("CPU", "Ascend", "GPU"), help="the device (default: config's)")
    parser.add_argument("--device_id", type=int, help="the device's id")
    parser.add_argument("--use_parallel", action=argparse.BooleanOptionalAction, default=None,
                        help="distributed run (msrun or a rank table starts the processes)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                        help="continue a run exactly from its newest checkpoint in --output_dir, or from CKPT")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set runner_config.batch_size=4 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (the JSONL log is written)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def _subcommands() -> dict:
    from glm_train import compare, launch, merge_checkpoints, merge_lora, rank_table

    return {"merge-lora": (merge_lora.add_merge_lora_arguments, merge_lora.run_merge_lora,
                           "fold a LoRA adapter checkpoint into its base checkpoint"),
            "launch": (launch.add_launch_arguments, launch.run_launch,
                       "run a distributed fine-tune with msrun (one process per device), ending it all when "
                       "a rank fails"),
            "hccl-table": (rank_table.add_hccl_table_arguments, rank_table.run_hccl_table,
                           "write an Ascend rank table (RANK_TABLE_FILE) for this server's devices"),
            "merge-hccl": (rank_table.add_merge_hccl_arguments, rank_table.run_merge_hccl,
                           "join single-server rank tables into one for a multi-server run"),
            "merge": (merge_checkpoints.add_merge_arguments, merge_checkpoints.run_merge,
                      "merge a distributed run's per-rank checkpoints into one (or split one for a strategy)"),
            "compare": (compare.add_compare_arguments, compare.run_compare,
                        "eval runs side by side: scores, and answers beside their references")}


def _interrupt_on_sigterm() -> None:
    """SIGTERM ends the process as Ctrl-C does, so partial outputs are removed on the way out."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    from glm_data import DataError
    from glm_train.trainer import TrainingError

    argv = list(sys.argv[1:] if argv is None else argv)
    _interrupt_on_sigterm()
    subcommands = _subcommands() if argv and argv[0] in SUBCOMMANDS else {}
    if subcommands:
        add_arguments, run_command, description = subcommands[argv[0]]
        parser = OneLineErrorParser(prog=f"glm-train {argv[0]}", description=description)
        add_arguments(parser)
        parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
        args = parser.parse_args(argv[1:])
    else:
        parser = build_run_parser()
        args = parser.parse_args(argv)
    try:
        if subcommands:
            return run_command(args)
        from glm_train.runs import run_from_arguments

        return run_from_arguments(args)
    except KeyboardInterrupt:
        print("glm-train: interrupted; finished checkpoints are kept, partial files removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    # Bad configs, flags, files and checkpoints: RunConfigError, TrainingCheckpointError and PromptFileError
    # are ValueErrors too.
    except (TrainingError, DataError, ValueError, FileNotFoundError) as error:
        if args.debug:
            raise
        print(f"glm-train: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
              file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:
        if args.debug:
            raise
        print(f"glm-train: error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

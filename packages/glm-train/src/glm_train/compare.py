"""``glm-train compare``: eval runs side by side: their scores in one table, and a few examples with each
run's answer beside the reference.

    glm-train compare output/eval_before output/eval_after --examples 3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from glm_train.evaluate import METRIC_LABELS, METRICS_NAME, PREDICTIONS_NAME


def read_eval_run(folder: Path) -> tuple[dict, list[dict]]:
    """An eval run's ``metrics.json`` and ``predictions.jsonl``; ``ValueError`` naming what is missing."""
    metrics_file, predictions_file = folder / METRICS_NAME, folder / PREDICTIONS_NAME
    for file in (metrics_file, predictions_file):
        if not file.is_file():
            raise ValueError(f"{folder} is not an eval run's output: it lacks {file.name}")
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in predictions_file.read_text(encoding="utf-8").splitlines() if line]
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{folder}: its eval files are not JSON ({error})") from None
    return metrics, rows


def comparison(folders: list[Path], examples: int = 3) -> str:
    """The text ``glm-train compare`` prints."""
    runs = [(folder, *read_eval_run(folder)) for folder in folders]
    width = max(12, *(len(folder.name) for folder in folders))
    lines = [f"{'':<10}" + "".join(f"{folder.name:>{width + 2}}" for folder in folders)]
    for key, label in METRIC_LABELS.items():
        lines.append(f"{label:<10}" + "".join(f"{metrics[key]:>{width + 2}.2f}" for _, metrics, _ in runs))
    lines.append(f"{'examples':<10}" + "".join(f"{metrics['n']:>{width + 2}d}" for _, metrics, _ in runs))
    for index in range(min(examples, *(len(rows) for _, _, rows in runs))):
        first = runs[0][2][index]
        lines += ["", f"[{index}] {first['content']}", f"  reference: {first['reference']}"]
        lines += [f"  {folder.name}: {rows[index]['prediction']}" for folder, _, rows in runs]
    return "\n".join(lines)


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="EVAL_DIR",
                        help="output folders of eval runs (each holding metrics.json and predictions.jsonl)")
    parser.add_argument("--examples", type=int, default=3, metavar="N",
                        help="examples shown with every run's answer beside the reference (default: %(default)s)")


def run_compare(args: argparse.Namespace) -> int:
    if args.examples < 0:
        raise ValueError(f"--examples must be >= 0, got {args.examples}")
    print(comparison(args.runs, args.examples))
    return 0

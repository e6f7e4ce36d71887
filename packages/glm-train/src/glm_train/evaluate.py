"""The ``eval`` run: batched generation over evaluation records, scored with glm-eval as ChatGLM-6B scores.

What is scored follows the original's ``compute_metrics`` (THUDM ``ptuning/main.py``; MindFormers' ADGEN
metric does the same): the prediction is the generated ids after the prompt, up to ``<eop>``, decoded with
``skip_special_tokens``; the reference is the record's ``labels`` (the answer as the model is trained on
it: tokenized, cut to ``max_target_length``) decoded the same way. Both are stripped, as the original
strips the predictions it writes. Two departures, both in the reference: the original's labels end in
``[gMASK] <sop>`` and its decode keeps ``[gMASK]`` (so every reference ended in that text, which no answer
can match); here the reference stops before it. And no ``process_response``: it would turn the
prediction's ASCII punctuation full-width while the tokenizer gives the reference ASCII punctuation.

Greedy decoding by default, as MindFormers evaluates; ``do_sample=True`` samples with ``glm chat``'s
``top_p`` and ``temperature``, as THUDM's evaluation does. Unlike MindFormers (batch 1 only), prompts run in
batches.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

from glm_core.generation_config import GenerationConfig
from glm_data import DataError, read_records
from glm_eval import score
from glm_train.predict import (
    RUN_GENERATION,
    atomic_text_file,
    batch_config,
    check_lengths,
    generate_answers,
    write_json_line,
)

PREDICTIONS_NAME = "predictions.jsonl"
METRICS_NAME = "metrics.json"
METRIC_LABELS = {"bleu-4": "BLEU-4", "rouge-1": "ROUGE-1", "rouge-2": "ROUGE-2", "rouge-l": "ROUGE-L"}
IGNORE_INDEX = -100  # labels' filler, as glm-data writes it


@dataclass
class EvaluationResult:
    """What :func:`evaluate` wrote and scored."""

    metrics: dict  # glm_eval.score's: "bleu-4", "rouge-1", "rouge-2", "rouge-l", "n", "empty_predictions"
    rows: list  # per example, as in predictions.jsonl: "content", "summary", "reference", "prediction"
    predictions_file: Path
    metrics_file: Path


def read_eval_records(eval_file: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """The first ``limit`` (default: all) records of an evaluation MindRecord (``glm-data adgen --mode eval``).

    Raises ``glm_data.DataError`` for a missing file, one without records, or one holding training records.
    """
    records = list(islice(read_records(eval_file), limit))
    if not records:
        raise DataError(f"{eval_file} holds no records")
    if not {"content", "summary"} <= records[0].keys():
        raise DataError(f"{eval_file} holds training records, not evaluation records: write these with "
                        "glm-data adgen --mode eval")
    return records


def reference_text(tokenizer, labels) -> str:
    """The answer a record's ``labels`` hold, as text: ids before ``[gMASK]``, ``-100`` dropped, decoded
    with ``skip_special_tokens`` and stripped."""
    ids = [int(token) for token in labels if token != IGNORE_INDEX]
    if tokenizer.gmask_token_id in ids:
        ids = ids[:ids.index(tokenizer.gmask_token_id)]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def prediction_text(tokenizer, answer_ids) -> str:
    """A generated answer (ids after the prompt, up to ``<eop>``) as the original scores it: decoded with
    ``skip_special_tokens``, stripped."""
    return tokenizer.decode(answer_ids, skip_special_tokens=True).strip()


def format_metrics(metrics: dict) -> str:
    """A small table of BLEU-4 and ROUGE-1/2/L (×100, as ChatGLM-6B reports them) and the example count."""
    lines = [f"{label:<8} {metrics[key]:8.4f}" for key, label in METRIC_LABELS.items()]
    lines.append(f"{'examples':<8} {metrics['n']:8d}")
    if metrics.get("empty_predictions"):
        lines.append(f"({metrics['empty_predictions']} empty predictions scored 0)")
    return "\n".join(lines)


def evaluate(model, tokenizer, eval_file: str | os.PathLike, output_dir: str | os.PathLike,
             config: GenerationConfig | None = None, *, batch_size: int = 8, limit: int | None = None,
             progress: bool = True, **overrides) -> EvaluationResult:
    """Generate an answer for every evaluation record, score them, write and print the scores.

    Args:
        model: a glm-core inference model with its weights loaded (``GLMChatModel`` or
            ``GLMForPreTraining(config, inference=True)``).
        tokenizer: the model's ``glm_tokenizer.ChatGLMTokenizer``.
        eval_file: a MindRecord file written by ``glm-data adgen --mode eval``.
        output_dir: receives ``predictions.jsonl`` (one ``{"content", "summary", "reference",
            "prediction"}`` object per record, in order; ``reference`` is what was scored) and
            ``metrics.json`` (glm-eval's scores, the evaluation file and the generation settings). Created
            if missing. Each file is written to a temporary file and renamed into place; an earlier run's
            ``metrics.json`` is removed before the new predictions take their place, so the two files never
            come from different runs.
        config: how to generate (default ``glm_train.predict.RUN_GENERATION``: greedy, 64 new tokens); its
            ``max_new_tokens`` is the most tokens of an answer, the ``max_target_length`` the records were made
            with, and each batch draws its own stream from its seed.
        batch_size: records generated together.
        limit: evaluate only the first ``limit`` records.
        progress: show a progress bar over the batches on stderr.
        overrides: fields of ``config`` to replace (``max_new_tokens=32``, ``do_sample=True`` …).

    Returns:
        An :class:`EvaluationResult`; the score table is printed on stdout.

    Raises:
        ValueError: a batch size or limit below 1, a bad generation option, or a prompt too long for the
            model with ``max_new_tokens``.
        TypeError: an override that is no field of ``GenerationConfig``.
        glm_data.DataError: a missing eval file, or one without evaluation records.
    """
    from tqdm import tqdm

    config = (config or RUN_GENERATION).updated(**overrides)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    output_dir = Path(output_dir)
    predictions_file, metrics_file = output_dir / PREDICTIONS_NAME, output_dir / METRICS_NAME
    records = read_eval_records(eval_file, limit)
    check_lengths(model, [len(record["input_ids"]) for record in records], config.max_new_tokens,
                  lambda index: f"{eval_file}: the prompt of record {index}")
    output_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    with atomic_text_file(predictions_file) as file:
        starts = range(0, len(records), batch_size)
        for index, start in enumerate(tqdm(starts, desc="eval", unit="batch", disable=not progress)):
            batch = records[start:start + batch_size]
            answers = generate_answers(model, tokenizer, [record["input_ids"].tolist() for record in batch],
                                       batch_config(config, index), batch_size=batch_size)
            for record, answer in zip(batch, answers):
                row = {"content": record["content"], "summary": record["summary"],
                       "reference": reference_text(tokenizer, record["labels"]),
                       "prediction": prediction_text(tokenizer, answer)}
                write_json_line(file, row)
                rows.append(row)
        metrics_file.unlink(missing_ok=True)  # the old scores go before the new predictions arrive

    metrics = score([row["prediction"] for row in rows], [row["reference"] for row in rows])
    report = {**metrics, "eval_file": str(eval_file),
              "generation": {"batch_size": batch_size, **asdict(config)}}
    with atomic_text_file(metrics_file) as file:
        json.dump(report, file, ensure_ascii=False, indent=2)
        file.write("\n")
    print(format_metrics(metrics))
    return EvaluationResult(metrics, rows, predictions_file, metrics_file)

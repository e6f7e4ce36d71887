"""Reading predictions and references from files: plain text (one per line) or JSON lines."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from glm_eval.scoring import score

JSONL_SUFFIX = ".jsonl"


class InputFileError(ValueError):
    """A predictions or references file that cannot be read; the message names the file and line."""


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for each line of a UTF-8 file, without its ``\\n`` or ``\\r\\n``."""
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            # utf-8-sig on the first line drops the byte-order mark some Windows editors write.
            encoding = "utf-8-sig" if number == 1 else "utf-8"
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as error:
                raise InputFileError(f"{path}, line {number}: not UTF-8 text ({error.reason})") from None
            if line.endswith("\n"):
                line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
            yield number, line


def _parse_record(path: Path, number: int, line: str, fields: tuple[str, ...]) -> tuple[str, ...]:
    """The string values of ``fields`` in one JSON-lines record."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputFileError(f"{path}, line {number}: not JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise InputFileError(
            f"{path}, line {number}: expected a JSON object with {_quoted(fields)}, "
            f"got a {type(record).__name__}"
        )
    values = []
    for field in fields:
        if field not in record:
            keys = ", ".join(map(repr, record)) or "none"
            raise InputFileError(f"{path}, line {number}: no {field!r} field (its fields: {keys})")
        value = record[field]
        if not isinstance(value, str):
            raise InputFileError(
                f"{path}, line {number}: {field!r} must be a string, got {type(value).__name__}"
            )
        values.append(value)
    return tuple(values)


def _quoted(fields: tuple[str, ...]) -> str:
    return " and ".join(repr(field) for field in fields)


def read_texts(path: str | os.PathLike, field: str, json_lines: bool | None = None) -> list[str]:
    """The texts of a file: ``field`` of each record for a JSON-lines file, else each line.

    Args:
        path: a JSON-lines file (one JSON object per line) or any other UTF-8 text file
            (one text per line; an empty line is an empty text).
        field: the record field holding the text in a JSON-lines file, e.g. ``"prediction"``.
        json_lines: read the file as JSON lines; by default, when its name ends in ``.jsonl``.

    Returns:
        The texts in file order.

    Raises:
        InputFileError: a line is not UTF-8, not JSON, not an object, or lacks ``field`` as a string;
            the file has no lines.
        OSError: the file cannot be opened.
    """
    path = Path(path)
    if json_lines if json_lines is not None else path.suffix == JSONL_SUFFIX:
        texts = [_parse_record(path, number, line, (field,))[0] for number, line in _numbered_lines(path)]
    else:
        texts = [line for _, line in _numbered_lines(path)]
    if not texts:
        raise InputFileError(f"{path} is empty: nothing to score")
    return texts


def read_pairs(
    predictions_path: str | os.PathLike,
    references_path: str | os.PathLike,
    prediction_field: str | None = None,
    reference_field: str | None = None,
) -> tuple[list[str], list[str]]:
    """Predictions and references from two files of equal length (see :func:`read_texts`).

    A ``.jsonl`` predictions file gives its ``"prediction"`` fields, a ``.jsonl`` references file its
    ``"reference"`` fields, so one JSON-lines file holding both may be passed as both paths. Naming a
    field reads that file as JSON lines whatever its suffix: ChatGLM-6B's ptuning writes
    ``generated_predictions.txt`` with ``"predict"``/``"labels"``, ``glm generate`` writes ``"response"``,
    ADGEN files hold ``"summary"``.

    Raises:
        InputFileError: either file is unreadable as texts (see :func:`read_texts`), or one has more
            lines than the other; the message names the first line without a counterpart.
        OSError: a file cannot be opened.
    """
    predictions = read_texts(predictions_path, prediction_field or "prediction",
                             json_lines=True if prediction_field else None)
    references = read_texts(references_path, reference_field or "reference",
                            json_lines=True if reference_field else None)
    if len(predictions) != len(references):
        longer, shorter = (
            (predictions_path, references_path)
            if len(predictions) > len(references)
            else (references_path, predictions_path)
        )
        common = min(len(predictions), len(references))
        raise InputFileError(
            f"{predictions_path} has {len(predictions)} lines but {references_path} has "
            f"{len(references)}: line {common + 1} of {longer} has no counterpart in {shorter}"
        )
    return predictions, references


def read_jsonl_pairs(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Predictions and references from a JSON-lines file of ``{"prediction", "reference"}`` records.

    Raises:
        InputFileError: a line is not UTF-8, not JSON, not an object, or lacks either field as a
            string; the file has no lines.
        OSError: the file cannot be opened.
    """
    path = Path(path)
    fields = ("prediction", "reference")
    records = [_parse_record(path, number, line, fields) for number, line in _numbered_lines(path)]
    if not records:
        raise InputFileError(f"{path} is empty: nothing to score")
    predictions = [prediction for prediction, _ in records]
    references = [reference for _, reference in records]
    return predictions, references


def score_file(
    path: str | os.PathLike, *, workers: int = 1, progress: bool = False
) -> dict[str, float | int]:
    """Score a JSON-lines file of ``{"prediction": ..., "reference": ...}`` records.

    Args:
        path: the JSON-lines file, one record per line.
        workers: processes to score in (see :func:`glm_eval.score`).
        progress: show a progress bar on stderr for long runs.

    Returns:
        The same dictionary as :func:`glm_eval.score`.

    Raises:
        InputFileError: a line is not UTF-8, not JSON, not an object, or lacks either field as a
            string; the file has no lines. The message gives the line number.
        OSError: the file cannot be opened.
    """
    predictions, references = read_jsonl_pairs(path)
    return score(predictions, references, workers=workers, progress=progress)

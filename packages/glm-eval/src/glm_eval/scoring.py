"""BLEU-4 and ROUGE-1/2/L exactly as ChatGLM-6B's ``ptuning/main.py`` ``compute_metrics`` reports them.

For each (prediction, reference) pair the reference code computes

* ROUGE-1/2/L: the F-score of ``rouge_chinese.Rouge`` over the ``jieba.cut`` words joined by spaces;
* BLEU-4: ``nltk`` ``sentence_bleu([list(reference)], list(prediction))`` over *characters*, smoothed
  with ``SmoothingFunction().method3``;

each multiplied by 100 and rounded to 4 decimals, then averages every metric over the pairs with
``numpy.mean``. The one departure: a pair whose prediction or reference is empty or whitespace only,
where ``rouge_chinese`` raises ``ValueError``, scores 0 on every metric and is counted instead of
aborting the whole evaluation.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import signal
import sys
from collections.abc import Iterator, Sequence

import jieba
import numpy as np
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_chinese import Rouge
from tqdm import tqdm

METRICS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")

_ROUGE = Rouge()
_SMOOTHING = SmoothingFunction().method3
# Pairs handed to a worker process at a time: large enough to amortise the pickling round trip,
# small enough that the progress bar still moves.
_CHUNK_SIZE = 64
# Seconds before the progress bar appears, so that short runs print nothing.
_PROGRESS_DELAY_S = 2.0


@functools.cache
def load_jieba() -> None:
    """Build jieba's prefix dictionary now (about a second) and silence its banner on stderr.

    Runs once per process (later calls return at once): before scoring here, and in every worker process.
    """
    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()


def _start_worker() -> None:
    """Prepare a worker process: Ctrl-C and SIGTERM are its parent's to handle (the parent stops its workers,
    with SIGTERM, which must kill them whatever handler they inherited), then jieba."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    load_jieba()


def is_blank(text: str) -> bool:
    """True for an empty or whitespace-only text: the texts ``rouge_chinese`` refuses to score."""
    return not text.strip()


def score_pair(prediction: str, reference: str) -> dict[str, float]:
    """Score one prediction against its reference as ChatGLM-6B's ``compute_metrics`` does.

    Args:
        prediction: the generated text.
        reference: the expected text.

    Returns:
        ``{"bleu-4", "rouge-1", "rouge-2", "rouge-l"}``, each ×100 and rounded to 4 decimals;
        all 0.0 when either text is empty or whitespace only.
    """
    if is_blank(prediction) or is_blank(reference):
        return dict.fromkeys(METRICS, 0.0)
    load_jieba()
    rouge = _ROUGE.get_scores(" ".join(jieba.cut(prediction)), " ".join(jieba.cut(reference)))[0]
    bleu = sentence_bleu([list(reference)], list(prediction), smoothing_function=_SMOOTHING)
    return {
        "bleu-4": round(bleu * 100, 4),
        "rouge-1": round(rouge["rouge-1"]["f"] * 100, 4),
        "rouge-2": round(rouge["rouge-2"]["f"] * 100, 4),
        "rouge-l": round(rouge["rouge-l"]["f"] * 100, 4),
    }


def _score_pair_tuple(pair: tuple[str, str]) -> dict[str, float]:
    return score_pair(*pair)


def _score_pairs(pairs: list[tuple[str, str]], workers: int, progress: bool) -> Iterator[dict[str, float]]:
    """Per-pair scores in input order, computed here or spread over ``workers`` processes."""
    if workers == 1:
        with tqdm(pairs, disable=not progress, file=sys.stderr, unit="pair", delay=_PROGRESS_DELAY_S) as bar:
            for prediction, reference in bar:
                yield score_pair(prediction, reference)
        return
    # The pool is started before the progress bar, whose monitor thread must not exist at fork time.
    with multiprocessing.Pool(workers, initializer=_start_worker) as pool:
        scores = pool.imap(_score_pair_tuple, pairs, chunksize=_CHUNK_SIZE)
        yield from tqdm(
            scores,
            total=len(pairs),
            disable=not progress,
            file=sys.stderr,
            unit="pair",
            delay=_PROGRESS_DELAY_S,
        )


def score(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, float | int]:
    """Average BLEU-4 and ROUGE-1/2/L over prediction/reference pairs, as ChatGLM-6B reports them.

    Args:
        predictions: generated texts.
        references: expected texts, one per prediction.
        workers: processes to score in; 1 scores in this process. The result does not depend on it.
        progress: show a progress bar on stderr for runs longer than two seconds.

    Returns:
        ``{"bleu-4", "rouge-1", "rouge-2", "rouge-l"}`` (floats: the mean over all pairs of each
        pair's score ×100 rounded to 4 decimals), ``"n"`` (the number of pairs) and
        ``"empty_predictions"`` (pairs whose prediction or reference is empty or whitespace only;
        they score 0 and are included in the means).

    Raises:
        ValueError: the two sequences differ in length, are empty, or ``workers`` is below 1.
        TypeError: an item is not a ``str``.
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references: "
            "give exactly one reference per prediction"
        )
    if not predictions:
        raise ValueError("no predictions to score")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    for name, texts in (("predictions", predictions), ("references", references)):
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{index}] is a {type(text).__name__}, not a str")

    load_jieba()
    pairs = list(zip(predictions, references))
    columns: dict[str, list[float]] = {metric: [] for metric in METRICS}
    for pair_scores in _score_pairs(pairs, min(workers, len(pairs)), progress):
        for metric in METRICS:
            columns[metric].append(pair_scores[metric])

    result: dict[str, float | int] = {metric: float(np.mean(columns[metric])) for metric in METRICS}
    result["n"] = len(pairs)
    result["empty_predictions"] = sum(is_blank(p) or is_blank(r) for p, r in pairs)
    return result

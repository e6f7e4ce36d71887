"""The ``predict`` run: prompts in, generations out (JSON lines), in batches through glm-core's decoder.

Each prompt is a first chat round, as ``glm chat`` builds it (the raw query), and each response is cleaned
as ``glm chat`` cleans it (``glm_core.chat.process_response``). :func:`generate_answers` is the one place
this package calls glm-core's generation; ``glm_train.evaluate`` runs it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from glm_core import generate, process_response


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file (and the line)."""


def read_prompts(path: str | os.PathLike) -> list[str]:
    """The prompts of a UTF-8 text file, one per line, stripped of surrounding whitespace; blank lines are
    skipped (as ``glm chat`` skips empty queries).

    Raises :class:`PromptFileError` for a missing or unreadable file, a line that is not UTF-8 (naming the
    line), or a file without any prompt.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PromptFileError(f"prompt file not found: {path}") from None
    except OSError as error:
        raise PromptFileError(f"cannot read prompt file {path}: {error.strerror or error}") from None
    prompts = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            # utf-8-sig on the first line drops the byte-order mark some Windows editors write.
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise PromptFileError(f"{path}, line {number}: not UTF-8 text ({error.reason} at byte "
                                  f"{error.start + 1})") from None
        if line.strip():
            prompts.append(line.strip())
    if not prompts:
        raise PromptFileError(f"{path} holds no prompt: write one prompt per line")
    return prompts


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> np.ndarray:
    """Prompts of token ids as one int64 ``[batch, longest]`` array, left-padded with ``pad_token_id``
    (the layout glm-core's ``generate`` takes: a row's answer then starts at the same column in every row)."""
    longest = max(len(prompt) for prompt in prompts)
    batch = np.full((len(prompts), longest), pad_token_id, np.int64)
    for row, prompt in enumerate(prompts):
        batch[row, longest - len(prompt):] = prompt
    return batch


def generate_answers(model, tokenizer, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                     do_sample: bool, top_p: float, temperature: float, seed: int | None,
                     batch_size: int | None = None) -> list[list[int]]:
    """The answers of one batch of prompts (token ids, each ending ``[gMASK] <sop>``): for each prompt, the
    new ids up to, not including, ``<eop>``.

    Greedy unless ``do_sample``; sampling draws with ``top_p`` and ``temperature`` from a generator seeded
    with ``seed``. Ids the tokenizer has no piece for are never produced. With ``batch_size``, a shorter
    batch is filled up with copies of its first prompt, whose answers are dropped: every batch of a run then
    has one shape, and MindSpore compiles the decoder's graphs once rather than again for the last batch.
    Raises ``ValueError`` (from glm-core) when a prompt and ``max_new_tokens`` exceed the model's
    ``seq_length``.
    """
    filled = list(prompts) + [prompts[0]] * max((batch_size or 0) - len(prompts), 0)
    ids = left_pad(filled, model.config.pad_token_id)
    output = generate(model, ids, max_new_tokens=max_new_tokens, do_sample=do_sample, top_p=top_p,
                      temperature=temperature, seed=seed, num_pieces=tokenizer.vocab_size)
    answers = []
    for row in output[:len(prompts), ids.shape[1]:].tolist():
        end = row.index(model.config.eos_token_id) if model.config.eos_token_id in row else len(row)
        answers.append(row[:end])
    return answers


def batch_seed(seed: int, batch_index: int) -> int:
    """A seed for batch ``batch_index`` of a run seeded with ``seed``: batches draw independent streams
    (one seed for all would give every batch the same uniform draws)."""
    return int(np.random.SeedSequence([seed, batch_index]).generate_state(1)[0])


def check_lengths(model, prompt_lengths: Sequence[int], max_new_tokens: int, describe) -> None:
    """Raise ``ValueError`` before any compile when the longest prompt and ``max_new_tokens`` exceed the
    model's ``seq_length``; ``describe(index)`` names the prompt in the message."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    longest = int(np.argmax(prompt_lengths))
    seq_length = model.config.seq_length
    if prompt_lengths[longest] + max_new_tokens > seq_length:
        raise ValueError(f"{describe(longest)} is {prompt_lengths[longest]} tokens long: with "
                         f"max_new_tokens={max_new_tokens} it exceeds the model's seq_length {seq_length}; "
                         "shorten it or ask for fewer new tokens")


@contextlib.contextmanager
def atomic_text_file(path: Path) -> Iterator[TextIO]:
    """Write UTF-8 text to ``path`` through a temporary file in the same folder, renamed into place when the
    block ends without an exception; on any exception (KeyboardInterrupt included) the temporary file is
    removed and ``path`` is left as it was."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)  # mkstemp makes the file private (0600): give it a new file's permissions
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            yield file
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_json_line(file: TextIO, row: dict) -> None:
    file.write(json.dumps(row, ensure_ascii=False) + "\n")


def predict(model, tokenizer, prompts: Sequence[str], output_file: str | os.PathLike, *, batch_size: int = 8,
            max_new_tokens: int = 64, do_sample: bool = False, top_p: float = 0.7, temperature: float = 0.95,
            seed: int = 0, progress: bool = True) -> list[dict[str, str]]:
    """Answer each prompt as a first chat round and write ``{"prompt", "response"}`` JSON lines, in order.

    Args:
        model: a glm-core inference model with its weights loaded (``GLMChatModel`` or
            ``GLMForPreTraining(config, inference=True)``).
        tokenizer: the model's ``glm_tokenizer.ChatGLMTokenizer``.
        prompts: the queries (see :func:`read_prompts` for a file of them).
        output_file: the JSON-lines file to write (its folder is created if missing); written to a temporary
            file and renamed into place, so an interrupted run leaves no partial file (and an earlier file
            stays whole).
        batch_size: prompts generated together.
        max_new_tokens: most tokens of a response.
        do_sample, top_p, temperature: greedy by default; with ``do_sample`` nucleus sampling (``glm chat``
            samples with ``top_p=0.7, temperature=0.95``).
        seed: seeds the sampling (each batch draws its own stream, see :func:`batch_seed`).
        progress: show a progress bar over the batches on stderr.

    Returns:
        The rows written.

    Raises:
        ValueError: no prompts, a batch size below 1, or a prompt too long for the model with
            ``max_new_tokens``.
    """
    from tqdm import tqdm

    output_file = Path(output_file)
    if not prompts:
        raise ValueError("no prompts to predict")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    # A first chat round's prompt is the query itself (the round transcript starts with a second round).
    prompt_ids = [tokenizer.encode(prompt) for prompt in prompts]
    check_lengths(model, [len(ids) for ids in prompt_ids], max_new_tokens, lambda index: f"prompt {index + 1}")
    output_file.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with atomic_text_file(output_file) as file:
        starts = range(0, len(prompts), batch_size)
        for index, start in enumerate(tqdm(starts, desc="predict", unit="batch", disable=not progress)):
            batch = range(start, min(start + batch_size, len(prompts)))
            answers = generate_answers(model, tokenizer, [prompt_ids[i] for i in batch],
                                       max_new_tokens=max_new_tokens, do_sample=do_sample, top_p=top_p,
                                       temperature=temperature, seed=batch_seed(seed, index),
                                       batch_size=batch_size)
            for position, answer in zip(batch, answers):
                row = {"prompt": prompts[position], "response": process_response(tokenizer.decode(answer))}
                write_json_line(file, row)
                rows.append(row)
    return rows

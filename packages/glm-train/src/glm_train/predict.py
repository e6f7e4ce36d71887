"""The ``predict`` run: prompts in, generations out (JSON lines), in batches through glm-core's decoder.

Each prompt is a first chat round, as ``glm chat`` builds it (the raw query), and each response is cleaned
as ``glm chat`` cleans it (``glm_core.chat.process_response``). :func:`generate_answers` is the one place
this package calls glm-core's generation; ``glm_train.evaluate`` runs it too. Both runs take how to generate
as one ``glm_core.GenerationConfig`` (:data:`RUN_GENERATION` by default; a run config's keys become one
through ``glm_train.run_config.generation_config``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from glm_core import generate, process_response
from glm_core.generation_config import CHAT_GENERATION, GenerationConfig

# eval and predict: greedy, 64 new tokens, seed 0; do_sample=True samples as glm chat does (top_p, temperature)
RUN_GENERATION = dataclasses.replace(CHAT_GENERATION, max_length=None, max_new_tokens=64, do_sample=False, seed=0)


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


def generate_answers(model, tokenizer, prompts: Sequence[Sequence[int]], config: GenerationConfig, *,
                     batch_size: int | None = None) -> list[list[int]]:
    """The answers of one batch of prompts (token ids, each ending ``[gMASK] <sop>``): for each prompt, the
    new ids up to, not including, ``<eop>``.

    ``config`` says how to generate (its ``max_new_tokens``, greedy or sampled, its seed). Ids the tokenizer
    has no piece for are never produced. With ``batch_size``, a shorter batch is filled up with copies of its
    first prompt, whose answers are dropped: every batch of a run then has one shape, and MindSpore compiles
    the decoder's graphs once rather than again for the last batch. Raises ``ValueError`` (from glm-core)
    when a prompt and the new tokens exceed the model's ``seq_length``.
    """
    filled = list(prompts) + [prompts[0]] * max((batch_size or 0) - len(prompts), 0)
    ids = left_pad(filled, model.config.pad_token_id)
    output = generate(model, ids, config, num_pieces=tokenizer.vocab_size)
    answers = []
    for row in output[:len(prompts), ids.shape[1]:].tolist():
        end = row.index(model.config.eos_token_id) if model.config.eos_token_id in row else len(row)
        answers.append(row[:end])
    return answers


def batch_config(config: GenerationConfig, batch_index: int) -> GenerationConfig:
    """``config`` for batch ``batch_index`` of a run: its own seed drawn from ``(config.seed, batch_index)``,
    so batches draw independent streams (one seed for all would give every batch the same uniform draws).
    An unseeded ``config`` stays unseeded."""
    if config.seed is None:
        return config
    seed = np.random.SeedSequence([config.seed, batch_index]).generate_state(1)[0]
    return dataclasses.replace(config, seed=int(seed))


def check_lengths(model, prompt_lengths: Sequence[int], max_new_tokens: int | None, describe) -> None:
    """Raise ``ValueError`` before any compile when the longest prompt and ``max_new_tokens`` exceed the
    model's ``seq_length``, or when ``max_new_tokens`` is not set (batches are left-padded to their longest
    prompt, so a ``max_length`` would give each batch a different room); ``describe(index)`` names the
    prompt in the message."""
    if max_new_tokens is None:
        raise ValueError("eval and predict runs need max_new_tokens (new tokens per answer) in their "
                         "generation config, not only max_length")
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


def predict(model, tokenizer, prompts: Sequence[str], output_file: str | os.PathLike,
            config: GenerationConfig | None = None, *, batch_size: int = 8, progress: bool = True,
            **overrides) -> list[dict[str, str]]:
    """Answer each prompt as a first chat round and write ``{"prompt", "response"}`` JSON lines, in order.

    Args:
        model: a glm-core inference model with its weights loaded (``GLMChatModel`` or
            ``GLMForPreTraining(config, inference=True)``).
        tokenizer: the model's ``glm_tokenizer.ChatGLMTokenizer``.
        prompts: the queries (see :func:`read_prompts` for a file of them).
        output_file: the JSON-lines file to write (its folder is created if missing); written to a temporary
            file and renamed into place, so an interrupted run leaves no partial file (and an earlier file
            stays whole).
        config: how to generate (default :data:`RUN_GENERATION`: greedy, 64 new tokens); its
            ``max_new_tokens`` is the most tokens of a response, and each batch draws its own stream from its
            seed (see :func:`batch_config`).
        batch_size: prompts generated together.
        progress: show a progress bar over the batches on stderr.
        overrides: fields of ``config`` to replace (``max_new_tokens=32``, ``do_sample=True`` …).

    Returns:
        The rows written.

    Raises:
        ValueError: no prompts, a batch size below 1, a bad generation option, or a prompt too long for the
            model with ``max_new_tokens``.
        TypeError: an override that is no field of ``GenerationConfig``.
    """
    from tqdm import tqdm

    config = (config or RUN_GENERATION).updated(**overrides)
    output_file = Path(output_file)
    if not prompts:
        raise ValueError("no prompts to predict")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    # A first chat round's prompt is the query itself (the round transcript starts with a second round).
    prompt_ids = [tokenizer.encode(prompt) for prompt in prompts]
    check_lengths(model, [len(ids) for ids in prompt_ids], config.max_new_tokens,
                  lambda index: f"prompt {index + 1}")
    output_file.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with atomic_text_file(output_file) as file:
        starts = range(0, len(prompts), batch_size)
        for index, start in enumerate(tqdm(starts, desc="predict", unit="batch", disable=not progress)):
            batch = range(start, min(start + batch_size, len(prompts)))
            answers = generate_answers(model, tokenizer, [prompt_ids[i] for i in batch],
                                       batch_config(config, index), batch_size=batch_size)
            for position, answer in zip(batch, answers):
                row = {"prompt": prompts[position], "response": process_response(tokenizer.decode(answer))}
                write_json_line(file, row)
                rows.append(row)
    return rows

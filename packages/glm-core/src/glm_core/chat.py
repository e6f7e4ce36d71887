"""Chat with ChatGLM-6B: the inference model, the original's prompt format and response clean-up.

``GLMChatModel.chat`` reproduces THUDM's ``modeling_chatglm.chat``: the prompt is the raw query when there is
no history, else the ``[Round i]`` transcript of :func:`glm_tokenizer.chat_prompt`; the
answer is decoded and passed through :func:`process_response`. Two things are added: ids the tokenizer has
no piece for are never generated, and a history too long for the model loses its oldest rounds instead of
failing. :func:`interactive_chat` is the console loop behind ``glm chat``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from glm_core.checkpoint import save_model_checkpoint
from glm_core.config import GLMConfig
from glm_core.generation import GenerationStats, generator_for
from glm_core.generation_config import CHAT_GENERATION, GenerationConfig
from glm_core.model import GLMForPreTraining
from glm_core.names import CHECKPOINT_NAME
from glm_tokenizer import chat_prompt

logger = logging.getLogger(__name__)

MIN_REPLY_TOKENS = 16  # history is dropped until the prompt leaves at least this many tokens for the reply

History = list[tuple[str, str]]

# process_response: ASCII punctuation next to a CJK character becomes full-width, as in the original.
_FULL_WIDTH = ((",", "，"), ("!", "！"), (":", "："), (";", "；"), (r"\?", "？"))
_CJK = r"[\u4e00-\u9fff]"
_PUNCTUATION_RULES = [rule for ascii_, full in _FULL_WIDTH
                      for rule in ((re.compile(f"({_CJK}){ascii_}"), rf"\1{full}"),
                                   (re.compile(f"{ascii_}({_CJK})"), rf"{full}\1"))]


def process_response(response: str) -> str:
    """The original chat's clean-up of a decoded answer.

    Strips surrounding whitespace, replaces ``[[训练时间]]`` with ``2023年`` and turns ASCII ``, ! : ; ?``
    that touch a CJK character into their full-width forms. Returns the cleaned string.
    """
    response = response.strip().replace("[[训练时间]]", "2023年")
    for pattern, replacement in _PUNCTUATION_RULES:
        response = pattern.sub(replacement, response)
    return response


@dataclasses.dataclass
class ChatInputs:
    """What ``chat`` runs: the prompt, its ids, the total length and how many old rounds were left out."""

    prompt: str
    input_ids: list[int]
    max_length: int  # prompt + reply, as generate's max_length
    dropped_rounds: int


def fit_prompt(tokenizer, query: str, history: Sequence[tuple[str, str]], seq_length: int,
               max_length: int = CHAT_GENERATION.max_length, max_new_tokens: int | None = None) -> ChatInputs:
    """Build the chat prompt, dropping the oldest rounds of ``history`` until it fits the model.

    ``max_length`` counts prompt and reply (Hugging Face's meaning) and is capped at ``seq_length``; the
    prompt is shortened until it leaves :data:`MIN_REPLY_TOKENS` for the reply. With ``max_new_tokens`` the
    reply has exactly that room and only ``seq_length`` limits the total. The current query is never
    dropped: raises ``ValueError`` when it alone leaves no room for a reply.
    """
    if max_new_tokens is not None:
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        limit, reply_room = seq_length, max_new_tokens
    else:
        if max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        limit = min(max_length, seq_length)
        reply_room = min(MIN_REPLY_TOKENS, limit - 1)
    history = list(history)
    dropped = 0
    while True:
        prompt = chat_prompt(query, history[dropped:])
        ids = tokenizer.encode(prompt)
        if len(ids) + reply_room <= limit or dropped == len(history):
            break
        dropped += 1
    if max_new_tokens is not None and len(ids) + max_new_tokens > seq_length:
        raise ValueError(f"the query is {len(ids)} tokens long: with max_new_tokens={max_new_tokens} it "
                         f"exceeds the model's seq_length {seq_length}; shorten the query or ask for fewer "
                         "new tokens")
    if len(ids) >= limit:
        raise ValueError(f"the query is {len(ids)} tokens long and leaves no room for a reply within "
                         f"{limit} tokens (max_length {max_length}, model seq_length {seq_length}); "
                         "shorten the query")
    total = len(ids) + max_new_tokens if max_new_tokens is not None else limit
    return ChatInputs(prompt=prompt, input_ids=ids, max_length=total, dropped_rounds=dropped)


class GLMChatModel(GLMForPreTraining):
    """ChatGLM-6B for inference: KV cache on, Linear layers on the CPU kernel, ``chat``/``stream_chat``.

    Loads the same checkpoints as :class:`GLMForPreTraining`; ``config.use_past`` is switched on.
    """

    def __init__(self, config: GLMConfig):
        if not config.use_past:
            config = dataclasses.replace(config, use_past=True)
        super().__init__(config, inference=True)

    def generate(self, input_ids, config: GenerationConfig | None = None, **options) -> np.ndarray:
        """Generate with this model's :class:`~glm_core.generation.Generator`; see its ``generate``."""
        return generator_for(self).generate(input_ids, config, **options)

    @property
    def generation_stats(self) -> GenerationStats:
        """Timing of the last generation (of ``generate``, ``chat`` or ``stream_chat``)."""
        return generator_for(self).stats

    def chat(self, tokenizer, query: str, history: Sequence[tuple[str, str]] | None = None,
             config: GenerationConfig | None = None, **overrides) -> tuple[str, History]:
        """Answer ``query`` given ``history`` (pairs of query and response); returns ``(response, history)``.

        ``config`` (default :data:`CHAT_GENERATION`, the original's sampling) with ``overrides`` of its fields;
        ``max_length`` counts prompt and reply and is capped at the model's ``seq_length``. The returned
        history is the given one plus ``(query, response)``, even when old rounds had to be left out of the
        prompt. Raises ``ValueError`` for a query too long for the model or a bad option.
        """
        stream = self.stream_chat(tokenizer, query, history, config, **overrides)
        ((response, new_history),) = deque(stream, maxlen=1)  # run the stream through, keep its last value
        return response, new_history

    def chat_inputs(self, tokenizer, query: str, history: Sequence[tuple[str, str]] | None = None,
                    max_length: int = CHAT_GENERATION.max_length, max_new_tokens: int | None = None) -> ChatInputs:
        """The prompt ``chat`` would run, with its ids; logs once when old rounds are dropped."""
        history = list(history or [])
        inputs = fit_prompt(tokenizer, query, history, self.config.seq_length, max_length, max_new_tokens)
        if inputs.dropped_rounds:
            logger.warning("chat history too long for the model (seq_length %d): left out the %d oldest "
                           "of %d rounds", self.config.seq_length, inputs.dropped_rounds, len(history))
        return inputs

    def stream_chat(self, tokenizer, query: str, history: Sequence[tuple[str, str]] | None = None,
                    config: GenerationConfig | None = None, **overrides) -> Iterator[tuple[str, History]]:
        """Like :meth:`chat`, but yields ``(response_so_far, history)`` after each generated token.

        The last value yielded is what ``chat`` returns. Leaving the loop early stops generation.
        """
        history = list(history or [])
        config = (config or CHAT_GENERATION).updated(**overrides)
        inputs = self.chat_inputs(tokenizer, query, history, config.max_length or self.config.seq_length,
                                  config.max_new_tokens)
        eos = config.eos_token_id or self.config.eos_token_id
        fitted = dataclasses.replace(config, max_length=inputs.max_length, max_new_tokens=None)
        steps = generator_for(self).stream(np.array([inputs.input_ids]), fitted, num_pieces=tokenizer.vocab_size)
        answer: list[int] = []
        response = ""
        for tokens in steps:
            if int(tokens[0]) == eos:  # the answer ends here; generation stops after it
                continue
            answer.append(int(tokens[0]))
            response = process_response(tokenizer.decode(answer))
            yield response, [*history, (query, response)]
        if not answer:
            yield response, [*history, (query, response)]

    def save_pretrained(self, directory: str | os.PathLike, tokenizer=None) -> Path:
        """Write ``config.json`` and ``model.ckpt`` (and the tokenizer's files, if given) into ``directory``.

        ``glm_core.AutoModel.from_pretrained(directory)`` reads the folder back. Raises ``ValueError`` if the
        folder already holds another ``.ckpt`` (a model folder holds one). Returns the folder.
        """
        directory = Path(directory)
        others = sorted(p.name for p in directory.glob("*.ckpt") if p.name != CHECKPOINT_NAME)
        if others:
            raise ValueError(f"{directory} already holds {', '.join(others)}: a model folder holds one "
                             ".ckpt; save into an empty folder")
        self.config.save_pretrained(directory)
        save_model_checkpoint(self, directory / CHECKPOINT_NAME)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        return directory


# ------------------------------------------------------------------------------------------- console
STOP_WORDS = ("stop",)
CLEAR_WORDS = ("clear",)
HOLD_BACK_CHARACTERS = 8  # the stream can still rewrite this much of its tail (see _StreamPrinter)


class _StreamPrinter:
    """Prints a streamed response incrementally: only what was not printed yet.

    ``process_response`` may still rewrite the tail of a partial answer (``,`` before a CJK character,
    a half-written ``[[训练时间]]``, a half-decoded character), so the last few characters are held back
    until the answer is complete.
    """

    def __init__(self, out: TextIO):
        self.out, self.printed = out, ""

    def update(self, response: str) -> None:
        stable = response[: max(len(response) - HOLD_BACK_CHARACTERS, 0)]
        if stable.startswith(self.printed) and len(stable) > len(self.printed):
            self._write(stable[len(self.printed):])
            self.printed = stable

    def finish(self, response: str) -> None:
        if response.startswith(self.printed):
            self._write(response[len(self.printed):] + "\n")
        else:  # the tail changed beyond what was held back: print the final answer whole
            self._write("\n" + response + "\n")
        self.printed = ""

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def interactive_chat(model: GLMChatModel, tokenizer, read_query: Callable[[], str | None], out: TextIO,
                     interactive: bool = True, **chat_options) -> History:
    """The ``glm chat`` loop: read a query, stream the answer to ``out``, keep the history.

    ``read_query`` returns the next line, or None at the end of input. ``clear`` empties the history and
    ``stop`` ends the loop. With ``interactive`` a banner and the speaker names are printed; without it
    (stdin is not a terminal) ``out`` receives only the answers, one per query, each ending in a newline.
    ``chat_options`` (a ``config`` and overrides) go to :meth:`GLMChatModel.stream_chat`. Returns the final history.
    """
    history: History = []
    if interactive:
        out.write("Welcome to ChatGLM-6B. Type to chat; 'clear' empties the history, 'stop' or Ctrl-D "
                  "quits.\n")
    while (query := read_query()) is not None:
        query = query.strip()
        if not query:
            continue
        if query in STOP_WORDS:
            break
        if query in CLEAR_WORDS:
            history = []
            if interactive:
                out.write("History cleared.\n")
            continue
        if interactive:
            out.write("\nChatGLM-6B：")
        printer = _StreamPrinter(out)
        for response, _ in model.stream_chat(tokenizer, query, history, **chat_options):
            printer.update(response)
        printer.finish(response)
        history = [*history, (query, response)]
    return history

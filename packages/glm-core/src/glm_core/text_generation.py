"""Text generation as MindFormers' ``pipeline(task="text_generation", ...)`` offers it.

``TextGenerationPipeline(model, tokenizer)("你好")`` returns ``[{'text_generation_text': ['你好 …']}]``: one
dict per prompt, the text being prompt and continuation decoded together with special tokens left out,
as MindFormers prints it. Prompts are run in left-padded batches; :func:`generate_texts` is the function
underneath, also used by ``glm generate``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from glm_core.auto import AutoModel, AutoTokenizer
from glm_core.generation import GenerationStats
from glm_core.model import GLMForPreTraining

logger = logging.getLogger(__name__)

TASKS = ("text_generation",)
RESULT_KEY = "text_generation_text"


@dataclass
class GeneratedText:
    """One prompt's result."""

    prompt: str
    text: str  # prompt and continuation, as MindFormers prints it
    response: str  # the continuation alone, up to <eop>
    new_tokens: int  # generated ids, <eop> excluded


def _add_stats(total: GenerationStats, part: GenerationStats) -> None:
    total.batch_size += part.batch_size
    total.new_tokens += part.new_tokens
    total.steps += part.steps
    total.compile_seconds += part.compile_seconds
    total.prefill_seconds += part.prefill_seconds
    total.decode_seconds += part.decode_seconds


def generate_texts(model: GLMForPreTraining, tokenizer, prompts: Sequence[str], max_length: int = 2048,
                   max_new_tokens: int | None = None, batch_size: int = 8,
                   **generation) -> tuple[list[GeneratedText], GenerationStats]:
    """Continue each prompt, ``batch_size`` prompts per left-padded batch.

    ``max_length`` counts prompt and continuation and is capped at the model's ``seq_length``;
    ``max_new_tokens``, when given, replaces it. Other keywords (``do_sample``, ``top_k``, ``top_p``,
    ``temperature``, ``repetition_penalty``, ``seed``) go to :func:`glm_core.generation.generate`; ids with no
    tokenizer piece are never generated. Returns the results in prompt order and the timing summed over the
    batches (compile time apart). Raises ``ValueError`` for an empty list, a bad ``batch_size`` or a prompt
    that leaves no room for new tokens.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise ValueError("no prompts given: pass a string or a non-empty list of strings")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    config = model.config
    eos = generation.get("eos_token_id") or config.eos_token_id
    results: list[GeneratedText] = []
    stats = GenerationStats()
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start:start + batch_size])
        encoded = [tokenizer.encode(prompt) for prompt in batch]
        length = max(map(len, encoded))
        if max_new_tokens is not None:
            total = length + max_new_tokens
        else:
            total = min(max_length, config.seq_length)
            if length >= total:
                raise ValueError(f"a prompt of {length} tokens leaves no room for new tokens within {total} "
                                 f"(max_length {max_length}, model seq_length {config.seq_length}): "
                                 f"\"{batch[[len(ids) for ids in encoded].index(length)][:60]}\"")
        padded = np.array([[tokenizer.pad_token_id] * (length - len(ids)) + ids for ids in encoded])
        output = model.generate(padded, max_length=total, num_pieces=tokenizer.vocab_size, **generation)
        _add_stats(stats, model.generation_stats)
        for prompt, ids, row in zip(batch, encoded, output):
            answer = [int(token) for token in row[length:]]
            answer = answer[: answer.index(eos)] if eos in answer else answer
            shown = [token for token in ids if token != tokenizer.gmask_token_id] + answer
            text = tokenizer.decode(shown, skip_special_tokens=True)
            results.append(GeneratedText(prompt, text, tokenizer.decode(answer), new_tokens=len(answer)))
    logger.info("generate speed: %.1f tokens/s (%d new tokens in %.2fs; compile %.2fs apart)",
                stats.tokens_per_second, stats.new_tokens, stats.prefill_seconds + stats.decode_seconds,
                stats.compile_seconds)
    return results, stats


class TextGenerationPipeline:
    """MindFormers' text-generation pipeline over a GLM model and its tokenizer.

    ``pipe("你好")`` or ``pipe(["你好", "hi"])`` returns ``[{'text_generation_text': [text]}, ...]``, one dict
    per prompt. The timing of the last call is in ``pipe.generation_stats``.
    """

    def __init__(self, model: GLMForPreTraining, tokenizer, max_length: int = 2048, batch_size: int = 8):
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size = max_length, batch_size
        self.generation_stats: GenerationStats | None = None

    def __call__(self, inputs: str | Sequence[str], max_length: int | None = None,
                 max_new_tokens: int | None = None, do_sample: bool = False, top_k: int = 0,
                 top_p: float = 1.0, temperature: float = 1.0, repetition_penalty: float = 1.0,
                 seed: int | None = None, batch_size: int | None = None) -> list[dict[str, list[str]]]:
        """Generate for one prompt or a list; arguments as :func:`generate_texts` (greedy by default)."""
        results, self.generation_stats = generate_texts(
            self.model, self.tokenizer, [inputs] if isinstance(inputs, str) else list(inputs),
            max_length=self.max_length if max_length is None else max_length, max_new_tokens=max_new_tokens,
            batch_size=batch_size or self.batch_size, do_sample=do_sample, top_k=top_k, top_p=top_p,
            temperature=temperature, repetition_penalty=repetition_penalty, seed=seed)
        return [{RESULT_KEY: [result.text]} for result in results]


def pipeline(task: str = "text_generation", model: str | os.PathLike | GLMForPreTraining = "glm_6b",
             tokenizer=None, max_length: int = 2048, batch_size: int = 8) -> TextGenerationPipeline:
    """MindFormers' ``pipeline``: ``model`` is a model folder, a name (``glm_6b``) or a loaded model.

    The tokenizer is loaded from the same folder or name unless given (it must be given with a loaded
    model). Raises ``ValueError`` for another task, and what :class:`glm_core.AutoModel` raises.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: glm-core has {', '.join(TASKS)}")
    if isinstance(model, GLMForPreTraining):
        if tokenizer is None:
            raise ValueError("pipeline(model=<a loaded model>) needs tokenizer=…; or pass a folder or a name")
    else:
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model)
        model = AutoModel.from_pretrained(model)
    return TextGenerationPipeline(model, tokenizer, max_length=max_length, batch_size=batch_size)

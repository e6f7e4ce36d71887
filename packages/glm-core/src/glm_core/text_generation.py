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
from dataclasses import dataclass, replace

import numpy as np

from glm_core.auto import AutoModel, AutoTokenizer, locate
from glm_core.generation import GenerationStats, generator_for
from glm_core.generation_config import TEXT_GENERATION, GenerationConfig
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


def generate_texts(model: GLMForPreTraining, tokenizer, prompts: Sequence[str],
                   config: GenerationConfig | None = None, batch_size: int = 8,
                   **overrides) -> tuple[list[GeneratedText], GenerationStats]:
    """Continue each prompt, ``batch_size`` prompts per left-padded batch.

    ``config`` (default :data:`TEXT_GENERATION`: greedy, ``max_length`` 2048) with ``overrides`` of its
    fields; ``max_length`` counts prompt and continuation and is capped at the model's ``seq_length``,
    ``max_new_tokens`` replaces it. Ids with no tokenizer piece are never generated. Returns the results in
    prompt order and the timing summed over the batches (compile time apart). Raises ``ValueError`` for an
    empty list, a bad ``batch_size`` or option, or a prompt that leaves no room for new tokens.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise ValueError("no prompts given: pass a string or a non-empty list of strings")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    config = (config or TEXT_GENERATION).updated(**overrides)
    model_config = model.config
    eos = config.eos_token_id or model_config.eos_token_id
    generator = generator_for(model)
    results: list[GeneratedText] = []
    stats = GenerationStats()
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start:start + batch_size])
        encoded = [tokenizer.encode(prompt) for prompt in batch]
        length = max(map(len, encoded))
        batch_config = config
        if config.max_new_tokens is None:
            total = min(config.max_length or model_config.seq_length, model_config.seq_length)
            if length >= total:
                raise ValueError(f"a prompt of {length} tokens leaves no room for new tokens within {total} "
                                 f"(max_length {config.max_length}, model seq_length {model_config.seq_length}): "
                                 f"\"{batch[[len(ids) for ids in encoded].index(length)][:60]}\"")
            batch_config = config.updated(max_length=total)
        padded = np.array([[tokenizer.pad_token_id] * (length - len(ids)) + ids for ids in encoded])
        output = generator.generate(padded, batch_config, num_pieces=tokenizer.vocab_size)
        stats.add(generator.stats)
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

    def __init__(self, model: GLMForPreTraining, tokenizer, config: GenerationConfig | None = None,
                 batch_size: int = 8):
        self.model, self.tokenizer = model, tokenizer
        self.config = config or replace(TEXT_GENERATION)  # a copy: a caller may change its pipeline's config
        self.batch_size = batch_size
        self.generation_stats: GenerationStats | None = None

    def __call__(self, inputs: str | Sequence[str], batch_size: int | None = None,
                 **overrides) -> list[dict[str, list[str]]]:
        """Generate for one prompt or a list; ``overrides`` replace fields of the pipeline's
        :class:`GenerationConfig` (greedy by default)."""
        results, self.generation_stats = generate_texts(
            self.model, self.tokenizer, [inputs] if isinstance(inputs, str) else list(inputs),
            self.config.updated(**overrides), batch_size=batch_size or self.batch_size)
        return [{RESULT_KEY: [result.text]} for result in results]


def pipeline(task: str = "text_generation", model: str | os.PathLike | GLMForPreTraining = "glm_6b",
             tokenizer=None, batch_size: int = 8, **generation) -> TextGenerationPipeline:
    """MindFormers' ``pipeline``: ``model`` is a model folder, a name (``glm_6b``) or a loaded model.

    The tokenizer is loaded from the same folder or name unless given (it must be given with a loaded
    model). The generation options are a model folder's ``generation_config.json`` (where present) with
    ``generation`` (``max_length=…``) over them. Raises ``ValueError`` for another task or option, and what
    :class:`glm_core.AutoModel` raises.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: glm-core has {', '.join(TASKS)}")
    if isinstance(model, GLMForPreTraining):
        if tokenizer is None:
            raise ValueError("pipeline(model=<a loaded model>) needs tokenizer=…; or pass a folder or a name")
        defaults = TEXT_GENERATION
    else:
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model)
        defaults = GenerationConfig.from_pretrained(locate(model).tokenizer_dir, **vars(TEXT_GENERATION))
        model = AutoModel.from_pretrained(model)
    return TextGenerationPipeline(model, tokenizer, defaults.updated(**generation), batch_size)

"""How to generate, apart from the generator: :class:`GenerationConfig` and the named defaults of the chat and of
plain generation. No MindSpore here, so that the ``glm`` command's help can show the defaults without loading it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENERATION_CONFIG_NAME = "generation_config.json"


@dataclass
class GenerationConfig:
    """How to generate: lengths, the sampler and its processors, the end token. Defaults are greedy.

    A model folder may hold ``generation_config.json`` (Hugging Face's file; unknown keys are ignored):
    :meth:`from_pretrained` reads it.
    """

    max_length: int | None = None  # prompt + new tokens, as in Hugging Face; None: the model's seq_length
    max_new_tokens: int | None = None  # new tokens only; replaces max_length when given
    do_sample: bool = False  # sample instead of taking the most likely token
    top_k: int = 0  # sample among the k most likely tokens; 0 keeps all
    top_p: float = 1.0  # sample among the most likely tokens holding this probability
    temperature: float = 1.0  # scores are divided by it before sampling
    repetition_penalty: float = 1.0  # scores of tokens already present are divided by it (Hugging Face's rule)
    seed: int | None = None  # of the sampler, for repeatable samples
    eos_token_id: int | None = None  # a row stops at it; None: the model's <eop>
    pad_token_id: int | None = None  # fills a row after its end; None: the model's <pad>

    def __post_init__(self):
        for name in ("max_length", "max_new_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.temperature > 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or not self.repetition_penalty > 0:
            raise ValueError("need temperature > 0, 0 < top_p <= 1, top_k >= 0 and repetition_penalty > 0, got "
                             f"temperature={self.temperature}, top_p={self.top_p}, top_k={self.top_k}, "
                             f"repetition_penalty={self.repetition_penalty}")

    def updated(self, **overrides: Any) -> GenerationConfig:
        """A copy with the ``overrides`` that are not None. Raises ``TypeError`` for an unknown name."""
        fields = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(f"unknown generation option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
        return dataclasses.replace(self, **{name: value for name, value in overrides.items() if value is not None})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **defaults: Any) -> GenerationConfig:
        """``directory``'s ``generation_config.json`` over ``defaults``; ``defaults`` alone without the file.

        Raises ``ValueError`` naming the file when it is not a JSON object or holds an invalid value.
        """
        file = Path(directory) / GENERATION_CONFIG_NAME
        config = cls(**defaults)
        if not file.is_file():
            return config
        try:
            values = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(values, dict):
                raise ValueError("not a JSON object")
            known = {field.name for field in dataclasses.fields(cls)}
            return config.updated(**{key: value for key, value in values.items() if key in known})
        except (ValueError, TypeError) as error:
            raise ValueError(f"{file}: {error}") from None


CHAT_GENERATION = GenerationConfig(max_length=2048, do_sample=True, top_p=0.7, temperature=0.95)  # the original's
# greedy, up to MindFormers' default length (capped at the model's seq_length): generate_texts', the pipeline's and
# glm generate's defaults
TEXT_GENERATION = GenerationConfig(max_length=2048)

"""ChatGLM-6B's conventions around the ids, written once: the chat prompt, and the 2D positions and attention
mask of a (left-padded) batch.

glm-core (chat, generation) and glm-data (ADGEN records) import them from here; ``glm_core.model`` holds the
in-graph twin of :class:`PromptLayout`, tested equal to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def chat_prompt(query: str, history: Sequence[tuple[str, str]] = ()) -> str:
    """The prompt ChatGLM-6B's ``chat`` builds for ``query`` after ``history`` (``(query, response)`` pairs).

    Without history the prompt is the query itself; with it, each round reads
    ``[Round i]\\n问：{query}\\n答：{response}\\n`` and the new query ends with ``答：``.
    """
    if not history:
        return query
    rounds = [f"[Round {index}]\n问：{old_query}\n答：{response}\n"
              for index, (old_query, response) in enumerate(history)]
    return "".join(rounds) + f"[Round {len(history)}]\n问：{query}\n答："


@dataclass(frozen=True)
class PromptLayout:
    """Where each row of a left-padded batch of prompts has its padding, ``<sop>`` and mask token.

    From it come the reference's position ids and attention mask for any slots of the sequence, the prompt's
    and those generated after it: leading ``<pad>`` tokens are masked and take position 0; positions restart
    at a row's first real token; the prompt before ``<sop>`` attends both ways, from ``<sop>`` on causally;
    tokens from ``<sop>`` on take the ``[MASK]`` (else ``[gMASK]``) position and block positions 1, 2, … .
    """

    pads: np.ndarray  # [B] leading <pad> tokens
    context: np.ndarray  # [B] index of <sop>, or the prompt length without one
    mask_positions: np.ndarray  # [B] index of [MASK] (else [gMASK]) counted from the first real token; -1: none

    @classmethod
    def of(cls, input_ids, *, pad_token_id: int, bos_token_id: int, mask_token_id: int,
           gmask_token_id: int) -> PromptLayout:
        """The layout of ``input_ids`` ``[B, S]`` (or ``[S]``), given the model's special ids."""
        ids = np.atleast_2d(np.asarray(input_ids))
        length = ids.shape[1]
        pads = (ids != pad_token_id).argmax(axis=1)
        is_bos = ids == bos_token_id
        context = np.where(is_bos.any(axis=1), is_bos.argmax(axis=1), length)
        is_mask, is_gmask = ids == mask_token_id, ids == gmask_token_id
        mask_index = np.where(is_mask.any(axis=1), is_mask.argmax(axis=1), is_gmask.argmax(axis=1))
        has_mask = is_mask.any(axis=1) | is_gmask.any(axis=1)
        return cls(pads, context, np.where(has_mask, mask_index - pads, -1))

    def position_ids(self, start: int, stop: int) -> np.ndarray:
        """Position ids of slots ``start..stop-1``, int64 ``[B, 2, stop - start]``: positions, block positions."""
        slots = np.arange(start, stop).reshape(1, -1)
        pads, context = self.pads.reshape(-1, 1), self.context.reshape(-1, 1)
        mask_positions = self.mask_positions.reshape(-1, 1)
        after_context = slots >= context
        positions = np.where(after_context & (mask_positions >= 0), mask_positions, slots - pads)
        positions = np.where(slots < pads, 0, positions)
        blocks = np.where(after_context, slots - context + 1, 0)
        return np.stack([positions, blocks], axis=1).astype(np.int64)

    def attention_mask(self, start: int, stop: int, keys: int) -> np.ndarray:
        """Mask of query slots ``start..stop-1`` over key slots ``0..keys-1``, bool ``[B, 1, stop - start,
        keys]``, True = masked. Key slots past a query's own (not written yet) are masked, but for the
        prompt's two-way part."""
        query = np.arange(start, stop).reshape(1, -1, 1)
        key = np.arange(keys).reshape(1, 1, -1)
        pads, context = self.pads.reshape(-1, 1, 1), self.context.reshape(-1, 1, 1)
        visible = (key >= pads) & ((key < context) | (key <= query)) & (query >= pads)
        return ~visible[:, np.newaxis]

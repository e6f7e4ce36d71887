"""The records glm-data writes, built from token ids exactly as ChatGLM-6B's ``ptuning/main.py`` builds them.

Three layouts, told apart by their columns:

- ``train``: ``input_ids`` and ``labels``, int32 ``[max_source_length + max_target_length]``.
  ``input_ids = prompt + [gMASK] <sop> + answer + <eop>``, right padded with ``<pad>``; ``labels`` is
  -100 over the prompt and the padding and the ids elsewhere, unshifted (the loss shifts).
  Position ids and the attention mask follow from ``input_ids`` and are derived at training time.
- ``eval``: ``input_ids`` (the prompt, truncated, ending ``[gMASK] <sop>``) and ``labels`` (the answer
  ids, tokenized with special tokens as the reference does), both int32 of any length, plus the raw
  ``content`` and ``summary`` strings to score generations against.
- ``mindformers``: MindFormers' four columns, ``input_ids`` and ``labels`` (shifted left by one:
  ``labels[t]`` is the target of position ``t``) int32 ``[S]``, ``position_ids`` int32 ``[2, S]`` and
  ``attention_mask`` int32 ``[1, S, S]`` (1 = masked out).
"""

from itertools import chain

import numpy as np

from glm_tokenizer import PromptLayout

IGNORE_INDEX = -100

TRAIN, EVAL, MINDFORMERS = "train", "eval", "mindformers"
LAYOUT_COLUMNS = {
    TRAIN: ("input_ids", "labels"),
    EVAL: ("input_ids", "labels", "content", "summary"),
    MINDFORMERS: ("input_ids", "labels", "position_ids", "attention_mask"),
}


def schema(layout: str, seq_length: int) -> dict:
    """The MindRecord schema of ``layout`` for records of ``seq_length`` tokens (unused for ``eval``)."""
    if layout == TRAIN:
        return {name: {"type": "int32", "shape": [seq_length]} for name in LAYOUT_COLUMNS[TRAIN]}
    if layout == EVAL:
        return {
            "input_ids": {"type": "int32", "shape": [-1]},
            "labels": {"type": "int32", "shape": [-1]},
            "content": {"type": "string"},
            "summary": {"type": "string"},
        }
    if layout == MINDFORMERS:
        return {
            "input_ids": {"type": "int32", "shape": [seq_length]},
            "labels": {"type": "int32", "shape": [seq_length]},
            "position_ids": {"type": "int32", "shape": [2, seq_length]},
            "attention_mask": {"type": "int32", "shape": [1, seq_length, seq_length]},
        }
    raise ValueError(f"unknown record layout {layout!r}: expected one of {sorted(LAYOUT_COLUMNS)}")


def layout_of(columns) -> str:
    """The layout whose column set is ``columns``; raises ValueError for a file glm-data did not write."""
    for layout, expected in LAYOUT_COLUMNS.items():
        if set(columns) == set(expected):
            return layout
    raise ValueError(f"columns {sorted(columns)} match no glm-data layout ({dict(LAYOUT_COLUMNS)})")


def train_records(tokenizer, prompts, answers, max_source_length: int, max_target_length: int) -> dict:
    """Training records of a batch of prompts and answers (text ids, no special tokens): ``input_ids``
    and ``labels``, int32 ``[batch, max_source_length + max_target_length]``.

    Each prompt is cut to ``max_source_length - 1`` ids and each answer to ``max_target_length - 2``,
    leaving room for ``[gMASK] <sop>`` and ``<eop>``.
    """
    build = tokenizer.build_inputs_with_special_tokens
    sequences = [
        build(list(prompt[: max_source_length - 1]), list(answer[: max_target_length - 2]))
        for prompt, answer in zip(prompts, answers)
    ]
    seq_length = max_source_length + max_target_length
    lengths = np.fromiter(map(len, sequences), np.intp, len(sequences))
    input_ids = np.full((len(sequences), seq_length), tokenizer.pad_token_id, np.int32)
    input_ids[np.arange(seq_length) < lengths[:, np.newaxis]] = np.fromiter(
        chain.from_iterable(sequences), np.int32, lengths.sum()
    )
    # The reference's labels: the ids from <sop> on, padded with <pad>, then every <pad> id turned into -100.
    context_lengths = _first_index(input_ids, tokenizer.bos_token_id)[:, np.newaxis]
    labels = np.where(np.arange(seq_length) >= context_lengths, input_ids, np.int32(IGNORE_INDEX))
    labels[labels == tokenizer.pad_token_id] = IGNORE_INDEX
    return {"input_ids": input_ids, "labels": labels}


def train_record(tokenizer, prompt_ids, answer_ids, max_source_length: int, max_target_length: int) -> dict:
    """One training record (int32 ``[S]`` arrays), as ``train_records`` builds it in a batch."""
    batch = train_records(tokenizer, [prompt_ids], [answer_ids], max_source_length, max_target_length)
    return {name: column[0] for name, column in batch.items()}


def eval_record(
    tokenizer, prompt_ids, answer_ids, max_source_length: int, max_target_length: int, content: str, summary: str
) -> dict:
    """One evaluation record: what ``tokenizer(prompt, max_length=…, truncation=True)`` gives in the reference.

    The text ids are cut to leave room for ``[gMASK] <sop>`` within each maximum length; ``content``
    and ``summary`` are stored as given.
    """
    input_ids = tokenizer.build_inputs_with_special_tokens(list(prompt_ids[: max_source_length - 2]))
    labels = np.array(tokenizer.build_inputs_with_special_tokens(list(answer_ids[: max_target_length - 2])), np.int32)
    labels[labels == tokenizer.pad_token_id] = IGNORE_INDEX
    return {"input_ids": np.array(input_ids, np.int32), "labels": labels, "content": content, "summary": summary}


def mindformers_record(record: dict, tokenizer) -> dict:
    """MindFormers' four-column record from a ``train`` record, or a batch of them from a ``train_records`` batch.

    ``position_ids`` and ``attention_mask`` are :class:`glm_tokenizer.PromptLayout`'s (GLM's 2D positions and
    mask, written once there) for the ids and the ``tokenizer``'s special ids: positions count up to
    ``[gMASK]`` and stay there from ``<sop>`` on, block positions are 0 over the context and 1, 2, … from
    ``<sop>`` on; the context is seen by every position, the rest causally (1 = masked out).
    """
    input_ids, labels = record["input_ids"], record["labels"]
    shifted_labels = np.full_like(labels, IGNORE_INDEX)
    shifted_labels[..., :-1] = labels[..., 1:]
    layout = PromptLayout.of(input_ids, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                             mask_token_id=tokenizer.mask_token_id, gmask_token_id=tokenizer.gmask_token_id)
    length = input_ids.shape[-1]
    position_ids = layout.position_ids(0, length).astype(np.int32)  # [batch, 2, S]
    attention_mask = layout.attention_mask(0, length, length).astype(np.int32)  # [batch, 1, S, S]
    if input_ids.ndim == 1:  # one record, not a batch
        position_ids, attention_mask = position_ids[0], attention_mask[0]
    return {
        "input_ids": input_ids,
        "labels": shifted_labels,
        "position_ids": position_ids,
        "attention_mask": attention_mask,
    }


def _first_index(ids: np.ndarray, token_id: int) -> np.ndarray:
    """The index of the first ``token_id`` along the last axis of ``ids``; ValueError where there is none."""
    found = ids == token_id
    if not found.any(axis=-1).all():
        raise ValueError(f"token id {token_id} missing from a sequence of ids")
    return found.argmax(axis=-1)

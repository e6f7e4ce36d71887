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

import numpy as np

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


def train_record(tokenizer, prompt_ids, answer_ids, max_source_length: int, max_target_length: int) -> dict:
    """One training record from the prompt's and the answer's text ids (no special tokens).

    The prompt is cut to ``max_source_length - 1`` ids and the answer to ``max_target_length - 2``,
    leaving room for ``[gMASK] <sop>`` and ``<eop>``.
    """
    ids = tokenizer.build_inputs_with_special_tokens(
        list(prompt_ids[: max_source_length - 1]), list(answer_ids[: max_target_length - 2])
    )
    context_length = ids.index(tokenizer.bos_token_id)
    padding = [tokenizer.pad_token_id] * (max_source_length + max_target_length - len(ids))
    input_ids = np.array(ids + padding, np.int32)
    # The reference's labels: the ids from <sop> on, padded with <pad>, then every <pad> id turned into -100.
    labels = input_ids.copy()
    labels[:context_length] = IGNORE_INDEX
    labels[labels == tokenizer.pad_token_id] = IGNORE_INDEX
    return {"input_ids": input_ids, "labels": labels}


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


def mindformers_record(record: dict, bos_token_id: int, gmask_token_id: int) -> dict:
    """MindFormers' four-column record from a ``train`` record."""
    input_ids = record["input_ids"]
    shifted_labels = np.append(record["labels"][1:], np.int32(IGNORE_INDEX)).astype(np.int32)
    return {
        "input_ids": input_ids,
        "labels": shifted_labels,
        "position_ids": position_ids(input_ids, bos_token_id, gmask_token_id),
        "attention_mask": attention_mask(input_ids, bos_token_id)[np.newaxis],
    }


def position_ids(input_ids: np.ndarray, bos_token_id: int, gmask_token_id: int) -> np.ndarray:
    """ChatGLM-6B's 2D positions, int32 ``[2, S]``: token positions, frozen at ``[gMASK]`` from ``<sop>`` on,
    and block positions, 0 over the context and 1, 2, … from ``<sop>`` on."""
    seq_length = len(input_ids)
    context_length = _first_index(input_ids, bos_token_id)
    positions = np.arange(seq_length, dtype=np.int32)
    positions[context_length:] = _first_index(input_ids, gmask_token_id)
    block_positions = np.zeros(seq_length, dtype=np.int32)
    block_positions[context_length:] = np.arange(1, seq_length - context_length + 1)
    return np.stack([positions, block_positions])


def attention_mask(input_ids: np.ndarray, bos_token_id: int) -> np.ndarray:
    """ChatGLM-6B's mask, int32 ``[S, S]``, 1 where attention is masked out: the context (up to ``<sop>``)
    is seen by every position, the rest causally."""
    seq_length = len(input_ids)
    visible = np.tril(np.ones((seq_length, seq_length), dtype=bool))
    visible[:, : _first_index(input_ids, bos_token_id)] = True
    return (~visible).astype(np.int32)


def _first_index(ids: np.ndarray, token_id: int) -> int:
    return int(np.flatnonzero(np.asarray(ids) == token_id)[0])

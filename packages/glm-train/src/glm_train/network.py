"""The network glm-train trains: glm-core's GLM transformer, the language-model head tied to the word
embeddings, and the loss.

    input_ids ─► GLMTransformer ─► hidden · embedding_tableᵀ ─► logits ─► cross entropy against labels[1:]

As in the original, ``lm_head`` is the word embedding table itself (one parameter, one gradient holding
both uses, one set of optimizer state: 535 M parameters not held twice for ChatGLM-6B). Parameter names are
MindFormers' (``transformer.layers.0.attention.query_key_value.weight`` …); checkpoints written from this
network add ``lm_head.weight``, a copy of the table, so glm-core's inference models load them as they are.

The lookup is split from the rest (:meth:`GLMForTraining.embed`, :meth:`GLMForTraining.loss_from_embeddings`)
so that the train step can add the lookup's gradient, a few rows, into the head's dense table gradient
instead of differentiating the lookup into a second dense table and summing the two.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from glm_core.config import GLMConfig
from glm_core.model import GLMTransformer, mindspore_dtype, positions_and_mask

IGNORE_INDEX = -100  # labels that take no part in the loss (the prompt and the padding)
LM_HEAD = "lm_head.weight"
EMBEDDING = "transformer.word_embeddings.embedding_table"


class GLMForTraining(nn.Cell):
    """``network(input_ids, labels) -> loss``: the mean cross entropy over the label tokens that are not
    ``-100``, labels shifted left by one (position ``t`` predicts ``labels[t + 1]``), as ChatGLM-6B's
    ``forward`` computes it. ``input_ids`` and ``labels`` are int32 ``[batch, seq]``, as glm-data's train
    records hold them; position ids and the attention mask are derived from ``input_ids``.

    ``loss_window``: compute logits only for this many positions of each row, from the one before its first
    label on (the answer of an ADGEN record: ``max_target_length``). The head is most of a step's arithmetic
    (130528 × 4096 for ChatGLM-6B) and the prompt's logits feed no loss; the loss is the same. ``None``: every
    position. A row whose labels run past its window would lose those tokens: :func:`label_span` measures
    the window a dataset needs.
    """

    def __init__(self, config: GLMConfig, loss_window: int | None = None):
        super().__init__()
        self.config = config
        self.transformer = GLMTransformer(config, inference=False)
        self.compute_dtype = mindspore_dtype(config.compute_dtype)
        self.loss_window = loss_window
        self.head = ops.MatMul(transpose_b=True)  # hidden · tableᵀ without a transposed copy of the table

    def logits(self, input_ids):
        """float32 logits ``[batch, seq, vocab]``."""
        return self.head_logits(self.hidden_states(self.embed(input_ids), input_ids))

    def embed(self, input_ids):
        """The word embeddings of ``input_ids``: ``[batch, seq, hidden]`` rows of the tied table."""
        return self.transformer.word_embeddings(input_ids)

    def hidden_states(self, embedded, input_ids):
        """The final layernorm's output ``[batch, seq, hidden]`` for embedded ``input_ids``: glm-core's
        ``GLMTransformer`` after its lookup, through the same blocks."""
        position_ids, mask = positions_and_mask(input_ids, self.config)
        rotary = self.transformer.rotary(position_ids)
        x = embedded.astype(self.compute_dtype)
        for layer in self.transformer.layers:
            x = layer(x, rotary, mask)
        return self.transformer.final_layernorm(x)

    def head_logits(self, hidden):
        """float32 logits of hidden states ``[batch, n, hidden]`` through the tied head."""
        batch, length = hidden.shape[0], hidden.shape[1]
        table = self.transformer.word_embeddings.embedding_table.astype(self.compute_dtype)
        flat = hidden.reshape(batch * length, -1).astype(self.compute_dtype)
        return self.head(flat, table).astype(ms.float32).reshape(batch, length, -1)

    def construct(self, input_ids, labels):
        return self.loss_from_embeddings(self.embed(input_ids), input_ids, labels)

    def loss_from_embeddings(self, embedded, input_ids, labels):
        """The loss of ``construct`` from the embedded ``input_ids`` (``embed``'s output)."""
        hidden = self.hidden_states(embedded, input_ids)
        seq = input_ids.shape[1]
        if self.loss_window is None or self.loss_window >= seq - 1:
            logits, targets = self.head_logits(hidden[:, :-1]), labels[:, 1:]
        else:
            # positions first_label - 1 + k, k < window; a position past the row's last gets target -100
            first = ops.argmax((labels != IGNORE_INDEX).astype(ms.int32), dim=1).astype(ms.int32)
            positions = ops.maximum(first - 1, 0).reshape(-1, 1) + ops.arange(self.loss_window, dtype=ms.int32)
            inside = positions < seq - 1
            positions = ops.minimum(positions, seq - 2)
            logits = self.head_logits(ops.gather_elements(
                hidden, 1, positions.expand_dims(-1).broadcast_to((-1, -1, hidden.shape[-1]))))
            targets = ops.where(inside, ops.gather_elements(labels, 1, positions + 1), IGNORE_INDEX)
        counted = targets != IGNORE_INDEX
        log_probs = ops.log_softmax(logits, -1)
        picked = ops.gather_elements(log_probs, 2, ops.where(counted, targets, 0).expand_dims(-1)).squeeze(-1)
        weights = counted.astype(ms.float32)
        # max(.., 1): a batch with no label token has loss 0, not NaN
        return -(picked * weights).sum() / ops.maximum(weights.sum(), 1.0)


def label_span(labels: np.ndarray) -> int:
    """The loss window ``labels`` ``[records, seq]`` need: the longest stretch from a row's first label
    (less one, the position that predicts it) to its last."""
    counted = labels != IGNORE_INDEX
    if not counted.any():
        return 1
    seq = labels.shape[1]
    first = counted.argmax(axis=1)
    last = seq - 1 - counted[:, ::-1].argmax(axis=1)
    rows = counted.any(axis=1)
    return int((last - np.maximum(first - 1, 0))[rows].max())


def trainable_state(network: GLMForTraining) -> dict[str, np.ndarray]:
    """The network's weights by checkpoint name, with ``lm_head.weight`` added (the tied table)."""
    state = {p.name: p.asnumpy() for p in network.get_parameters()}
    state[LM_HEAD] = state[EMBEDDING]
    return state

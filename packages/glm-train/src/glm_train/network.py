"""The network glm-train trains: glm-core's GLM transformer, the language-model head tied to the word
embeddings, and the loss.

    input_ids ─► GLMTransformer ─► hidden · embedding_tableᵀ ─► logits ─► cross entropy against labels[1:]

As in the original, ``lm_head`` is the word embedding table itself (one parameter, one gradient holding
both uses, one set of optimizer state: 535 M parameters not held twice for ChatGLM-6B). Parameter names are
MindFormers' (``transformer.layers.0.attention.query_key_value.weight`` …); checkpoints written from this
network add ``lm_head.weight``, a copy of the table, so glm-core's inference models load them as they are.
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
    """

    def __init__(self, config: GLMConfig):
        super().__init__()
        self.config = config
        self.transformer = GLMTransformer(config, inference=False)
        self.compute_dtype = mindspore_dtype(config.compute_dtype)

    def logits(self, input_ids):
        """float32 logits ``[batch, seq, vocab]``."""
        position_ids, mask = positions_and_mask(input_ids, self.config)
        hidden = self.transformer(input_ids, position_ids, mask)
        table = self.transformer.word_embeddings.embedding_table.astype(self.compute_dtype)
        return ops.matmul(hidden.astype(self.compute_dtype), table.T).astype(ms.float32)

    def construct(self, input_ids, labels):
        logits = self.logits(input_ids)[:, :-1]
        targets = labels[:, 1:]
        counted = targets != IGNORE_INDEX
        log_probs = ops.log_softmax(logits, -1)
        picked = ops.gather_elements(log_probs, 2, ops.where(counted, targets, 0).expand_dims(-1)).squeeze(-1)
        weights = counted.astype(ms.float32)
        # max(.., 1): a batch with no label token has loss 0, not NaN
        return -(picked * weights).sum() / ops.maximum(weights.sum(), 1.0)


def trainable_state(network: GLMForTraining) -> dict[str, np.ndarray]:
    """The network's weights by checkpoint name, with ``lm_head.weight`` added (the tied table)."""
    state = {p.name: p.asnumpy() for p in network.get_parameters()}
    state[LM_HEAD] = state[EMBEDDING]
    return state

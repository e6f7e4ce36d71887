"""model.positions_and_mask, the in-graph twin of glm_tokenizer.PromptLayout, equals it: on the golden batch
encodings and on random left-padded batches (compiled once, at one shape)."""

import mindspore as ms
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mindspore import nn

from glm_core.model import positions_and_mask
from glm_tokenizer import PromptLayout


class PositionsAndMask(nn.Cell):
    """positions_and_mask as GLMForPreTraining's graph runs it."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def construct(self, input_ids):
        return positions_and_mask(input_ids, self.config)


@pytest.fixture(scope="module")
def network(golden_config):
    """One network for the module, so hypothesis's examples share one compiled graph."""
    return PositionsAndMask(golden_config)


def in_graph(network, input_ids):
    position_ids, mask = network(ms.Tensor(np.asarray(input_ids), ms.int32))
    return position_ids.asnumpy(), mask.asnumpy()


def numpy_layout(config, input_ids):
    ids = np.asarray(input_ids)
    layout = PromptLayout.of(ids, pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
                             mask_token_id=config.mask_token_id, gmask_token_id=config.gmask_token_id)
    length = ids.shape[1]
    return layout.position_ids(0, length), layout.attention_mask(0, length, length)


def test_golden_batch_encodings_give_the_references_positions_and_mask(golden_config, golden_case, network):
    """Both versions give the original tokenizer's position_ids and attention_mask (1 = masked there)."""
    for case in golden_case("batch_encode"):
        position_ids, mask = in_graph(network, case["input_ids"])
        expected_positions, expected_mask = numpy_layout(golden_config, case["input_ids"])
        assert position_ids.tolist() == case["position_ids"] == expected_positions.tolist()
        assert mask.astype(int).tolist() == case["attention_mask"] == expected_mask.astype(int).tolist()


BATCH, LENGTH = 3, 12
PAD, BOS, MASK, GMASK = 3, 3004, 3000, 3001  # the golden tiny model's special ids (checked below)


@st.composite
def left_padded_row(draw):
    """A row of LENGTH ids: leading <pad>, then text ids holding, or not, [MASK]/[gMASK] and <sop> anywhere."""
    real = draw(st.integers(min_value=1, max_value=LENGTH))
    row = draw(st.lists(st.integers(min_value=5, max_value=2999), min_size=real, max_size=real))
    for token in (MASK, GMASK, BOS, BOS):  # a second <sop>: the first one counts
        if draw(st.booleans()):
            row[draw(st.integers(min_value=0, max_value=real - 1))] = token
    return [PAD] * (LENGTH - real) + row


@given(batch=st.lists(left_padded_row(), min_size=BATCH, max_size=BATCH))
@settings(max_examples=150, deadline=None)
def test_random_left_padded_batches_give_the_numpy_layout(golden_config, network, batch):
    assert (golden_config.pad_token_id, golden_config.bos_token_id, golden_config.mask_token_id,
            golden_config.gmask_token_id) == (PAD, BOS, MASK, GMASK)
    position_ids, mask = in_graph(network, batch)
    expected_positions, expected_mask = numpy_layout(golden_config, batch)
    np.testing.assert_array_equal(position_ids, expected_positions)
    np.testing.assert_array_equal(mask, expected_mask)

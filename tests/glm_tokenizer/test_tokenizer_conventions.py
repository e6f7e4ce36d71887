"""glm_tokenizer.conventions: the chat prompt and PromptLayout's positions and mask."""

import numpy as np

from glm_tokenizer import PromptLayout, chat_prompt

SPECIAL = dict(pad_token_id=3, bos_token_id=3004, mask_token_id=3000, gmask_token_id=3001)


def test_chat_prompt_is_the_query_alone_without_history():
    assert chat_prompt("你好") == "你好"


def test_chat_prompt_numbers_the_rounds_from_zero():
    expected = "[Round 0]\n问：a\n答：A\n[Round 1]\n问：b\n答：B\n[Round 2]\n问：c\n答："
    assert chat_prompt("c", [("a", "A"), ("b", "B")]) == expected


def test_layout_of_generated_slots_continues_the_prompts():
    """Slots after the prompt take the [gMASK] position and the next block positions; each sees its row's
    real tokens up to itself."""
    layout = PromptLayout.of([[3, 3, 7, 3001, 3004], [8, 9, 7, 3001, 3004]], **SPECIAL)
    assert layout.position_ids(5, 7).tolist() == [[[1, 1], [2, 3]], [[3, 3], [2, 3]]]
    mask = layout.attention_mask(5, 6, 8)
    assert (~mask[:, 0, 0]).astype(int).tolist() == [[0, 0, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]]


def test_layout_of_slices_equals_the_layout_of_the_whole():
    layout = PromptLayout.of([[3, 5, 3000, 6, 3004, 9]], **SPECIAL)
    whole_positions, whole_mask = layout.position_ids(0, 10), layout.attention_mask(0, 10, 12)
    np.testing.assert_array_equal(layout.position_ids(4, 7), whole_positions[..., 4:7])
    np.testing.assert_array_equal(layout.attention_mask(4, 7, 12), whole_mask[:, :, 4:7])

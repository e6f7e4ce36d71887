"""The golden cases: every output of the original ChatGLM-6B tokenizer, reproduced exactly.

Each test compares ``{text: ours}`` with ``{text: reference}`` over all cases, so a failure names the
texts that differ.
"""

import numpy as np


def by_text(cases, compute):
    return {case["text"]: compute(case) for case in cases}


def test_special_ids_and_piece_count_are_read_from_the_model_file(tokenizer, golden_case):
    golden = golden_case("tokenizer")
    special = golden["special_ids"]
    assert tokenizer.mask_token_id == special["mask"] == 3000
    assert tokenizer.gmask_token_id == special["gmask"] == 3001
    assert tokenizer.bos_token_id == special["bos"] == 3004
    assert tokenizer.eos_token_id == special["eos"] == 3005
    assert tokenizer.pad_token_id == special["pad"] == 3
    assert tokenizer.num_pieces == golden["num_pieces"] == 3088
    assert tokenizer.vocab_size == 3088


def test_tokens_match_the_reference(tokenizer, tokenizer_cases):
    ours = by_text(tokenizer_cases, lambda case: tokenizer.tokenize(case["text"]))
    assert ours == by_text(tokenizer_cases, lambda case: case["tokens"])


def test_ids_with_gmask_and_sop_appended_match_the_reference(tokenizer, tokenizer_cases):
    ours = by_text(tokenizer_cases, lambda case: tokenizer.encode(case["text"]))
    assert ours == by_text(tokenizer_cases, lambda case: case["ids"])


def test_ids_without_special_tokens_match_the_reference(tokenizer, tokenizer_cases):
    ours = by_text(tokenizer_cases, lambda case: tokenizer.encode(case["text"], add_special_tokens=False))
    assert ours == by_text(tokenizer_cases, lambda case: case["ids_no_special"])


def test_tokens_convert_to_the_reference_ids(tokenizer, tokenizer_cases):
    ours = by_text(tokenizer_cases, lambda case: tokenizer.convert_tokens_to_ids(case["tokens"]))
    assert ours == by_text(tokenizer_cases, lambda case: case["ids_no_special"])


def test_ids_convert_to_the_reference_tokens(tokenizer, tokenizer_cases):
    ours = by_text(tokenizer_cases, lambda case: tokenizer.convert_ids_to_tokens(case["ids_no_special"]))
    assert ours == by_text(tokenizer_cases, lambda case: case["tokens"])


def test_decode_matches_the_reference(tokenizer, tokenizer_cases):
    ours = by_text(tokenizer_cases, lambda case: tokenizer.decode(case["ids_no_special"]))
    assert ours == by_text(tokenizer_cases, lambda case: case["decoded"])


def test_decode_writes_special_tokens_without_spaces_around_them(tokenizer, tokenizer_cases):
    ours = by_text(tokenizer_cases, lambda case: tokenizer.decode(case["ids"]))
    assert ours == by_text(tokenizer_cases, lambda case: case["decoded_with_special"])


def test_batch_input_ids_are_left_padded_with_pad(tokenizer, batch_cases):
    for case in batch_cases:
        assert tokenizer(case["texts"], padding=True)["input_ids"] == case["input_ids"]


def test_batch_attention_mask_matches_the_reference(tokenizer, batch_cases):
    for case in batch_cases:
        assert tokenizer(case["texts"], padding=True)["attention_mask"] == case["attention_mask"]


def test_batch_position_ids_match_the_reference(tokenizer, batch_cases):
    for case in batch_cases:
        assert tokenizer(case["texts"], padding=True)["position_ids"] == case["position_ids"]


def test_padding_longest_is_padding_true(tokenizer, batch_cases):
    for case in batch_cases:
        assert tokenizer(case["texts"], padding="longest") == tokenizer(case["texts"], padding=True)


def test_padding_to_max_length_of_the_longest_gives_the_reference_batch(tokenizer, batch_cases):
    for case in batch_cases:
        length = len(case["input_ids"][0])
        encoding = tokenizer(case["texts"], padding="max_length", max_length=length)
        assert encoding == {key: case[key] for key in ("input_ids", "attention_mask", "position_ids")}


def test_numpy_batch_holds_the_reference_values_with_a_batch_axis(tokenizer, batch_cases):
    for case in batch_cases:
        encoding = tokenizer(case["texts"], padding=True, return_tensors="np")
        batch, length = len(case["texts"]), len(case["input_ids"][0])
        assert encoding["input_ids"].dtype == np.int64
        assert encoding["attention_mask"].dtype == np.bool_
        assert encoding["position_ids"].dtype == np.int64
        assert encoding["attention_mask"].shape == (batch, 1, length, length)
        assert encoding["position_ids"].shape == (batch, 2, length)
        np.testing.assert_array_equal(encoding["input_ids"], case["input_ids"])
        np.testing.assert_array_equal(
            encoding["attention_mask"], np.array(case["attention_mask"], dtype=bool)
        )
        np.testing.assert_array_equal(encoding["position_ids"], case["position_ids"])


def test_batch_decode_of_a_padded_batch_drops_the_padding(tokenizer, batch_cases):
    for case in batch_cases:
        ids = tokenizer(case["texts"], padding=True, return_tensors="np")["input_ids"]
        assert tokenizer.batch_decode(ids) == [text + "[gMASK]<sop>" for text in case["texts"]]

"""ChatGLMTokenizer's behaviour beyond the golden cases: loading, saving, padding options, bad input.

Expected ids are those of the golden ``ice_text.model`` (``[MASK]`` 3000, ``[gMASK]`` 3001, ``<sop>`` 3004,
``<eop>`` 3005, ``<pad>`` 3; 3088 pieces).
"""

import json
import shutil

import numpy as np
import pytest

from glm_tokenizer import ChatGLMTokenizer

HELLO = [261, 353, 394]  # "你好"
HUAWEI = [261, 851, 2672, 1512, 680, 305]  # "请介绍一下华为"
GMASK, SOP, EOP, MASK, PAD = 3001, 3004, 3005, 3000, 3


# Loading and saving ---------------------------------------------------------------------------------


def test_save_pretrained_then_from_pretrained_gives_the_same_tokenizer(tokenizer, golden_hf_dir, tmp_path):
    vocab_path, config_path = tokenizer.save_pretrained(tmp_path / "saved")
    reloaded = ChatGLMTokenizer.from_pretrained(tmp_path / "saved")
    assert vocab_path.read_bytes() == (golden_hf_dir / "ice_text.model").read_bytes()
    assert json.loads(config_path.read_text(encoding="utf-8"))["num_image_tokens"] == 0
    text = "类型#上衣\n  版型#宽松 <sop> 😀"
    assert reloaded.encode(text) == tokenizer.encode(text)
    assert reloaded.decode(tokenizer.encode(text)) == tokenizer.decode(tokenizer.encode(text))


def test_saved_config_keeps_the_reference_keys(tokenizer, golden_hf_dir, tmp_path):
    _, config_path = tokenizer.save_pretrained(tmp_path)
    reference = json.loads((golden_hf_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert reference.items() <= json.loads(config_path.read_text(encoding="utf-8")).items()


def test_from_pretrained_reads_num_image_tokens_from_the_config(golden_hf_dir, tmp_path):
    shutil.copy(golden_hf_dir / "ice_text.model", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"num_image_tokens": 5}), encoding="utf-8")
    assert ChatGLMTokenizer.from_pretrained(tmp_path).encode("你好") == [266, 358, 399, 3006, 3009]


def test_from_pretrained_without_a_config_uses_the_chatglm_defaults(tokenizer, golden_hf_dir, tmp_path):
    shutil.copy(golden_hf_dir / "ice_text.model", tmp_path)
    assert ChatGLMTokenizer.from_pretrained(tmp_path).encode("你好") == [*HELLO, GMASK, SOP]


def test_image_tokens_shift_every_text_id(golden_hf_dir):
    shifted = ChatGLMTokenizer(golden_hf_dir / "ice_text.model", num_image_tokens=5)
    assert shifted.encode("你好") == [266, 358, 399, 3006, 3009]
    assert shifted.vocab_size == 5 + 3088
    assert shifted.convert_ids_to_tokens([2, 266]) == ["<image_2>", "▁"]
    assert shifted.convert_tokens_to_ids(["<image_2>", "▁"]) == [2, 266]
    assert shifted.decode([1, 266, 358, 399]) == "你好"


# Bad input ------------------------------------------------------------------------------------------


def test_missing_vocab_file_raises_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "ice_text.model"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        ChatGLMTokenizer(missing)


def test_from_pretrained_on_a_directory_without_vocab_raises_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "ice_text.model")):
        ChatGLMTokenizer.from_pretrained(tmp_path)


def test_corrupt_vocab_file_raises_naming_the_path(tmp_path):
    corrupt = tmp_path / "ice_text.model"
    corrupt.write_bytes(b"this is not a sentencepiece model")
    with pytest.raises(ValueError, match=str(corrupt)):
        ChatGLMTokenizer(corrupt)


def test_vocab_without_the_chatglm_pieces_is_refused(golden_hf_dir):
    with pytest.raises(ValueError, match=r"no piece '<\|blank_81\|>'"):
        ChatGLMTokenizer(golden_hf_dir / "ice_text.model", max_blank_length=81)


def test_right_padding_is_refused(golden_hf_dir):
    with pytest.raises(ValueError, match="left padding"):
        ChatGLMTokenizer(golden_hf_dir / "ice_text.model", padding_side="right")


def test_config_asking_for_lower_casing_is_refused(golden_hf_dir, tmp_path):
    shutil.copy(golden_hf_dir / "ice_text.model", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")
    with pytest.raises(ValueError, match="do_lower_case"):
        ChatGLMTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("text", [None, 3, b"bytes", ["a list"]])
def test_encode_of_a_non_string_raises_type_error(tokenizer, text):
    with pytest.raises(TypeError):
        tokenizer.encode(text)


@pytest.mark.parametrize("text", [None, 3, ["ok", None]])
def test_call_on_a_non_string_raises_type_error(tokenizer, text):
    with pytest.raises(TypeError):
        tokenizer(text)


def test_lone_surrogate_raises_a_unicode_error_naming_it(tokenizer):
    with pytest.raises(UnicodeEncodeError, match="surrogates"):
        tokenizer.encode("ab\ud800")


@pytest.mark.parametrize("max_length", [0, 1, 2])
def test_max_length_not_above_the_special_tokens_raises_value_error(tokenizer, max_length):
    with pytest.raises(ValueError, match=f"max_length={max_length} is too small"):
        tokenizer("你好", max_length=max_length, truncation=True)


def test_max_length_without_special_tokens_must_be_positive(tokenizer):
    with pytest.raises(ValueError, match="max_length=0 is too small"):
        tokenizer("你好", max_length=0, add_special_tokens=False)


def test_empty_batch_raises_value_error(tokenizer):
    with pytest.raises(ValueError, match="Empty batch"):
        tokenizer([], padding=True)


def test_padding_to_max_length_without_max_length_raises_value_error(tokenizer):
    with pytest.raises(ValueError, match="needs max_length"):
        tokenizer("你好", padding="max_length")


def test_truncation_without_max_length_raises_value_error(tokenizer):
    with pytest.raises(ValueError, match="needs max_length"):
        tokenizer("你好", truncation=True)


def test_sequence_longer_than_max_length_padding_raises_value_error(tokenizer):
    with pytest.raises(ValueError, match="truncation=True"):
        tokenizer("请介绍一下华为", padding="max_length", max_length=4)


@pytest.mark.parametrize("padding", ["right", "yes", None])
def test_unknown_padding_raises_value_error(tokenizer, padding):
    with pytest.raises(ValueError, match="padding"):
        tokenizer("你好", padding=padding)


def test_torch_tensors_are_refused(tokenizer):
    with pytest.raises(ValueError, match="return_tensors"):
        tokenizer("你好", return_tensors="pt")


def test_numpy_arrays_of_unpadded_different_lengths_are_refused(tokenizer):
    with pytest.raises(ValueError, match="padding=True"):
        tokenizer(["你好", "请介绍一下华为"], return_tensors="np")


# Encoding -------------------------------------------------------------------------------------------


def test_call_without_padding_returns_only_input_ids(tokenizer):
    assert tokenizer("你好") == {"input_ids": [*HELLO, GMASK, SOP]}
    assert tokenizer(["你好"]) == {"input_ids": [[*HELLO, GMASK, SOP]]}


def test_call_without_special_tokens_returns_the_bare_ids(tokenizer):
    assert tokenizer("你好", add_special_tokens=False) == {"input_ids": HELLO}


def test_single_text_as_numpy_gets_a_batch_axis(tokenizer):
    encoding = tokenizer("你好", padding=True, return_tensors="np")
    assert encoding["input_ids"].tolist() == [[*HELLO, GMASK, SOP]]
    assert encoding["attention_mask"].shape == (1, 1, 5, 5)
    assert encoding["position_ids"].tolist() == [[[0, 1, 2, 3, 3], [0, 0, 0, 0, 1]]]


def test_max_length_alone_adds_masks_without_padding(tokenizer):
    encoding = tokenizer("你好", max_length=10)
    assert encoding["input_ids"] == [*HELLO, GMASK, SOP]
    assert encoding["position_ids"] == [[0, 1, 2, 3, 3], [0, 0, 0, 0, 1]]
    assert np.array(encoding["attention_mask"]).shape == (1, 5, 5)


def test_padding_to_max_length_pads_left_with_masked_rows_and_zero_positions(tokenizer):
    encoding = tokenizer("你好", padding="max_length", max_length=7)
    mask = np.array(encoding["attention_mask"])
    assert encoding["input_ids"] == [PAD, PAD, *HELLO, GMASK, SOP]
    assert encoding["position_ids"] == [[0, 0, 0, 1, 2, 3, 3], [0, 0, 0, 0, 0, 0, 1]]
    assert mask[:, :2, :].all() and mask[:, :, :2].all()
    assert not mask[0, 2:, 2:6].any()  # the prompt and <sop> see the whole prompt
    assert mask[0, 2:6, 6].all()  # the prompt does not see <sop>


def test_truncation_cuts_the_text_and_keeps_gmask_and_sop(tokenizer):
    encoding = tokenizer("请介绍一下华为", max_length=5, truncation=True)
    assert encoding["input_ids"] == [*HUAWEI[:3], GMASK, SOP]


def test_truncation_to_one_token_keeps_the_first_piece(tokenizer):
    assert tokenizer("你好", max_length=3, truncation=True)["input_ids"] == [HELLO[0], GMASK, SOP]


def test_truncation_leaves_short_texts_alone(tokenizer):
    assert tokenizer("你好", max_length=50, truncation=True)["input_ids"] == [*HELLO, GMASK, SOP]


def test_mask_token_takes_the_place_of_gmask_in_position_ids(tokenizer):
    ids = tokenizer("你[MASK]好", max_length=8)
    assert ids["input_ids"] == [261, 353, MASK, 261, 394, GMASK, SOP]
    assert ids["position_ids"] == [[0, 1, 2, 3, 4, 5, 2], [0, 0, 0, 0, 0, 0, 1]]


def test_build_inputs_for_a_prompt_and_answer_ends_with_eop(tokenizer):
    assert tokenizer.build_inputs_with_special_tokens([1, 2], [7, 8]) == [1, 2, GMASK, SOP, 7, 8, EOP]


def test_special_tokens_spelled_in_text_become_their_ids_without_surrounding_spaces(tokenizer):
    assert tokenizer.tokenize("你好 <sop>\n再见") == [
        *tokenizer.tokenize("你好"),
        "<sop>",
        *tokenizer.tokenize("再见"),
    ]
    assert tokenizer.encode("[MASK]", add_special_tokens=False) == [MASK]


def test_gmask_spelled_in_text_is_left_to_sentencepiece_as_in_the_reference(tokenizer):
    # [gMASK] is not one of transformers' special tokens, so it keeps the dummy-prefix piece.
    assert tokenizer.tokenize("[gMASK]") == ["▁", "[gMASK]"]


@pytest.mark.parametrize(
    ("spaces", "pieces"),
    [
        (2, ["<|blank_2|>"]),
        (80, ["<|blank_80|>"]),
        (81, ["<|blank_80|>", "▁"]),
        (82, ["<|blank_80|>", "<|blank_2|>"]),
        (160, ["<|blank_80|>", "<|blank_80|>"]),
    ],
)
def test_space_runs_become_blank_tokens_longest_first(tokenizer, spaces, pieces):
    assert tokenizer.tokenize("x" + " " * spaces + "y") == ["▁x", *pieces, "y"]


def test_convert_ids_to_tokens_of_a_dead_id_raises_value_error(tokenizer):
    with pytest.raises(ValueError, match="3100 has no piece"):
        tokenizer.convert_ids_to_tokens(3100)


# Decoding -------------------------------------------------------------------------------------------


def test_decode_drops_ids_without_a_piece(tokenizer):
    # The golden model has 3088 pieces and 3200 embedding rows; the 6B model's dead rows are 130344..130527.
    assert tokenizer.decode([3088, *HELLO, 3150, 3199, 10**6, -1]) == "你好"


def test_decode_always_drops_pad(tokenizer):
    assert tokenizer.decode([PAD, PAD, *HELLO, GMASK, SOP]) == "你好[gMASK]<sop>"


def test_decode_skipping_special_tokens_keeps_gmask_as_the_reference_does(tokenizer):
    ids = [PAD, *HELLO, MASK, GMASK, SOP, *HUAWEI, EOP]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "你好[gMASK] 请介绍一下华为"


def test_decode_accepts_a_single_id_and_numpy_arrays(tokenizer):
    assert tokenizer.decode(353) == "你"
    assert tokenizer.decode(np.array(HELLO, dtype=np.int64)) == "你好"


def test_decode_removes_spaces_before_punctuation_like_transformers(tokenizer):
    ids = tokenizer.encode("Hello , world . it 's", add_special_tokens=False)
    assert tokenizer.decode(ids) == "Hello, world. it's"
    assert tokenizer.decode(ids, clean_up_tokenization_spaces=False) == "Hello , world . it 's"


def test_batch_decode_passes_options_to_decode(tokenizer):
    assert tokenizer.batch_decode([[*HELLO, GMASK, SOP], [SOP, *HUAWEI]], skip_special_tokens=True) == [
        "你好[gMASK]",
        "请介绍一下华为",
    ]

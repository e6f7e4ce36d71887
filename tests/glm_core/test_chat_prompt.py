"""The chat prompt and the answer clean-up, against the original THUDM code's outputs (no model run)."""

import pytest

from glm_core import process_response
from glm_core.chat import MIN_REPLY_TOKENS, fit_prompt
from glm_tokenizer import ChatGLMTokenizer
from glm_tokenizer import chat_prompt as build_prompt


@pytest.fixture(scope="module")
def tokenizer(golden_hf_dir):
    return ChatGLMTokenizer.from_pretrained(golden_hf_dir)


@pytest.mark.parametrize("case_index", range(6))
def test_process_response_matches_golden(golden_case, case_index):
    case = golden_case("process_response")[case_index]
    assert process_response(case["raw"]) == case["processed"]


@pytest.mark.parametrize("case_index", range(3))
def test_prompt_and_ids_match_golden(golden_case, tokenizer, case_index):
    case = golden_case("chat")[case_index]
    history = [tuple(turn) for turn in case["history"]]
    assert build_prompt(case["query"], history) == case["prompt"]
    inputs = fit_prompt(tokenizer, case["query"], history, seq_length=256, max_length=case["max_length"])
    assert inputs.prompt == case["prompt"]
    assert inputs.input_ids == case["prompt_ids"]
    assert inputs.max_length == case["max_length"]
    assert inputs.dropped_rounds == 0


def test_no_history_prompt_is_the_raw_query():
    assert build_prompt("你好", []) == "你好"


def test_rounds_are_numbered_from_zero():
    prompt = build_prompt("c", [("a", "A"), ("b", "B")])
    assert prompt == "[Round 0]\n问：a\n答：A\n[Round 1]\n问：b\n答：B\n[Round 2]\n问：c\n答："


def test_max_length_is_capped_at_the_model_seq_length(tokenizer):
    assert fit_prompt(tokenizer, "你好", [], seq_length=256, max_length=2048).max_length == 256


def test_max_new_tokens_sets_the_reply_room(tokenizer):
    inputs = fit_prompt(tokenizer, "你好", [], seq_length=256, max_new_tokens=24)
    assert inputs.max_length == len(inputs.input_ids) + 24 == 29


def test_oldest_rounds_are_dropped_until_the_prompt_leaves_room(tokenizer):
    history = [(f"问题{i}", "回答" * 10) for i in range(6)]
    inputs = fit_prompt(tokenizer, "最后的问题", history, seq_length=256, max_length=100)
    assert inputs.dropped_rounds > 0
    kept = history[inputs.dropped_rounds:]
    assert inputs.prompt == build_prompt("最后的问题", kept)
    assert len(inputs.input_ids) + MIN_REPLY_TOKENS <= 100
    # one round fewer dropped would not have fit
    longer = tokenizer.encode(build_prompt("最后的问题", history[inputs.dropped_rounds - 1:]))
    assert len(longer) + MIN_REPLY_TOKENS > 100


def test_the_current_query_is_kept_when_all_history_goes(tokenizer):
    history = [("旧问题" * 20, "旧回答" * 20)]
    inputs = fit_prompt(tokenizer, "你好", history, seq_length=256, max_length=40)
    assert inputs.dropped_rounds == 1
    assert inputs.prompt == "你好"


def test_a_query_too_long_for_the_model_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match=r"the query is \d+ tokens long and leaves no room for a reply within 256"):
        fit_prompt(tokenizer, "你好" * 300, [], seq_length=256)


def test_a_query_too_long_for_max_new_tokens_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="max_new_tokens=250 it exceeds the model's seq_length 256"):
        fit_prompt(tokenizer, "你好" * 10, [], seq_length=256, max_new_tokens=250)

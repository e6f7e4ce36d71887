"""GLMChatModel.chat / stream_chat against the golden chat.json (greedy, three rounds with history)."""

import io
import logging

import numpy as np
import pytest

from glm_core.chat import interactive_chat
from glm_core.generation import generator_for

GREEDY = dict(do_sample=False)


def history_of(case):
    return [tuple(turn) for turn in case["history"]]


def test_chat_model_is_the_inference_model(chat_model):
    assert chat_model.config.use_past
    assert chat_model.inference
    assert generator_for(chat_model).uses_kernels


@pytest.mark.parametrize("case_index", range(3))
def test_chat_reproduces_golden_round(chat_model, tokenizer, golden_case, case_index):
    case = golden_case("chat")[case_index]
    response, history = chat_model.chat(tokenizer, case["query"], history_of(case), max_length=case["max_length"],
                                        **GREEDY)
    assert response == case["response"]
    assert history == [*history_of(case), (case["query"], case["response"])]


@pytest.mark.parametrize("case_index", range(3))
def test_chat_generates_the_golden_ids(chat_model, tokenizer, golden_case, case_index):
    """The prompt ids go in, the golden ids come out: ids without a piece (>= 3088) are never chosen."""
    case = golden_case("chat")[case_index]
    inputs = chat_model.chat_inputs(tokenizer, case["query"], history_of(case), max_length=case["max_length"])
    assert inputs.input_ids == case["prompt_ids"]
    output = chat_model.generate(np.array([inputs.input_ids]), max_length=inputs.max_length,
                                 num_pieces=tokenizer.num_pieces, **GREEDY)
    assert output[0, len(inputs.input_ids):].tolist() == case["response_ids"]


def test_the_three_rounds_chain_through_the_returned_history(chat_model, tokenizer, golden_case):
    cases = golden_case("chat")
    history = []
    for case in cases:
        response, history = chat_model.chat(tokenizer, case["query"], history, max_new_tokens=24, **GREEDY)
        assert response == case["response"]
    assert history == [(case["query"], case["response"]) for case in cases]


def test_stream_chat_grows_to_the_chat_response(chat_model, tokenizer, golden_case):
    case = golden_case("chat")[1]
    steps = list(chat_model.stream_chat(tokenizer, case["query"], history_of(case), max_length=case["max_length"],
                                        **GREEDY))
    responses = [response for response, _ in steps]
    assert len(steps) == len(case["response_ids"])  # one value per token
    assert responses[-1] == case["response"]
    assert all(case["response"].startswith(response) for response in responses)
    assert all(history == [*history_of(case), (case["query"], response)] for response, history in steps)


def test_leaving_stream_chat_early_stops_generation(chat_model, tokenizer, golden_case):
    case = golden_case("chat")[0]
    stream = chat_model.stream_chat(tokenizer, case["query"], max_new_tokens=24, **GREEDY)
    first, _ = next(stream)
    stream.close()
    assert case["response"].startswith(first)
    # the model is free again: a full chat still gives the golden answer
    assert chat_model.chat(tokenizer, case["query"], max_new_tokens=24, **GREEDY)[0] == case["response"]


def test_chat_reports_its_speed(chat_model, tokenizer):
    chat_model.chat(tokenizer, "你好", max_new_tokens=8, **GREEDY)
    stats = chat_model.generation_stats
    assert stats.new_tokens == 8
    assert stats.tokens_per_second > 0


def test_sampled_chat_is_repeatable_with_a_seed(chat_model, tokenizer):
    first = chat_model.chat(tokenizer, "你好", max_new_tokens=8, seed=7)
    second = chat_model.chat(tokenizer, "你好", max_new_tokens=8, seed=7)
    assert first == second


def test_long_history_drops_oldest_rounds_and_logs_once(chat_model, tokenizer, golden_case, caplog):
    cases = golden_case("chat")
    history = [(case["query"], case["response"]) for case in cases] * 3  # 9 rounds, far past max_length
    with caplog.at_level(logging.WARNING, logger="glm_core.chat"):
        response, new_history = chat_model.chat(tokenizer, "你好", history, max_length=128, **GREEDY)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert "left out the" in warnings[0] and "oldest of 9 rounds" in warnings[0]
    assert new_history == [*history, ("你好", response)]  # the caller's history is kept whole


def test_query_too_long_for_the_model_is_a_clear_error(chat_model, tokenizer):
    with pytest.raises(ValueError, match="shorten the query"):
        chat_model.chat(tokenizer, "你好" * 300, **GREEDY)


def test_console_transcript_without_a_terminal(chat_model, tokenizer, golden_case):
    """Piped input: one answer per query, nothing else; 'clear' empties the history, 'stop' ends."""
    cases = golden_case("chat")
    lines = iter([cases[0]["query"], cases[1]["query"], "clear", cases[0]["query"], "stop", "never read"])
    out = io.StringIO()
    history = interactive_chat(chat_model, tokenizer, lambda: next(lines, None), out, interactive=False,
                               max_new_tokens=24, **GREEDY)
    assert out.getvalue() == f"{cases[0]['response']}\n{cases[1]['response']}\n{cases[0]['response']}\n"
    assert history == [(cases[0]["query"], cases[0]["response"])]
    assert next(lines) == "never read"


def test_generation_errors_reach_the_caller(chat_model, tokenizer):
    with pytest.raises(ValueError, match="need temperature > 0"):
        chat_model.chat(tokenizer, "你好", temperature=0.0)

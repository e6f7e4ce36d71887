"""The KV-cache decoder: golden generations, parity with a full forward, and input checks."""

import mindspore as ms
import numpy as np
import pytest

from glm_core import Generator, GLMForPreTraining
from glm_core.checkpoint import load_state
from glm_core.generation import generator_for


@pytest.mark.parametrize("case_index", range(6))
def test_greedy_generation_matches_golden_ids(golden_model, golden_case, case_index):
    case = golden_case("generate")[case_index]
    output = generator_for(golden_model).generate(np.array(case["input_ids"]), max_length=case["max_length"])
    assert output.tolist() == case["output_ids"]


def logits_of_each_step(generator, prompt, new_tokens):
    """Run the generator's decode loop greedily; the logits each token was chosen from."""
    seen = []

    def choose(logits, sequences):
        seen.append(logits.copy())
        return logits.argmax(axis=-1)

    tokens = [int(step[0]) for step in generator._decode_loop(np.array([prompt]), new_tokens, choose, -1, 3)]
    return seen, tokens


def test_incremental_logits_equal_a_full_forward_at_every_step(golden_config, golden_state, golden_case):
    """Each one-token step gives the logits of the whole sequence so far run as one prompt, bit for bit: the
    CPU kernels sum in one order for any number of rows, and masked cache slots add exact zeros."""
    model = GLMForPreTraining(golden_config)
    load_state(model, golden_state)
    stepping, whole = Generator(model), Generator(model)
    assert stepping.uses_kernels
    prompt = golden_case("forward")[1]["input_ids"]
    step_logits, tokens = logits_of_each_step(stepping, prompt, 12)
    for step in range(12):
        (prompt_logits,), _ = logits_of_each_step(whole, prompt + tokens[:step], 1)
        np.testing.assert_array_equal(step_logits[step], prompt_logits)


def test_generation_takes_the_kernels_whatever_the_model_was_built_for(golden_config, golden_state, golden_case):
    """A training-built model (no use_past, not inference) generates on the kernels, the golden ids."""
    model = GLMForPreTraining(golden_config, inference=False)
    load_state(model, golden_state)
    generator = Generator(model)
    case = golden_case("generate")[0]
    assert generator.uses_kernels
    assert generator.generate(np.array(case["input_ids"]), max_length=case["max_length"]).tolist() == case["output_ids"]


def test_rows_stop_at_eos_and_are_padded(golden_model, golden_config, golden_case):
    case = golden_case("generate")[4]
    eos = case["output_ids"][1][len(case["input_ids"][1]) + 2]  # make row 1's third new token the "eos"
    output = generator_for(golden_model).generate(np.array(case["input_ids"]), max_length=case["max_length"],
                                                  eos_token_id=eos)
    row = output[1, len(case["input_ids"][1]):].tolist()
    stop = row.index(eos)
    assert all(token == golden_config.pad_token_id for token in row[stop + 1:])
    assert output[0].tolist() == case["output_ids"][0][: output.shape[1]]


def test_num_pieces_forbids_dead_rows(golden_model, golden_case):
    case = golden_case("generate")[0]
    generator = generator_for(golden_model)
    free = generator.generate(np.array(case["input_ids"]), max_length=case["max_length"])
    assert (free >= 3088).any()  # the golden greedy run does pick dead rows
    limited = generator.generate(np.array(case["input_ids"]), max_length=case["max_length"], num_pieces=3088)
    assert (limited < 3088).all()


def test_compile_time_is_reported_apart_and_graphs_are_reused(golden_model, golden_case):
    case = golden_case("generate")[1]
    golden_model_generator = generator_for(golden_model)
    golden_model_generator.generate(np.array(case["input_ids"]), max_length=case["max_length"])
    golden_model_generator.generate(np.array(case["input_ids"]), max_length=case["max_length"])
    stats = golden_model_generator.stats
    assert stats.compile_seconds == 0.0  # same batch size as the call before: nothing recompiled
    assert stats.new_tokens == case["max_length"] - len(case["input_ids"][0])
    assert stats.tokens_per_second > 0


@pytest.mark.parametrize(
    ("input_ids", "kwargs", "message"),
    [
        (np.zeros((0, 4), np.int64), {"max_length": 8}, "non-empty"),
        ([[261, 3, 353, 3001, 3004]], {"max_length": 20}, "left padding"),
        ([[261, 353, 3001, 3004]], {"max_length": 257}, "seq_length 256"),
        ([[261, 353, 3001, 3004]], {"max_length": 3}, "no room"),
        ([[261, 353, 3001, 3004]], {"max_length": 20, "top_p": 0.0}, "top_p"),
        ([[261, 99999, 3001, 3004]], {"max_length": 20}, "outside"),
    ],
)
def test_bad_input_is_a_clear_error_before_compiling(golden_model, input_ids, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generator_for(golden_model).generate(input_ids, **kwargs)


def test_generation_compiles_its_graphs_even_in_pynative_mode(golden_config, golden_state, golden_case):
    """The decoder's graphs are @ms.jit: a caller left in PyNative mode still gets golden ids, compiled."""
    case = golden_case("generate")[0]
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        model = GLMForPreTraining(golden_config, inference=True)
        load_state(model, golden_state)
        generator = Generator(model)
        output = generator.generate(np.array(case["input_ids"]), max_length=case["max_length"])
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    assert output.tolist() == case["output_ids"]
    assert generator.stats.compile_seconds > 0


@pytest.mark.parametrize("case_index", [0, 4])
def test_without_the_cpu_kernels_mindspore_operators_give_the_golden_ids(golden_config, golden_state, golden_case,
                                                                         monkeypatch, case_index):
    """The fallback (no C++ compiler): MatMul, BatchMatMul and the KV cache read through transposes."""
    from glm_core import kernels

    monkeypatch.setattr(kernels, "_library", lambda: None)
    model = GLMForPreTraining(golden_config, inference=True)
    load_state(model, golden_state)
    generator = Generator(model)
    assert not generator.uses_kernels
    case = golden_case("generate")[case_index]
    output = generator.generate(np.array(case["input_ids"]), max_length=case["max_length"])
    assert output.tolist() == case["output_ids"]

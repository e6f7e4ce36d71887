"""The KV-cache decoder: golden generations, parity with a full forward, and input checks."""

import mindspore as ms
import numpy as np
import pytest

from glm_core.generation import Decoder, decode_mask


@pytest.mark.parametrize("case_index", range(6))
def test_greedy_generation_matches_golden_ids(golden_model, golden_case, case_index):
    case = golden_case("generate")[case_index]
    output = golden_model.generate(np.array(case["input_ids"]), max_length=case["max_length"])
    assert output.tolist() == case["output_ids"]


def test_incremental_logits_equal_a_full_forward_at_every_step(golden_model, golden_case):
    """Prefill plus one-token decode steps give the logits of a full forward over the same prefix, bit for bit.

    With a cache, each block is one operator (kernels/layer.cc); the full forward runs the block's kernels one
    by one: the same arithmetic.
    """
    assert all(layer.kernel is not None for layer in golden_model.transformer.layers)
    prompt = golden_case("forward")[1]["input_ids"]
    bucket = 64
    decoder = Decoder(golden_model, batch=1, cache_length=128)
    padded = np.array([[3] * (bucket - len(prompt)) + prompt], np.int64)
    logits = decoder.prefill(bucket)(ms.Tensor(padded, ms.int32)).asnumpy()[0]
    sequence = list(prompt)
    for step in range(12):
        full = golden_model(ms.Tensor([sequence], ms.int32)).asnumpy()[0, -1]
        np.testing.assert_array_equal(logits, full)  # the CPU kernels sum in one order for any length
        token = int(full.argmax())
        sequence.append(token)
        slot = bucket + step
        position_ids = np.array([[[len(prompt) - 2], [step + 2]]], np.int32)  # [gMASK] position, block
        logits = decoder.decode(ms.Tensor([[token]], ms.int32), ms.Tensor(position_ids),
                                ms.Tensor([slot], ms.int32),
                                ms.Tensor(decode_mask([bucket - len(prompt)], slot, 128))).asnumpy()[0]


def test_decode_mask_shows_each_row_its_slots_from_its_prompt_to_the_current_one():
    mask = decode_mask(np.array([0, 2]), slot=4, cache_length=6)
    assert mask.shape == (2, 1, 1, 6) and mask.dtype == bool
    assert (~mask[:, 0, 0]).astype(int).tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 0]]


def test_compiled_steps_run_straight_through_mindspores_graph_executor(golden_model, golden_case):
    """generate skips Cell.__call__'s per-call Python (0.8 ms a glm_bench step) for graphs it compiled."""
    from glm_core import generation

    assert generation._GRAPH_EXECUTOR is not None, "MindSpore's graph executor moved: see generation._run_compiled"
    case = golden_case("generate")[0]
    golden_model.generate(np.array(case["input_ids"]), max_length=case["max_length"])
    decoder = next(reversed(golden_model._decoders.values()))
    args = (ms.Tensor([[5]], ms.int32), ms.Tensor([[[3], [2]]], ms.int32),
            ms.Tensor([decoder.cache_length - 1], ms.int32),
            ms.Tensor(decode_mask([0], decoder.cache_length - 1, decoder.cache_length)))
    np.testing.assert_array_equal(generation._run_compiled(decoder.decode, args).asnumpy(),
                                  decoder.decode(*args).asnumpy())


def test_rows_stop_at_eos_and_are_padded(golden_model, golden_config, golden_case):
    case = golden_case("generate")[4]
    eos = case["output_ids"][1][len(case["input_ids"][1]) + 2]  # make row 1's third new token the "eos"
    output = golden_model.generate(np.array(case["input_ids"]), max_length=case["max_length"], eos_token_id=eos)
    row = output[1, len(case["input_ids"][1]):].tolist()
    stop = row.index(eos)
    assert all(token == golden_config.pad_token_id for token in row[stop + 1:])
    assert output[0].tolist() == case["output_ids"][0][: output.shape[1]]


def test_num_pieces_forbids_dead_rows(golden_model, golden_case):
    case = golden_case("generate")[0]
    free = golden_model.generate(np.array(case["input_ids"]), max_length=case["max_length"])
    assert (free >= 3088).any()  # the golden greedy run does pick dead rows
    limited = golden_model.generate(np.array(case["input_ids"]), max_length=case["max_length"], num_pieces=3088)
    assert (limited < 3088).all()


def test_compile_time_is_reported_apart_and_graphs_are_reused(golden_model, golden_case):
    case = golden_case("generate")[1]
    golden_model.generate(np.array(case["input_ids"]), max_length=case["max_length"])
    stats = golden_model.generation_stats
    assert stats.compile_seconds == 0.0  # same batch and buckets as an earlier call: nothing recompiled
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
        golden_model.generate(input_ids, **kwargs)


def test_generation_compiles_its_graphs_even_in_pynative_mode(golden_config, golden_state, golden_case):
    """The decoder's graphs are @ms.jit: a caller left in PyNative mode still gets golden ids, compiled."""
    from glm_core import GLMForPreTraining
    from glm_core.checkpoint import load_state

    case = golden_case("generate")[0]
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        model = GLMForPreTraining(golden_config, inference=True)
        load_state(model, golden_state)
        output = model.generate(np.array(case["input_ids"]), max_length=case["max_length"])
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    assert output.tolist() == case["output_ids"]
    assert model.generation_stats.compile_seconds > 0


@pytest.mark.parametrize("case_index", [0, 4])
def test_without_the_cpu_kernels_mindspore_operators_give_the_golden_ids(golden_config, golden_state, golden_case,
                                                                         monkeypatch, case_index):
    """The fallback (no C++ compiler): MatMul, BatchMatMul and the KV cache read through transposes."""
    from glm_core import GLMForPreTraining, kernels
    from glm_core.checkpoint import load_state

    monkeypatch.setattr(kernels, "_library", lambda: None)
    model = GLMForPreTraining(golden_config, inference=True)
    assert not model.lm_head.uses_kernel and model.transformer.layers[0].attention.kernel is None
    load_state(model, golden_state)
    case = golden_case("generate")[case_index]
    assert model.generate(np.array(case["input_ids"]), max_length=case["max_length"]).tolist() == case["output_ids"]

"""A session compiles its graphs once: other lengths and further chat rounds reuse them, and a model built from
a plain preset generates on the same path (the kernels) as one built for incremental use.

Compiles are counted by ``GenerationStats.graphs_compiled`` (the generator's ``stats``, per generation).
"""

import numpy as np

import glm_core
from glm_core import GLMChatModel, GLMConfig, GLMForPreTraining
from glm_core.checkpoint import load_state
from glm_core.generation import cache_length, generator_for, prompt_bucket
from glm_core.kernel_model import KernelGLM

GREEDY = dict(do_sample=False)


def fresh_chat_model(golden_config, golden_state):
    """A chat model of its own, so its generator starts with nothing compiled."""
    model = GLMChatModel(golden_config)
    load_state(model, golden_state)
    return model


def test_other_lengths_compile_nothing_after_the_first_call(golden_config, golden_state, golden_case):
    """The first call compiles the prompt graph and the step graph; new max_new_tokens, a whole-model length
    (every slot the model has left, as a chat round asks) and another prompt in the bucket compile nothing."""
    model = GLMForPreTraining(golden_config)
    load_state(model, golden_state)
    generator = generator_for(model)
    prompt = golden_case("generate")[0]["input_ids"][0]
    glm_core.generate(model, np.array([prompt]), max_new_tokens=5)
    assert generator.stats.graphs_compiled == 2
    for lengths in ({"max_new_tokens": 3}, {"max_new_tokens": 40}, {}, {"max_length": golden_config.seq_length}):
        glm_core.generate(model, np.array([prompt]), **lengths)
        assert generator.stats.graphs_compiled == 0, lengths
    glm_core.generate(model, np.array([prompt[1:]]), max_new_tokens=9)
    assert generator.stats.graphs_compiled == 0


def test_chat_rounds_after_the_first_compile_nothing(golden_config, golden_state, golden_case, tokenizer):
    """Three rounds with the chat's default length (all the room the model has left): each prompt is padded
    to its bucket, whatever the length of the reply it leaves room for."""
    model = fresh_chat_model(golden_config, golden_state)
    history, compiled = [], []
    for case in golden_case("chat"):
        _, history = model.chat(tokenizer, case["query"], history, **GREEDY)
        compiled.append(model.generation_stats.graphs_compiled)
    assert compiled == [2, 0, 0]


def test_golden_chat_rounds_compile_only_a_new_prompt_bucket(golden_config, golden_state, golden_case, tokenizer):
    """The golden three rounds (24 new tokens each) have prompts of 5, 64 and 116 tokens: the second round
    shares the first's 64-token bucket and compiles nothing; the third compiles its 128-token prompt graph
    alone. Answers are the golden ones."""
    model = fresh_chat_model(golden_config, golden_state)
    cases = golden_case("chat")
    assert [prompt_bucket(len(case["prompt_ids"]), golden_config.seq_length) for case in cases] == [64, 64, 128]
    history, compiled = [], []
    for case in cases:
        response, history = model.chat(tokenizer, case["query"], history, max_new_tokens=24, **GREEDY)
        assert response == case["response"]
        compiled.append(model.generation_stats.graphs_compiled)
    assert compiled == [2, 0, 1]


def test_the_cache_holds_any_prompt_padded_to_its_bucket_and_the_rest_of_the_model(golden_config):
    seq_length = golden_config.seq_length  # 256: a 129-token prompt pads to 256, 127 slots of padding
    assert cache_length(seq_length) == seq_length + 127
    for length in range(1, seq_length):
        bucket = prompt_bucket(length, seq_length)
        assert length <= bucket <= seq_length
        assert bucket + (seq_length - length) <= cache_length(seq_length)


def test_a_plain_preset_generates_on_the_kernels_as_an_incremental_model_does():
    """GLMForPreTraining(GLMConfig.from_name(...)) (use_past False) and the same config with use_past=True
    take the same path: the kernels, through the public glm_core.generate."""
    plain = GLMForPreTraining(GLMConfig.from_name("glm_tiny"))
    incremental = GLMForPreTraining(GLMConfig.from_name("glm_tiny", use_past=True))
    assert not plain.config.use_past and not plain.inference
    for model in (plain, incremental):
        output = glm_core.generate(model, np.array([[261, 353, 3001, 3004]]), max_new_tokens=3)
        assert output.shape == (1, 7)
        generator = generator_for(model)
        assert generator.uses_kernels
        assert isinstance(generator.kernel_network, KernelGLM)
        assert generator.kernel_network.model is model

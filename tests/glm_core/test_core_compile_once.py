"""A session compiles its graphs once: other lengths and further chat rounds reuse them, and a model built from
a plain preset generates on the same path (the kernels) as one built for incremental use.

Compiles are counted by ``GenerationStats.graphs_compiled`` (the generator's ``stats``, per generation).
"""

import dataclasses

import numpy as np
import pytest

import glm_core
from glm_core import GLMChatModel, GLMConfig, GLMForPreTraining
from glm_core.checkpoint import load_state
from glm_core.generation import generator_for
from glm_core.kernel_model import KernelGLM

GREEDY = dict(do_sample=False)


def fresh_chat_model(golden_config, golden_state):
    """A chat model of its own, so its generator starts with nothing compiled."""
    model = GLMChatModel(golden_config)
    load_state(model, golden_state)
    return model


def test_other_lengths_compile_nothing_after_the_first_call(golden_config, golden_state, golden_case):
    """The first call compiles the prompt graph and the step graph; new max_new_tokens, a whole-model length
    (every slot the model has left, as a chat round asks) and another prompt length compile nothing."""
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
    """Three rounds with the chat's default length (all the room the model has left): one prompt graph and
    one step graph serve every round, whatever the length of the reply it leaves room for."""
    model = fresh_chat_model(golden_config, golden_state)
    history, compiled = [], []
    for case in golden_case("chat"):
        _, history = model.chat(tokenizer, case["query"], history, **GREEDY)
        compiled.append(model.generation_stats.graphs_compiled)
    assert compiled == [2, 0, 0]


def test_golden_chat_rounds_compile_nothing_after_the_first(golden_config, golden_state, golden_case, tokenizer):
    """The golden three rounds (24 new tokens each) have prompts of 5, 64 and 116 tokens: one prompt graph
    serves them all, the second and third rounds compile nothing. Answers are the golden ones."""
    model = fresh_chat_model(golden_config, golden_state)
    cases = golden_case("chat")
    assert [len(case["prompt_ids"]) for case in cases] == [5, 64, 116]
    history, compiled = [], []
    for case in cases:
        response, history = model.chat(tokenizer, case["query"], history, max_new_tokens=24, **GREEDY)
        assert response == case["response"]
        compiled.append(model.generation_stats.graphs_compiled)
    assert compiled == [2, 0, 0]


@pytest.mark.parametrize("compute_dtype", ["float32", "float16"])  # the kernels; MindSpore's operators
def test_prompts_of_every_length_share_one_prompt_graph(golden_config, golden_state, compute_dtype):
    """After a first generation, prompts from 1 token to the longest the model has room for compile nothing,
    and each gives the tokens of a model whose caches never held another prompt."""
    rng = np.random.default_rng(0)
    config = dataclasses.replace(golden_config, compute_dtype=compute_dtype)

    def fresh_model():
        model = GLMForPreTraining(config)
        load_state(model, golden_state)
        return model

    model = fresh_model()
    generator = generator_for(model)
    assert generator.uses_kernels == (compute_dtype == "float32")
    glm_core.generate(model, np.array([[5, 6, config.gmask_token_id, config.bos_token_id]]), max_new_tokens=2)
    assert generator.stats.graphs_compiled == 2
    for length in (1, 2, 63, 64, 65, 200, config.seq_length - 4):
        prompt = np.concatenate([rng.integers(10, 3000, length - 1), [config.bos_token_id]])[None]
        shared = glm_core.generate(model, prompt, max_new_tokens=4)
        assert generator.stats.graphs_compiled == 0, length
        alone = glm_core.generate(fresh_model(), prompt, max_new_tokens=4)
        np.testing.assert_array_equal(shared, alone)


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
        assert generator.kernel_network.word_embeddings is model.transformer.word_embeddings

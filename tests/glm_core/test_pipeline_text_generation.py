"""TextGenerationPipeline and pipeline(): MindFormers' result shape, batching and the golden continuation."""

import shutil

import pytest

from glm_core import GLMConfig, TextGenerationPipeline, pipeline
from glm_core.text_generation import generate_texts


@pytest.fixture(scope="module")
def pipe(chat_model, tokenizer):
    return TextGenerationPipeline(chat_model, tokenizer)


@pytest.fixture(scope="module")
def golden_hello(golden_case, tokenizer):
    """The golden greedy continuation of "你好" (chat.json round 0: 24 tokens, no <eop>) as MindFormers shows it."""
    case = golden_case("chat")[0]
    return tokenizer.decode(tokenizer.encode("你好", add_special_tokens=False) + case["response_ids"])


def test_a_string_gives_one_result_in_mindformers_shape(pipe, golden_hello):
    result = pipe("你好", max_length=29)
    assert result == [{"text_generation_text": [golden_hello]}]
    assert golden_hello.startswith("你好")


def test_a_list_gives_one_result_per_prompt_in_order(pipe, golden_hello):
    results = pipe(["请介绍一下华为", "你好", "Hello world!"], max_new_tokens=24, batch_size=2)
    assert len(results) == 3
    assert all(list(result) == ["text_generation_text"] and len(result["text_generation_text"]) == 1
               for result in results)
    assert results[1] == {"text_generation_text": [golden_hello]}  # left padding in a batch changes nothing
    assert results[0]["text_generation_text"][0].startswith("请介绍一下华为")


def test_batched_results_equal_single_ones(chat_model, tokenizer):
    prompts = ["a", "b c d e f g", "第一行\n第二行"]
    batched, _ = generate_texts(chat_model, tokenizer, prompts, max_new_tokens=12, batch_size=3)
    single = [generate_texts(chat_model, tokenizer, [prompt], max_new_tokens=12)[0][0] for prompt in prompts]
    assert batched == single


def test_continuations_never_use_ids_without_a_piece(chat_model, tokenizer):
    """The golden generate.json picks dead rows (3149, 3193) for "你好"; the pipeline must not."""
    (result,), _ = generate_texts(chat_model, tokenizer, ["你好"], max_length=29)
    assert result.new_tokens == 24
    assert result.response == tokenizer.decode(tokenizer.encode(result.response, add_special_tokens=False))


def test_sampling_options_are_accepted_and_seeded(pipe):
    options = dict(do_sample=True, top_k=5, top_p=0.8, temperature=0.7, repetition_penalty=1.2, max_length=40,
                   seed=3)
    assert pipe("你好", **options) == pipe("你好", **options)


def test_the_pipeline_reports_generation_speed(pipe):
    pipe(["你好", "hi"], max_new_tokens=6)
    stats = pipe.generation_stats
    assert stats.new_tokens == 12
    assert stats.tokens_per_second > 0


def test_a_prompt_without_room_is_a_clear_error(pipe):
    with pytest.raises(ValueError, match="a prompt of 9 tokens leaves no room for new tokens within 7 "):
        pipe("你好" * 3, max_length=7)


def test_pipeline_loads_a_model_folder(golden_hf_dir, golden_ckpt, golden_hello, tmp_path):
    GLMConfig.from_pretrained(golden_hf_dir).save_pretrained(tmp_path)
    shutil.copy(golden_ckpt, tmp_path)
    for name in ("ice_text.model", "tokenizer_config.json"):
        shutil.copy(golden_hf_dir / name, tmp_path)
    text_generator = pipeline(task="text_generation", model=tmp_path, max_length=29)
    assert text_generator("你好") == [{"text_generation_text": [golden_hello]}]


def test_unknown_task_is_refused(chat_model, tokenizer):
    with pytest.raises(ValueError, match="unknown task 'translation'"):
        pipeline(task="translation", model=chat_model, tokenizer=tokenizer)


def test_a_loaded_model_needs_its_tokenizer(chat_model):
    with pytest.raises(ValueError, match="needs tokenizer="):
        pipeline(model=chat_model)

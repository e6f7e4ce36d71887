"""The predict run: prompts in, generations out, as ``glm chat`` answers a first round; prompt files."""

import json
import re

import pytest

from glm_core.generation_config import GenerationConfig
from glm_train.predict import PromptFileError, predict, read_prompts

PROMPTS = ["你好", "类型#裙*版型#显瘦*风格#休闲", "请介绍一下华为", "hello", "类型#上衣*颜色#白色"]
MAX_NEW_TOKENS = 32


def read_jsonl(path):
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def test_predict_writes_one_line_per_prompt_in_order(chat_model, tokenizer, tmp_path):
    output = tmp_path / "predictions.jsonl"
    rows = predict(chat_model, tokenizer, PROMPTS, output, batch_size=2, max_new_tokens=MAX_NEW_TOKENS,
                   progress=False)
    written = read_jsonl(output)
    assert [row["prompt"] for row in written] == PROMPTS
    assert written == rows
    assert all(row["response"] for row in written)
    assert [path.name for path in tmp_path.iterdir()] == ["predictions.jsonl"]


def test_greedy_responses_are_what_chat_answers_in_a_first_round(chat_model, tokenizer, tmp_path):
    rows = predict(chat_model, tokenizer, PROMPTS, tmp_path / "out.jsonl", batch_size=2,
                   max_new_tokens=MAX_NEW_TOKENS, progress=False)
    answers = [chat_model.chat(tokenizer, prompt, do_sample=False, max_new_tokens=MAX_NEW_TOKENS)[0]
               for prompt in PROMPTS]
    assert [row["response"] for row in rows] == answers


def test_the_generation_config_reaches_every_answer(chat_model, tokenizer, tmp_path):
    penalised = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, repetition_penalty=1.5)
    rows = predict(chat_model, tokenizer, PROMPTS, tmp_path / "out.jsonl", penalised, batch_size=2, progress=False)
    answers = [chat_model.chat(tokenizer, prompt, config=penalised)[0] for prompt in PROMPTS]
    greedy = [chat_model.chat(tokenizer, prompt, do_sample=False, max_new_tokens=MAX_NEW_TOKENS)[0]
              for prompt in PROMPTS]
    assert [row["response"] for row in rows] == answers
    assert answers != greedy  # the penalty changes what the tiny model says


def test_a_config_without_max_new_tokens_or_with_an_unknown_option_is_refused(chat_model, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="need max_new_tokens"):
        predict(chat_model, tokenizer, PROMPTS, tmp_path / "out.jsonl", GenerationConfig(max_length=64),
                progress=False)
    with pytest.raises(TypeError, match=r"unknown generation option\(s\) top_n"):
        predict(chat_model, tokenizer, PROMPTS, tmp_path / "out.jsonl", top_n=5, progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_a_prompt_too_long_for_the_model_is_named(chat_model, tokenizer, tmp_path):
    prompts = ["你好", "长" * 300]
    with pytest.raises(ValueError, match=r"prompt 2 is \d+ tokens long: with max_new_tokens=32 .* seq_length 256"):
        predict(chat_model, tokenizer, prompts, tmp_path / "out.jsonl", max_new_tokens=MAX_NEW_TOKENS,
                progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_predict_creates_a_missing_output_folder(chat_model, tokenizer, tmp_path):
    output = tmp_path / "new" / "out.jsonl"
    predict(chat_model, tokenizer, PROMPTS[:2], output, batch_size=2, max_new_tokens=MAX_NEW_TOKENS, progress=False)
    assert len(read_jsonl(output)) == 2


def test_read_prompts_takes_one_prompt_per_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("\ufeff你好\r\n\n  请介绍一下华为  \nhello".encode())
    assert read_prompts(path) == ["你好", "请介绍一下华为", "hello"]


def test_a_missing_prompt_file_is_named(tmp_path):
    with pytest.raises(PromptFileError, match=re.escape(f"prompt file not found: {tmp_path / 'absent.txt'}")):
        read_prompts(tmp_path / "absent.txt")


@pytest.mark.parametrize("content", [b"", b"\n  \n\t\n"], ids=["empty", "blank lines"])
def test_a_prompt_file_without_prompts_is_refused(tmp_path, content):
    path = tmp_path / "prompts.txt"
    path.write_bytes(content)
    with pytest.raises(PromptFileError, match=re.escape(f"{path} holds no prompt: write one prompt per line")):
        read_prompts(path)


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("你好\n".encode() + "再见".encode("gbk") + b"\n")
    with pytest.raises(PromptFileError) as error:
        read_prompts(path)
    assert str(error.value) == f"{path}, line 2: not UTF-8 text (invalid continuation byte at byte 1)"

"""ADGEN -> MindRecord: the golden records reproduced through the command, and every conversion option."""

import numpy as np
import pytest

from glm_data import DataError, adgen, read_records, records
from glm_data.cli import main

EXAMPLE = {"content": "类型#裤*材质#牛仔布*风格#简约", "summary": "简约的牛仔裤。"}


@pytest.fixture(scope="module")
def golden_adgen(golden_case):
    return golden_case("adgen")


def run_cli(input_file, output_file, vocab_file, *options):
    argv = ["adgen", "--input_file", input_file, "--vocab_file", vocab_file, "--output_file", output_file]
    return main([str(arg) for arg in [*argv, "--no_progress", *options]])


def ids(records, column):
    return [record[column].tolist() for record in records]


def encoder_settings(vocab_file, layout):
    """What adgen_to_mindrecord gives its encoders for ``layout`` records of 32 + 32 tokens."""
    return adgen._EncoderSettings(str(vocab_file), layout, 32, 32, "content", "summary", None, "")


def contents(chunk):
    """What a chunk holds, comparable with ``==``: its records as bytes and strings, and its counts."""
    rows = [
        {name: value if isinstance(value, str) else (value.dtype.str, value.shape, value.tobytes())
         for name, value in record.items()}
        for record in chunk.records()
    ]
    counts = (chunk.longest_prompt, chunk.longest_answer, chunk.prompts_truncated, chunk.answers_truncated)
    return chunk.lines, chunk.skipped, rows, counts


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_command_reproduces_the_golden_records(mode, golden_adgen, write_lines, vocab_file, tmp_path, capsys):
    input_file = write_lines(golden_adgen["examples"])
    output_file = tmp_path / f"{mode}.mindrecord"
    lengths = ["--max_source_length", golden_adgen["max_source_length"]]
    lengths += ["--max_target_length", golden_adgen["max_target_length"]]
    assert run_cli(input_file, output_file, vocab_file, "--mode", mode, *lengths) == 0

    written = list(read_records(output_file))
    expected = golden_adgen[mode]
    assert ids(written, "input_ids") == [record["input_ids"] for record in expected]
    assert ids(written, "labels") == [record["labels"] for record in expected]
    assert f"wrote {len(expected)} {mode} records" in capsys.readouterr().out


def test_eval_records_keep_the_raw_text(golden_adgen, write_lines, convert):
    output_file, _ = convert(write_lines(golden_adgen["examples"]), mode="eval", max_source_length=16)
    written = list(read_records(output_file))
    assert [(r["content"], r["summary"]) for r in written] == [
        (r["content"], r["summary"]) for r in golden_adgen["eval"]
    ]


def test_empty_prompt_and_answer_are_skipped_and_counted(golden_adgen, write_lines, convert):
    _, summary = convert(write_lines(golden_adgen["examples"]))
    assert (summary.lines, summary.written) == (6, 4)
    assert dict(summary.skipped) == {"empty prompt": 1, "empty answer": 1}
    assert "empty answer: 1, empty prompt: 1" in str(summary)


def test_summary_reports_longest_and_truncated_in_tokens(write_lines, convert, tokenizer):
    prompt_tokens = len(tokenizer.encode(EXAMPLE["content"], add_special_tokens=False))
    answer_tokens = len(tokenizer.encode(EXAMPLE["summary"], add_special_tokens=False))
    _, summary = convert(write_lines([EXAMPLE]), max_source_length=prompt_tokens + 1, max_target_length=5)
    assert (summary.longest_prompt, summary.longest_answer) == (prompt_tokens, answer_tokens)
    assert (summary.prompts_truncated, summary.answers_truncated) == (0, 1)


def test_records_are_the_same_with_two_workers(write_lines, convert):
    lines = [{"content": f"类型#裙*颜色#{i}号色", "summary": f"第{i}条裙子。"} for i in range(600)]
    lines[300] = {"content": "", "summary": "跳过"}
    input_file = write_lines(lines)
    one, _ = convert(input_file, "one.mindrecord", workers=1)
    two, summary = convert(input_file, "two.mindrecord", workers=2)
    assert summary.written == 599
    assert ids(read_records(one), "input_ids") == ids(read_records(two), "input_ids")
    assert ids(read_records(one), "labels") == ids(read_records(two), "labels")


@pytest.mark.parametrize("layout", [records.TRAIN, records.EVAL])
def test_worker_processes_encode_chunks_as_this_process_does(layout, write_lines, vocab_file, monkeypatch):
    monkeypatch.setattr(adgen, "BYTES_PER_CHUNK", 400)  # about five lines a chunk
    lines = [{"content": f"类型#裙*颜色#{i}号色", "summary": f"第{i}条裙子。"} for i in range(200)]
    lines[30], lines[31] = {"content": "", "summary": "跳过"}, "not json"
    input_file = write_lines(lines)
    settings = encoder_settings(vocab_file, layout)
    with adgen._LineEncoders(settings, workers=1) as alone:
        expected = [contents(chunk) for chunk in alone.encode(input_file)]
    with adgen._LineEncoders(settings, workers=3) as pool:
        assert pool.started(timeout=60)  # running: the workers get every chunk they have room for
        assert [contents(chunk) for chunk in pool.encode(input_file)] == expected
    assert sum(lines for lines, *_ in expected) == 200 and len(expected) > 20
    assert sum(len(rows) for _, _, rows, _ in expected) == 198


def test_a_worker_that_dies_is_an_error(write_lines, vocab_file):
    input_file = write_lines([EXAMPLE] * 100)
    with adgen._LineEncoders(encoder_settings(vocab_file, records.TRAIN), workers=2) as pool:
        assert pool.started(timeout=60)
        pool.processes[0].kill()
        pool.processes[0].join()
        with pytest.raises(DataError, match=r"a worker process died while encoding .*input.json"):
            list(pool.encode(input_file))


def test_num_splits_writes_that_many_files_read_back_in_order(write_lines, convert, tmp_path):
    lines = [{"content": f"类型#裤*编号#{i}", "summary": f"第{i}条。"} for i in range(40)]
    output_file, summary = convert(write_lines(lines), num_splits=3)
    names = sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("out"))
    assert names == [f"out.mindrecord{i}{suffix}" for i in range(3) for suffix in ("", ".db")]
    single, _ = convert(write_lines(lines), "single.mindrecord")
    assert ids(read_records(output_file), "input_ids") == ids(read_records(single), "input_ids")
    assert summary.output_files[0].endswith("out.mindrecord0")


def test_mindformers_format_fields(write_lines, convert, tokenizer):
    lengths = {"max_source_length": 16, "max_target_length": 24}
    output_file, _ = convert(write_lines([EXAMPLE]), record_format="mindformers", **lengths)
    glm_file, _ = convert(write_lines([EXAMPLE]), "glm.mindrecord", **lengths)
    [record] = read_records(output_file)
    [glm] = read_records(glm_file)
    assert {name: (value.shape, value.dtype) for name, value in record.items()} == {
        "input_ids": ((40,), np.int32),
        "labels": ((40,), np.int32),
        "position_ids": ((2, 40), np.int32),
        "attention_mask": ((1, 40, 40), np.int32),
    }
    assert record["input_ids"].tolist() == glm["input_ids"].tolist()
    assert record["labels"].tolist() == [*glm["labels"].tolist()[1:], -100]
    context = glm["input_ids"].tolist().index(tokenizer.bos_token_id)
    assert record["position_ids"][0].tolist() == list(range(context)) + [context - 1] * (40 - context)
    assert record["position_ids"][1].tolist() == [0] * context + list(range(1, 41 - context))
    assert record["attention_mask"][0, 0].tolist() == [0] * context + [1] * (40 - context)
    assert record["attention_mask"][0, -1].tolist() == [0] * 40


def test_prefix_goes_before_every_prompt(write_lines, convert, tokenizer):
    output_file, _ = convert(write_lines([EXAMPLE]), mode="eval", prefix="广告：")
    [record] = read_records(output_file)
    assert record["input_ids"].tolist() == tokenizer.encode("广告：" + EXAMPLE["content"])
    assert record["content"] == EXAMPLE["content"]


def test_history_builds_chatglm_rounds(write_lines, convert, tokenizer):
    line = {"prompt": "那裙子呢", "response": "裙子也有。", "history": [["有裤子吗", "有的。"]]}
    output_file, _ = convert(
        write_lines([line]), mode="eval", prompt_column="prompt", response_column="response",
        history_column="history", max_source_length=200,
    )
    [record] = read_records(output_file)
    prompt = "[Round 0]\n问：有裤子吗\n答：有的。\n[Round 1]\n问：那裙子呢\n答："
    assert record["input_ids"].tolist() == tokenizer.encode(prompt)
    assert record["labels"].tolist() == tokenizer.encode("裙子也有。")


def test_empty_null_or_absent_history_keeps_the_raw_query(write_lines, convert, tokenizer):
    line = {"content": "你好", "summary": "好"}
    lines = [{**line, "history": []}, {**line, "history": None}, line]
    output_file, _ = convert(write_lines(lines), mode="eval", history_column="history")
    assert ids(read_records(output_file), "input_ids") == [tokenizer.encode("你好")] * 3


def test_blank_lines_are_ignored_and_a_byte_order_mark_accepted(write_lines, convert):
    input_file = write_lines(["\ufeff" + '{"content": "你好", "summary": "好"}', "", "  ", EXAMPLE])
    _, summary = convert(input_file)
    assert (summary.written, sum(summary.skipped.values())) == (2, 0)

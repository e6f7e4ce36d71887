"""The glm-data command line: help for every flag, one-line errors with exit status 2, inspect."""

import pytest
from help_text import arguments_without_description, flags_with_an_entry, listed_flags

from glm_data.cli import main

GOOD = {"content": "类型#裙*颜色#蓝色", "summary": "一条蓝色的裙子。"}


def run(*argv):
    return main([str(arg) for arg in argv])


def help_of(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        run(command, "--help")
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["adgen", "inspect"])
def test_help_explains_every_flag(command, capsys):
    out = help_of(command, capsys)
    assert arguments_without_description(out) == []
    assert listed_flags(out) <= flags_with_an_entry(out)


def test_adgen_flags_are_the_seed_scripts_and_more(capsys):
    assert flags_with_an_entry(help_of("adgen", capsys)) >= {
        "--input_file", "--vocab_file", "--output_file", "--max_source_length", "--max_target_length", "--mode",
        "--format", "--num_splits", "--prefix", "--history_column", "--prompt_column", "--response_column",
        "--overwrite", "--workers", "--strict",
    }


def test_adgen_prints_the_summary(write_lines, vocab_file, tmp_path, capsys):
    input_file = write_lines([GOOD, "{oops"])
    code = run("adgen", "--input_file", input_file, "--vocab_file", vocab_file,
               "--output_file", tmp_path / "out.mindrecord", "--no_progress")
    assert code == 0
    out = capsys.readouterr().out
    assert "wrote 1 train records to" in out
    assert "skipped 1 of 2 lines, malformed JSON: 1" in out
    assert "line 2: malformed JSON" in out


def test_progress_bar_shows_examples_per_second(write_lines, vocab_file, tmp_path, capsys):
    run("adgen", "--input_file", write_lines([GOOD]), "--vocab_file", vocab_file, "--output_file", tmp_path / "o")
    assert "ex/s" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--vocab_file", "missing.model"], "vocab file not found: missing.model"),
        (["--max_source_length", "2"], "max_source_length must be between 3"),
        (["--max_target_length", str(10**12)], "max_target_length must be between 3 (two special tokens"),
        (["--strict", "--input_file", "BAD"], "line 2: malformed JSON"),
        (["--output_file", "GOOD", "--overwrite"], "would replace"),
        (["--input_file", "."], "is a directory"),
    ],
)
def test_errors_are_one_line_with_exit_status_2(extra, message, write_lines, vocab_file, tmp_path, capsys):
    good = write_lines([GOOD])
    bad = write_lines([GOOD, "{oops"], name="bad.json")
    argv = ["adgen", "--input_file", good, "--vocab_file", vocab_file, "--output_file", tmp_path / "out.mindrecord"]
    argv += [{"GOOD": good, "BAD": bad}.get(arg, arg) for arg in extra]
    assert run(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("glm-data adgen: error: ")
    assert message in err[-1]
    assert not any("Traceback" in line for line in err)


def test_usage_errors_are_one_line_with_exit_status_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run("adgen", "--input_file", "x.json")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "glm-data adgen: error: the following arguments are required: --vocab_file, --output_file (see --help)"
    ]


def test_inspect_prints_schema_count_and_decoded_records(write_lines, convert, vocab_file, capsys):
    output_file, _ = convert(write_lines([GOOD, GOOD, GOOD]), max_source_length=16, max_target_length=24)
    assert run("inspect", output_file, "--vocab_file", vocab_file, "--num_records", 2) == 0
    out = capsys.readouterr().out
    assert "layout: train" in out
    assert "records: 3" in out
    assert "input_ids: int32[40]" in out and "labels: int32[40]" in out
    assert out.count("record ") == 2
    assert "类型#裙*颜色#蓝色[gMASK]<sop> 一条蓝色的裙子。<eop>" in out


def test_inspect_without_vocab_shows_ids(write_lines, convert, capsys):
    output_file, _ = convert(write_lines([GOOD]), mode="eval")
    assert run("inspect", output_file) == 0
    out = capsys.readouterr().out
    assert "layout: eval" in out
    assert "content: '类型#裙*颜色#蓝色'" in out
    assert "input_ids: [" in out


def test_inspect_of_a_missing_file_is_an_error(tmp_path, capsys):
    assert run("inspect", tmp_path / "none.mindrecord") == 2
    assert "MindRecord file not found" in capsys.readouterr().err


def test_inspect_of_a_negative_number_of_records_is_an_error(write_lines, convert, capsys):
    output_file, _ = convert(write_lines([GOOD]))
    assert run("inspect", output_file, "--num_records", -1) == 2
    assert capsys.readouterr().err.splitlines() == ["glm-data inspect: error: num_records must be at least 0, got -1"]

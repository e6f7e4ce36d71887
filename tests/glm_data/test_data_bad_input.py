"""Bad input: each case reported with its line number, skipped or (with strict) fatal; bad settings refused;
nothing left at the output path by an error or an interrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from glm_data import DataError, adgen, adgen_to_mindrecord, read_records
from glm_data.sample.generate import generate_examples, write_jsonl

GOOD = {"content": "类型#裙", "summary": "一条裙子。"}


def outputs(directory, name="out.mindrecord"):
    return sorted(path.name for path in directory.iterdir() if path.name.startswith(name))


def leftovers(directory):
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


def writing_begun(directory):
    """Whether the hidden work directory beside the output holds MindRecord files yet."""
    return any(any((directory / name).iterdir()) for name in leftovers(directory))


@pytest.mark.parametrize(
    ("bad_line", "reason", "detail"),
    [
        ('{"content": "类型#裙", "summary": ', "malformed JSON", "line 2: malformed JSON: Expecting value"),
        ('["类型#裙", "一条裙子。"]', "malformed JSON", "line 2: expected a JSON object, got list"),
        ('{"content": "类型#裙"}', "missing column", "line 2: missing column 'summary'"),
        ('{"content": 7, "summary": "裙子"}', "invalid value", "line 2: column 'content' must be a string, not int"),
        ('{"content": "类型#裙", "summary": "a \\ud800 b"}', "invalid value",
         "line 2: column 'summary' holds a lone surrogate \\ud800, not Unicode"),
    ],
)
def test_bad_line_is_skipped_and_listed_with_its_number(bad_line, reason, detail, write_lines, convert):
    output_file, summary = convert(write_lines([GOOD, bad_line, GOOD]))
    assert (summary.written, dict(summary.skipped)) == (2, {reason: 1})
    assert summary.problems[0].startswith(detail)
    assert detail in str(summary)
    assert len(list(read_records(output_file))) == 2


@pytest.mark.parametrize("workers", [1, 2])
def test_lines_are_numbered_across_chunks(workers, write_lines, convert, monkeypatch):
    monkeypatch.setattr(adgen, "BYTES_PER_CHUNK", 100)  # a chunk every two lines or so
    lines = [GOOD] * 30
    lines[6], lines[17], lines[29] = "not json", "", '{"content": "类型#裙"}'  # line 18 blank: not a bad line
    _, summary = convert(write_lines(lines), workers=workers)
    assert summary.problems == [
        "line 7: malformed JSON: Expecting value at column 1",
        "line 30: missing column 'summary' (the line has ['content'])",
    ]
    assert (summary.lines, summary.written) == (30, 27)


@pytest.mark.parametrize(
    "bad_line", ['{"content": "类型#裙", "summary": ', '{"content": "类型#裙"}', '{"content": [], "summary": "x"}']
)
def test_strict_stops_at_the_first_bad_line(bad_line, write_lines, convert, tmp_path):
    with pytest.raises(DataError, match=r"line 3: .*\(stopped by --strict\)"):
        convert(write_lines([GOOD, GOOD, bad_line, GOOD]), strict=True)
    assert outputs(tmp_path) == [] and leftovers(tmp_path) == []


def test_strict_still_skips_empty_examples_as_the_reference_does(write_lines, convert):
    _, summary = convert(write_lines([GOOD, {"content": "", "summary": "x"}]), strict=True)
    assert (summary.written, dict(summary.skipped)) == (1, {"empty prompt": 1})


def test_history_that_is_not_a_list_of_pairs_is_invalid(write_lines, convert):
    line = {**GOOD, "history": [["only a query"]]}
    _, summary = convert(write_lines([GOOD, line]), history_column="history")
    assert dict(summary.skipped) == {"invalid value": 1}
    assert "line 2: column 'history' must be a list of [query, response] pairs" in summary.problems[0]


def test_more_bad_lines_than_listed_are_counted(write_lines, convert):
    _, summary = convert(write_lines([GOOD] + ["not json"] * 12))
    assert summary.skipped["malformed JSON"] == 12
    assert len(summary.problems) == 10
    assert "… and 2 more bad lines" in str(summary)


def test_non_utf8_input_is_an_error_with_its_line(write_lines, convert, tmp_path):
    input_file = write_lines([GOOD, '{"content": "类型#裙", "summary": "裙"}'.encode("gbk")])
    with pytest.raises(DataError, match=r"line 2: not UTF-8: byte 0xc0 .*convert the file to UTF-8"):
        convert(input_file)
    assert outputs(tmp_path) == [] and leftovers(tmp_path) == []


def test_no_example_left_is_an_error(write_lines, convert, tmp_path):
    with pytest.raises(DataError, match=r"no example to write .* 2 lines, skipped empty answer: 1, malformed JSON: 1"):
        convert(write_lines([{"content": "x", "summary": ""}, "{"]))
    assert outputs(tmp_path) == []


def test_missing_vocab_file_is_an_error(write_lines, tmp_path):
    with pytest.raises(DataError, match=r"vocab file not found: .*nowhere.model"):
        adgen_to_mindrecord(write_lines([GOOD]), tmp_path / "nowhere.model", tmp_path / "out.mindrecord")


def test_vocab_file_that_is_no_sentencepiece_model_is_an_error(write_lines, tmp_path):
    not_a_model = tmp_path / "ice_text.model"
    not_a_model.write_bytes(b"not a model")
    with pytest.raises(DataError, match=r"cannot load vocab file .*ice_text.model"):
        adgen_to_mindrecord(write_lines([GOOD]), not_a_model, tmp_path / "out.mindrecord")


def test_missing_input_file_is_an_error(vocab_file, tmp_path):
    with pytest.raises(DataError, match=r"input file not found: .*absent.json"):
        adgen_to_mindrecord(tmp_path / "absent.json", vocab_file, tmp_path / "out.mindrecord")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_source_length": 2}, "max_source_length must be at least 3"),
        ({"max_target_length": 0}, "max_target_length must be at least 3"),
        ({"mode": "test"}, "unknown mode 'test'"),
        ({"record_format": "hf"}, "unknown format 'hf'"),
        ({"record_format": "mindformers", "mode": "eval"}, "mindformers format holds training records only"),
        ({"num_splits": 0}, "num_splits must be between 1 and 1000"),
        ({"workers": 0}, "workers must be at least 1"),
    ],
)
def test_bad_settings_are_errors(options, message, write_lines, convert, tmp_path):
    with pytest.raises(DataError, match=message):
        convert(write_lines([GOOD]), **options)
    assert outputs(tmp_path) == []


def test_existing_output_is_refused_without_overwrite(write_lines, convert, tmp_path):
    output_file, _ = convert(write_lines([GOOD]))
    before = output_file.read_bytes()
    with pytest.raises(DataError, match=r"output already exists: .*out.mindrecord .*--overwrite"):
        convert(write_lines([GOOD, GOOD]))
    assert output_file.read_bytes() == before


def test_overwrite_replaces_the_output(write_lines, convert):
    convert(write_lines([GOOD]))
    output_file, _ = convert(write_lines([GOOD, GOOD]), overwrite=True)
    assert len(list(read_records(output_file))) == 2


def test_an_existing_split_file_is_refused_too(write_lines, convert, tmp_path):
    (tmp_path / "out.mindrecord1.db").write_bytes(b"")
    with pytest.raises(DataError, match=r"output already exists: .*out.mindrecord1"):
        convert(write_lines([GOOD]), num_splits=2)


@pytest.fixture(scope="module")
def large_input(tmp_path_factory):
    """Enough lines (a few seconds of work) for a run to be interrupted mid-way."""
    path = tmp_path_factory.mktemp("large") / "adgen.json"
    write_jsonl(path, generate_examples(60000, seed=3))
    return path


@pytest.mark.parametrize(
    ("sig", "whole_group"),
    [
        pytest.param(signal.SIGTERM, True, id="SIGTERM-to-the-group"),  # a job scheduler
        pytest.param(signal.SIGTERM, False, id="SIGTERM"),  # kill PID
        pytest.param(signal.SIGINT, True, id="Ctrl-C"),
        pytest.param(signal.SIGKILL, False, id="SIGKILL"),  # the workers must then stop by themselves
    ],
)
def test_interrupted_run_leaves_no_output(sig, whole_group, large_input, vocab_file, tmp_path):
    command = [sys.executable, "-m", "glm_data.cli", "adgen", "--input_file", large_input, "--vocab_file", vocab_file]
    command += ["--output_file", tmp_path / "out.mindrecord", "--workers", "2", "--no_progress"]
    process = subprocess.Popen(
        [str(arg) for arg in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not writing_begun(tmp_path):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    if whole_group:
        os.killpg(process.pid, sig)
    else:
        process.send_signal(sig)
    # communicate() returns once every process holding the pipes, workers included, has exited.
    _, stderr = process.communicate(timeout=60)

    assert process.returncode != 0
    assert outputs(tmp_path) == []
    if sig == signal.SIGKILL:  # no cleanup can run: only the hidden work directory remains
        assert all(name.startswith(".out.mindrecord.") for name in leftovers(tmp_path))
    else:
        assert leftovers(tmp_path) == []
        assert b"Traceback" not in stderr


def test_json_lines_written_by_json_dumps_with_ascii_escapes_are_read(write_lines, convert):
    input_file = write_lines([json.dumps(GOOD)])  # "\u7c7b..." escapes
    _, summary = convert(input_file)
    assert summary.written == 1

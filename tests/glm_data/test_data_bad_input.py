"""Bad input: each case reported with its line number, skipped or (with strict) fatal; bad settings refused;
nothing left at the output path by an error or an interrupted run."""

import json
import os
import re
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
        ({"max_source_length": 2}, r"max_source_length must be between 3 .* and 32768, got 2"),
        ({"max_target_length": 0}, r"max_target_length must be between 3 .* and 32768, got 0"),
        ({"max_source_length": 10**12}, r"max_source_length must be between 3 .* and 32768, got 1000000000000"),
        ({"max_target_length": -5}, r"max_target_length must be between 3 .* and 32768, got -5"),
        (
            {"record_format": "mindformers", "max_source_length": 2048, "max_target_length": 2048},
            r"a mindformers record of 4096 tokens .* takes up to 64 MB, more than a MindRecord page \(32 MB\)",
        ),
        ({"mode": "test"}, "unknown mode 'test'"),
        ({"record_format": "hf"}, "unknown format 'hf'"),
        ({"record_format": "mindformers", "mode": "eval"}, "mindformers format holds training records only"),
        ({"num_splits": 0}, "num_splits must be between 1 and 1000, got 0"),
        ({"num_splits": 10**6}, "num_splits must be between 1 and 1000, got 1000000"),
        ({"workers": 0}, r"workers must be between 1 and \d+ \(4 per CPU core\), got 0"),
        ({"workers": 10**6}, r"workers must be between 1 and \d+ \(4 per CPU core\), got 1000000"),
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


def test_overwrite_with_fewer_splits_leaves_none_of_the_earlier_files(write_lines, convert, tmp_path):
    lines = [{"content": f"类型#裤*编号#{i}", "summary": f"第{i}条。"} for i in range(30)]
    convert(write_lines(lines), num_splits=3)
    output_file, summary = convert(write_lines(lines[:4]), num_splits=2, overwrite=True)
    assert outputs(tmp_path) == ["out.mindrecord0", "out.mindrecord0.db", "out.mindrecord1", "out.mindrecord1.db"]
    assert summary.written == len(list(read_records(output_file))) == 4


def test_an_earlier_output_split_otherwise_is_refused_without_overwrite(write_lines, convert, tmp_path):
    convert(write_lines([GOOD, GOOD]), num_splits=2)
    with pytest.raises(DataError, match=r"output already exists: .*out.mindrecord0 .*--overwrite"):
        convert(write_lines([GOOD]))
    assert outputs(tmp_path) == ["out.mindrecord0", "out.mindrecord0.db", "out.mindrecord1", "out.mindrecord1.db"]


@pytest.mark.parametrize("input_name", ["out.mindrecord", "out.mindrecord1", "out.mindrecord.db"])
def test_an_output_that_would_replace_the_input_is_refused(input_name, write_lines, convert, tmp_path):
    input_file = write_lines([GOOD], name=input_name)
    before = input_file.read_bytes()
    with pytest.raises(DataError, match=rf"output .*out.mindrecord would replace .*{input_name}, an input of this run"):
        convert(input_file, overwrite=True)
    assert input_file.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_an_output_that_would_replace_the_vocab_file_is_refused(write_lines, vocab_file, tmp_path):
    with pytest.raises(DataError, match=r"output .*ice_text.model would replace .*ice_text.model"):
        adgen_to_mindrecord(write_lines([GOOD]), vocab_file, vocab_file, overwrite=True)


def test_an_input_that_is_a_directory_is_an_error(convert, tmp_path):
    with pytest.raises(DataError, match=r"input file .* is a directory"):
        convert(tmp_path)


def test_an_input_that_cannot_be_read_is_an_error(convert, tmp_path):
    # Reading /proc/self/mem from its start fails with EIO, for any user.
    with pytest.raises(DataError, match=r"cannot read input file /proc/self/mem: Input/output error"):
        convert("/proc/self/mem")
    assert outputs(tmp_path) == [] and leftovers(tmp_path) == []


def cli_command(input_file, vocab_file, output_file, *options):
    command = [sys.executable, "-m", "glm_data.cli", "adgen", "--input_file", input_file, "--vocab_file", vocab_file]
    return [str(arg) for arg in [*command, "--output_file", output_file, "--no_progress", *options]]


def test_input_from_stdin(write_lines, vocab_file, tmp_path):
    lines = write_lines([GOOD, GOOD, GOOD]).read_bytes()
    result = subprocess.run(
        cli_command("/dev/stdin", vocab_file, tmp_path / "out.mindrecord"), input=lines, capture_output=True
    )
    assert result.returncode == 0, result.stderr
    assert len(list(read_records(tmp_path / "out.mindrecord"))) == 3


def test_closed_stdin_is_a_one_line_error(vocab_file, tmp_path):
    result = subprocess.run(
        cli_command("/dev/stdin", vocab_file, tmp_path / "out.mindrecord"), capture_output=True,
        preexec_fn=lambda: os.close(0),
    )
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == ["glm-data adgen: error: input file not found: /dev/stdin"]


@pytest.mark.parametrize("name", ["out&1.mindrecord", " out.mindrecord"])
def test_an_output_name_mindrecord_refuses_is_an_error(name, write_lines, convert, tmp_path):
    with pytest.raises(DataError, match=r"cannot write .*: \[ParamValueError\]: Invalid parameter value. File name"):
        convert(write_lines([GOOD]), name)
    assert leftovers(tmp_path) == []


def test_a_full_disk_is_a_one_line_error_and_leaves_nothing(large_input, vocab_file, tmp_path):
    # The output folder is a 16 MB tmpfs, mounted in a mount namespace of the command's own.
    mounted = tmp_path / "small_disk"
    mounted.mkdir()
    unshare = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--mount", "--map-root-user"]
    probe = subprocess.run([*unshare, "mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mounted)])
    if probe.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (unshare --mount refused)")
    command = cli_command(large_input, vocab_file, mounted / "out.mindrecord")
    script = f'mount -t tmpfs -o size=16m tmpfs "$1" && shift && "$@"; status=$?; ls -A "{mounted}"; exit $status'
    result = subprocess.run([*unshare, "sh", "-c", script, "sh", str(mounted), *command], capture_output=True)
    assert result.returncode == 2
    [error] = result.stderr.decode().splitlines()
    assert re.fullmatch(
        rf"glm-data adgen: error: cannot write {mounted}/out.mindrecord: No free disk to be used while writing"
        r" mindrecord files, available free disk size: \d+", error
    )
    assert result.stdout == b""  # what `ls -A` found in the full folder: nothing


def test_an_interrupted_overwrite_keeps_the_earlier_output(write_lines, large_input, vocab_file, tmp_path):
    earlier = write_lines([GOOD, GOOD])
    subprocess.run(cli_command(earlier, vocab_file, tmp_path / "out.mindrecord", "--num_splits", "2"), check=True)
    before = {name: (tmp_path / name).read_bytes() for name in outputs(tmp_path)}
    process = subprocess.Popen(
        cli_command(large_input, vocab_file, tmp_path / "out.mindrecord", "--overwrite"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not writing_begun(tmp_path):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert stderr.decode().splitlines() == ["glm-data adgen: terminated"]
    assert {name: (tmp_path / name).read_bytes() for name in outputs(tmp_path)} == before
    assert leftovers(tmp_path) == []

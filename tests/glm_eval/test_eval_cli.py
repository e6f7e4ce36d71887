"""The glm-eval command line: four metrics on stdout, a JSON report, one-line errors with exit code 2, and
bad input and signals that lose nothing (the installed console script, in new processes)."""

import json
import os
import signal
import subprocess
import sysconfig
from pathlib import Path

import pytest

from glm_eval.cli import main

GOLDEN_STDOUT = "bleu-4: 43.1512\nrouge-1: 76.1905\nrouge-2: 54.2857\nrouge-l: 74.0741\n"


@pytest.fixture
def golden_files(golden_case, tmp_path):
    """The first golden metrics case as a predictions and a references text file."""
    case = golden_case("metrics")[0]
    predictions = tmp_path / "predictions.txt"
    references = tmp_path / "references.txt"
    predictions.write_text("\n".join(case["preds"]) + "\n", encoding="utf-8")
    references.write_text("\n".join(case["labels"]) + "\n", encoding="utf-8")
    return predictions, references


def run(*argv):
    return main([str(arg) for arg in argv])


def test_score_prints_the_four_metrics_one_per_line(golden_files, capsys):
    predictions, references = golden_files
    assert run("score", "--predictions", predictions, "--references", references) == 0
    assert capsys.readouterr().out == GOLDEN_STDOUT


def test_two_workers_print_the_same_metrics(golden_files, capsys):
    predictions, references = golden_files
    assert run("score", "--predictions", predictions, "--references", references, "--workers", "2") == 0
    assert capsys.readouterr().out == GOLDEN_STDOUT


def test_output_writes_a_json_report_and_no_temporary_file(golden_files, tmp_path, capsys):
    predictions, references = golden_files
    report_path = tmp_path / "reports" / "scores.json"
    report_path.parent.mkdir()
    report_path.write_text("stale", encoding="utf-8")
    run("score", "--predictions", predictions, "--references", references, "--output", report_path)
    assert json.loads(report_path.read_text(encoding="utf-8")) == {
        "predictions": str(predictions),
        "references": str(references),
        "bleu-4": 43.1512,
        "rouge-1": 76.1905,
        "rouge-2": 54.2857,
        "rouge-l": 74.0741,
        "n": 2,
        "empty_predictions": 0,
    }
    assert list(report_path.parent.iterdir()) == [report_path]


def test_blank_pairs_are_reported_on_stderr(tmp_path, capsys):
    predictions = tmp_path / "p.txt"
    references = tmp_path / "r.txt"
    predictions.write_text("简约的设计\n\n", encoding="utf-8")
    references.write_text("简约的设计\n有参考\n", encoding="utf-8")
    assert run("score", "--predictions", predictions, "--references", references) == 0
    assert capsys.readouterr().err == "1 of 2 pairs have an empty prediction or reference and scored 0\n"


def bad_input(tmp_path, name):
    """Arguments of a `score` run that must fail, and a fragment its error line must contain."""
    good = tmp_path / "good.txt"
    good.write_text("a\nb\n", encoding="utf-8")
    short = tmp_path / "short.txt"
    short.write_text("a\n", encoding="utf-8")
    not_json = tmp_path / "not_json.jsonl"
    not_json.write_text('{"prediction": "a"}\nnot json\n', encoding="utf-8")
    no_field = tmp_path / "no_field.jsonl"
    no_field.write_text('{"prediction": "a"}\n{"text": "b"}\n', encoding="utf-8")
    cases = {
        "different lengths": (["--predictions", good, "--references", short], "line 2 of"),
        "not json": (["--predictions", not_json, "--references", good], "not_json.jsonl, line 2: not JSON"),
        "missing field": (["--predictions", no_field, "--references", good], "line 2: no 'prediction' field"),
        "missing file": (["--predictions", tmp_path / "absent.txt", "--references", good], "absent.txt"),
        "missing report folder": (
            ["--predictions", good, "--references", good, "--output", tmp_path / "absent" / "r.json"],
            "folder for --output does not exist",
        ),
    }
    return cases[name]


@pytest.mark.parametrize(
    "name", ["different lengths", "not json", "missing field", "missing file", "missing report folder"]
)
def test_bad_input_is_one_error_line_and_exit_code_2(tmp_path, capsys, name):
    arguments, fragment = bad_input(tmp_path, name)
    assert run("score", *arguments) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("glm-eval: error: ")
    assert captured.err.count("\n") == 1
    assert fragment in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("workers", ["0", "two"])
def test_bad_worker_count_exits_with_code_2(golden_files, capsys, workers):
    predictions, references = golden_files
    with pytest.raises(SystemExit) as exit_info:
        run("score", "--predictions", predictions, "--references", references, "--workers", workers)
    assert exit_info.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--predictions", "--references", "--prediction-field", "--reference-field", "--output",
                 "--workers", "--quiet"):
        assert flag in help_text


def test_console_script_is_installed(golden_files):
    predictions, references = golden_files
    script = Path(sysconfig.get_path("scripts")) / "glm-eval"
    completed = subprocess.run(
        [script, "score", "--predictions", predictions, "--references", references],
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout == GOLDEN_STDOUT


def test_named_fields_read_ptunings_generated_predictions(golden_case, tmp_path, capsys):
    """ptuning writes JSON lines {"labels", "predict"} into a .txt file: naming the fields reads it."""
    case = golden_case("metrics")[0]
    generated = tmp_path / "generated_predictions.txt"
    generated.write_text("".join(json.dumps({"labels": label, "predict": prediction}, ensure_ascii=False) + "\n"
                                 for prediction, label in zip(case["preds"], case["labels"])), encoding="utf-8")
    argv = ["score", "--predictions", generated, "--references", generated]
    assert run(*argv, "--prediction-field", "predict", "--reference-field", "labels") == 0
    assert capsys.readouterr().out == GOLDEN_STDOUT


def test_a_missing_named_field_is_an_error_with_its_line(golden_files, tmp_path, capsys):
    predictions, _ = golden_files
    references = tmp_path / "dev.json"
    references.write_text('{"summary": "a"}\n{"content": "b"}\n', encoding="utf-8")
    assert run("score", "--predictions", predictions, "--references", references,
               "--reference-field", "summary") == 2
    error = capsys.readouterr().err
    assert "dev.json" in error and "line 2" in error and "summary" in error


GLM_EVAL = Path(sysconfig.get_path("scripts")) / "glm-eval"


def run_command(*argv, **options):
    """The installed ``glm-eval`` in a new process: its exit status, stdout and stderr."""
    completed = subprocess.run([GLM_EVAL, *map(str, argv)], capture_output=True, text=True, **options)
    return completed.returncode, completed.stdout, completed.stderr


def assert_one_error_line(error, message):
    assert error == f"glm-eval: error: {message}\n"


@pytest.mark.parametrize("input_flag", ["--predictions", "--references"])
def test_output_that_is_an_input_is_refused_and_the_input_kept(golden_files, input_flag):
    predictions, references = golden_files
    target = predictions if input_flag == "--predictions" else references
    before = target.read_bytes()
    status, output, error = run_command("score", "--predictions", predictions, "--references", references,
                                        "--output", target)
    assert (status, output) == (2, "")
    assert_one_error_line(error, f"--output {target} is the {input_flag} file, which the report would replace: "
                                 "name another file")
    assert target.read_bytes() == before


def test_output_through_a_link_to_an_input_is_refused(golden_files, tmp_path):
    predictions, references = golden_files
    link = tmp_path / "report.json"
    link.symlink_to(references)
    status, _, error = run_command("score", "--predictions", predictions, "--references", references,
                                   "--output", link)
    assert status == 2 and "is the --references file" in error
    assert link.is_symlink() and references.read_text(encoding="utf-8").count("\n") == 2


@pytest.mark.parametrize(("output", "message"), [
    ("{tmp}", "--output {tmp} is not a regular file (a folder or a device): name a file"),
    ("/dev/null", "--output /dev/null is not a regular file (a folder or a device): name a file"),
    ("/proc/report.json", "--output /proc/report.json: cannot create a file in /proc ("),
    ("{tmp}/absent/report.json", "folder for --output does not exist: {tmp}/absent"),
], ids=["folder", "device", "unwritable folder", "missing folder"])
def test_an_unusable_output_is_refused_before_scoring(golden_files, tmp_path, output, message):
    predictions, references = golden_files
    output = output.replace("{tmp}", str(tmp_path))
    status, stdout, error = run_command("score", "--predictions", predictions, "--references", references,
                                        "--output", output)
    assert (status, stdout) == (2, "")  # no scores printed: it stopped before scoring
    assert error.startswith(f"glm-eval: error: {message.replace('{tmp}', str(tmp_path))}")
    assert error.count("\n") == 1


def test_a_write_that_fails_partway_keeps_the_previous_report(golden_files, tmp_path):
    """A full disk, as a file-size limit makes it: the write fails once the report passes 64 bytes."""
    import resource

    predictions, references = golden_files
    report = tmp_path / "report.json"
    argv = ["score", "--predictions", predictions, "--references", references, "--output", report]
    assert run_command(*argv)[0] == 0
    previous = report.read_text(encoding="utf-8")

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    status, output, error = run_command(*argv, "--quiet", preexec_fn=limit_file_size)
    assert (status, output) == (1, GOLDEN_STDOUT)
    assert_one_error_line(error, f"cannot write the report {report} (File too large); it is left as it was")
    assert report.read_text(encoding="utf-8") == previous
    assert sorted(path.name for path in tmp_path.iterdir()) == ["predictions.txt", "references.txt", "report.json"]


def test_an_absurd_worker_count_is_refused_in_one_line(golden_files):
    predictions, references = golden_files
    status, _, error = run_command("score", "--predictions", predictions, "--references", references,
                                   "--workers", "100000")
    assert status == 2
    assert error.startswith("glm-eval score: error: argument --workers: at most ")
    assert error.endswith(" (the CPUs this process may use), got 100000 (see --help)\n")


def test_a_usage_error_is_one_line(golden_files):
    predictions, _ = golden_files
    status, _, error = run_command("score", "--predictions", predictions)
    assert status == 2
    assert error == "glm-eval score: error: the following arguments are required: --references (see --help)\n"


def test_standard_input_that_is_closed_or_not_text_is_one_error_line(golden_files):
    _, references = golden_files
    closed = subprocess.run(["sh", "-c", f'exec "{GLM_EVAL}" score --predictions /dev/stdin --references '
                                         f'"{references}" <&-'], capture_output=True, text=True)
    assert closed.returncode == 2
    assert_one_error_line(closed.stderr, "No such file or directory: /dev/stdin")
    status, _, error = run_command("score", "--predictions", "/dev/stdin", "--references", references,
                                   input="caf\udce9\n", errors="surrogateescape")
    assert status == 2
    assert_one_error_line(error, "/dev/stdin, line 1: not UTF-8 text (invalid continuation byte)")


@pytest.fixture
def long_run(tmp_path):
    """Inputs that take seconds to score (60,000 pairs), and an earlier report beside them."""
    words = ["简约", "设计", "上衣", "宽松", "线条", "图案", "时尚", "颜色", "天气", "很好"]
    predictions = tmp_path / "predictions.txt"
    references = tmp_path / "references.txt"
    predictions.write_text("".join(words[i % 7] + words[i % 10] * 3 + words[i % 3] + "\n" for i in range(60_000)),
                           encoding="utf-8")
    references.write_text("".join(words[i % 10] + words[i % 4] * 2 + words[i % 7] + "\n" for i in range(60_000)),
                          encoding="utf-8")
    report = tmp_path / "report.json"
    report.write_text('{"earlier": true}\n', encoding="utf-8")
    return predictions, references, report


@pytest.mark.parametrize(("signal_number", "status", "said"), [
    (signal.SIGINT, 130, "glm-eval: interrupted\n"),
    (signal.SIGTERM, 143, "glm-eval: terminated\n"),
])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_signal_to_the_process_group_mid_run_is_one_line_and_keeps_the_report(
        long_run, tmp_path, signal_number, status, said, workers):
    """Ctrl-C reaches every process of the terminal's group, and a job scheduler's SIGTERM often does too:
    the worker processes must leave the reporting to the main one."""
    predictions, references, report = long_run
    command = subprocess.Popen([GLM_EVAL, "score", "--predictions", predictions, "--references", references,
                                "--output", report, "--workers", workers], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    command.stderr.read(1)  # the progress bar, which appears two seconds into the scoring
    os.killpg(command.pid, signal_number)
    output, error = command.communicate(timeout=60)
    assert (command.returncode, output) == (status, "")
    assert error.endswith(said) and "Traceback" not in error  # after the progress bar
    assert report.read_text(encoding="utf-8") == '{"earlier": true}\n'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["predictions.txt", "references.txt", "report.json"]

"""The glm-eval command line: four metrics on stdout, a JSON report, one-line errors with exit code 2."""

import json
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

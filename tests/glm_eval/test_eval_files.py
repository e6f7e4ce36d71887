"""Reading predictions and references from files; score_file; each bad input a clear error."""

import json

import pytest

import glm_eval
from glm_eval.files import InputFileError, read_pairs

METRICS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_score_file_reproduces_golden_metrics(golden_case, tmp_path):
    case = golden_case("metrics")[0]
    records = [{"prediction": p, "reference": r} for p, r in zip(case["preds"], case["labels"])]
    result = glm_eval.score_file(write_jsonl(tmp_path / "pairs.jsonl", records))
    for metric in METRICS:
        assert result[metric] == pytest.approx(case["scores"][metric], abs=5e-5), metric
    assert result["n"] == 2


def test_text_files_give_one_text_per_line(tmp_path):
    predictions = tmp_path / "p.txt"
    references = tmp_path / "r.txt"
    predictions.write_bytes("\ufeff简约的设计\r\n\r\n a b c \n".encode())
    references.write_text("简约而不简单的设计\n有参考\na b c d", encoding="utf-8")
    assert read_pairs(predictions, references) == (
        ["简约的设计", "", " a b c "],
        ["简约而不简单的设计", "有参考", "a b c d"],
    )


def test_jsonl_predictions_and_text_references_can_be_mixed(tmp_path):
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"prediction": "简约的设计", "id": 1}])
    references = tmp_path / "r.txt"
    references.write_text("简约而不简单的设计\n", encoding="utf-8")
    assert read_pairs(predictions, references) == (["简约的设计"], ["简约而不简单的设计"])


def test_one_jsonl_file_can_hold_predictions_and_references(tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prediction": "a", "reference": "b"}])
    assert read_pairs(pairs, pairs) == (["a"], ["b"])


def test_files_of_different_lengths_name_the_first_unmatched_line(tmp_path):
    predictions = tmp_path / "p.txt"
    references = tmp_path / "r.txt"
    predictions.write_text("a\nb\nc\n", encoding="utf-8")
    references.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(
        InputFileError, match=r"has 3 lines but .* has 2: line 3 of .*p\.txt has no counterpart"
    ):
        read_pairs(predictions, references)


def test_line_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prediction": "a", "reference": "b"}\n{"prediction": "a",\n', encoding="utf-8")
    with pytest.raises(InputFileError, match=r"pairs\.jsonl, line 2: not JSON"):
        glm_eval.score_file(path)


def test_missing_field_is_named_with_its_line(tmp_path):
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"prediction": "a", "reference": "b"}, {"prediction": "a", "labels": "b"}],
    )
    with pytest.raises(
        InputFileError, match=r"line 2: no 'reference' field \(its fields: 'prediction', 'labels'\)"
    ):
        glm_eval.score_file(path)


def test_missing_field_in_a_predictions_file_is_named_with_its_line(tmp_path):
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"prediction": "a"}, {"predict": "b"}])
    references = tmp_path / "r.txt"
    references.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"p\.jsonl, line 2: no 'prediction' field"):
        read_pairs(predictions, references)


def test_record_that_is_not_an_object_is_rejected(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('["a", "b"]\n', encoding="utf-8")
    with pytest.raises(InputFileError, match=r"line 1: expected a JSON object .*, got a list"):
        glm_eval.score_file(path)


def test_field_that_is_not_a_string_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prediction": None, "reference": "b"}])
    with pytest.raises(InputFileError, match="line 1: 'prediction' must be a string, got NoneType"):
        glm_eval.score_file(path)


def test_line_that_is_not_utf8_is_named(tmp_path):
    predictions = tmp_path / "p.txt"
    predictions.write_bytes("简约\n".encode() + "设计\n".encode("gbk"))
    with pytest.raises(InputFileError, match=r"p\.txt, line 2: not UTF-8"):
        read_pairs(predictions, predictions)


def test_empty_file_is_rejected(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(InputFileError, match="is empty: nothing to score"):
        glm_eval.score_file(path)

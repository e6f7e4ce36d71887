"""The eval run end to end: evaluation records from the ADGEN sample, the golden model, glm-eval's scores."""

import json
import re
from dataclasses import asdict

import numpy as np
import pytest

from glm_core import generate
from glm_data import DataError, adgen_to_mindrecord
from glm_eval import score
from glm_train.evaluate import METRICS_NAME, PREDICTIONS_NAME, evaluate, read_eval_records
from glm_train.predict import RUN_GENERATION, atomic_text_file

MAX_TARGET_LENGTH = 32  # tokens of an answer, as the records are made and as eval generates
EXAMPLES = 16  # records evaluated: with batches of 6, the last batch holds 4
METRICS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")


@pytest.fixture(scope="session")
def eval_file(adgen_dev_file, golden_hf_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "dev.mindrecord"
    adgen_to_mindrecord(adgen_dev_file, golden_hf_dir / "ice_text.model", path, mode="eval",
                        max_source_length=64, max_target_length=MAX_TARGET_LENGTH)
    return path


@pytest.fixture(scope="module")
def batched_run(chat_model, tokenizer, eval_file, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("eval") / "batched"
    result = evaluate(chat_model, tokenizer, eval_file, output_dir, batch_size=6, max_new_tokens=MAX_TARGET_LENGTH,
                      limit=EXAMPLES, progress=False)
    return result, output_dir


def read_jsonl(path):
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def test_metrics_file_holds_glm_eval_scores_of_the_written_predictions(batched_run):
    _, output_dir = batched_run
    rows = read_jsonl(output_dir / PREDICTIONS_NAME)
    expected = score([row["prediction"] for row in rows], [row["reference"] for row in rows])
    written = json.loads((output_dir / METRICS_NAME).read_text(encoding="utf-8"))
    assert {key: written[key] for key in expected} == expected
    assert expected["bleu-4"] > 0 and expected["rouge-l"] > 0  # the golden model's answers share a few characters
    assert written["n"] == EXAMPLES
    generation = RUN_GENERATION.updated(max_new_tokens=MAX_TARGET_LENGTH)
    assert written["generation"] == {"batch_size": 6, **asdict(generation)}


def test_predictions_follow_the_records_in_order(batched_run, adgen_dev_file):
    result, output_dir = batched_run
    rows = read_jsonl(output_dir / PREDICTIONS_NAME)
    with open(adgen_dev_file, encoding="utf-8") as file:
        examples = [json.loads(line) for _, line in zip(range(EXAMPLES), file)]
    assert [(row["content"], row["summary"]) for row in rows] == [(e["content"], e["summary"]) for e in examples]
    assert rows == result.rows
    assert sorted(path.name for path in output_dir.iterdir()) == [METRICS_NAME, PREDICTIONS_NAME]


def test_reference_is_the_trained_answer_without_the_trailing_gmask(batched_run):
    result, _ = batched_run
    # The tokenizer turns full-width commas ASCII and the answer is cut to MAX_TARGET_LENGTH - 2 ids, as the
    # model is trained on it; the original's references went on with "[gMASK]".
    assert result.rows[0]["reference"] == "这款百褶裙的款式灵动飘逸,穿上身有很好的显"
    assert all("[gMASK]" not in row["reference"] for row in result.rows)


def test_prediction_is_the_greedy_answer_of_the_unpadded_prompt(batched_run, chat_model, tokenizer, eval_file):
    result, _ = batched_run
    record = read_eval_records(eval_file, limit=1)[0]
    output = generate(chat_model, record["input_ids"], max_new_tokens=MAX_TARGET_LENGTH,
                      num_pieces=tokenizer.vocab_size)[0, len(record["input_ids"]):].tolist()
    answer = output[:output.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in output else output
    assert result.rows[0]["prediction"] == tokenizer.decode(answer, skip_special_tokens=True).strip()
    assert result.rows[0]["prediction"]


def test_batched_greedy_eval_predicts_as_batch_size_one(batched_run, chat_model, tokenizer, eval_file, tmp_path):
    batched, _ = batched_run
    single = evaluate(chat_model, tokenizer, eval_file, tmp_path, batch_size=1, max_new_tokens=MAX_TARGET_LENGTH,
                      limit=EXAMPLES, progress=False)
    assert [row["prediction"] for row in single.rows] == [row["prediction"] for row in batched.rows]
    assert single.metrics == batched.metrics


def test_sampling_is_seeded(chat_model, tokenizer, eval_file, tmp_path):
    def sampled(seed):
        result = evaluate(chat_model, tokenizer, eval_file, tmp_path / str(seed), batch_size=6,
                          max_new_tokens=MAX_TARGET_LENGTH, do_sample=True, seed=seed, limit=4, progress=False)
        return [row["prediction"] for row in result.rows]

    first = sampled(1)
    assert sampled(1) == first
    assert sampled(2) != first


def test_eval_prints_the_score_table(chat_model, tokenizer, eval_file, tmp_path, capsys):
    result = evaluate(chat_model, tokenizer, eval_file, tmp_path, batch_size=6, max_new_tokens=MAX_TARGET_LENGTH,
                      limit=4, progress=False)
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table[:5]] == ["BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L", "examples"]
    assert [float(line.split()[1]) for line in table[:4]] == pytest.approx(
        [result.metrics[key] for key in METRICS], abs=5e-5)
    assert table[4].split()[1] == "4"


def test_a_new_run_replaces_both_files_of_an_earlier_one(chat_model, tokenizer, eval_file, tmp_path):
    (tmp_path / PREDICTIONS_NAME).write_text('{"prediction": "stale"}\n', encoding="utf-8")
    (tmp_path / METRICS_NAME).write_text('{"bleu-4": 99.0}\n', encoding="utf-8")
    result = evaluate(chat_model, tokenizer, eval_file, tmp_path, batch_size=6, max_new_tokens=MAX_TARGET_LENGTH,
                      limit=3, progress=False)
    assert len(read_jsonl(tmp_path / PREDICTIONS_NAME)) == 3
    assert json.loads((tmp_path / METRICS_NAME).read_text(encoding="utf-8"))["bleu-4"] == result.metrics["bleu-4"]


def test_an_interrupted_write_leaves_the_earlier_file_and_no_temporary(tmp_path):
    target = tmp_path / PREDICTIONS_NAME
    target.write_text("earlier\n", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt), atomic_text_file(target) as file:
        file.write("half of a new run\n")
        raise KeyboardInterrupt
    assert target.read_text(encoding="utf-8") == "earlier\n"
    assert [path.name for path in tmp_path.iterdir()] == [PREDICTIONS_NAME]


def test_training_records_are_refused(adgen_dev_file, golden_hf_dir, chat_model, tokenizer, tmp_path):
    train_file = tmp_path / "train.mindrecord"
    adgen_to_mindrecord(adgen_dev_file, golden_hf_dir / "ice_text.model", train_file, mode="train")
    with pytest.raises(DataError, match=r"train\.mindrecord holds training records.*--mode eval"):
        evaluate(chat_model, tokenizer, train_file, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_missing_eval_file_is_named(chat_model, tokenizer, tmp_path):
    with pytest.raises(DataError, match=re.escape(f"MindRecord file not found: {tmp_path / 'missing.mindrecord'}")):
        evaluate(chat_model, tokenizer, tmp_path / "missing.mindrecord", tmp_path / "out", progress=False)


def test_a_prompt_too_long_for_the_model_is_named_before_generating(chat_model, tokenizer, eval_file, tmp_path):
    longest = int(np.argmax([len(r["input_ids"]) for r in read_eval_records(eval_file, limit=EXAMPLES)]))
    with pytest.raises(ValueError, match=f"the prompt of record {longest} is .* seq_length 256"):
        evaluate(chat_model, tokenizer, eval_file, tmp_path / "out", max_new_tokens=250, limit=EXAMPLES,
                 progress=False)
    assert not (tmp_path / "out").exists()

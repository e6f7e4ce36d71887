"""glm_eval.score: ChatGLM-6B's compute_metrics, pair by pair and averaged."""

import random
import subprocess
import sys

import jieba
import numpy as np
import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_chinese import Rouge

import glm_eval

METRICS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")
BLANK_TEXTS = ["", " ", "\t\n", "\u3000"]  # \u3000 is the full-width space of Chinese text

CHINESE_WORDS = [
    *("这件", "衬衫", "的", "款式", "非常", "宽松", "利落", "线条", "可以", "很好"),
    *("隐藏", "身材", "小缺点", "简约", "设计", "裙身", "蝴蝶结", "蓝色", "甜美", "气息"),
]
ENGLISH_WORDS = [
    *("the", "a", "shirt", "dress", "is", "very", "loose", "simple", "design"),
    *("blue", "sweet", "A", "B", "c", "d", "42", "2023"),
]
PUNCTUATION = ["，", "。", "！", "？", "……", ",", ".", "!", " ", "\n"]


def reference_compute_metrics(prediction: str, reference: str) -> dict:
    """ChatGLM-6B ptuning/main.py compute_metrics for one pair, written out from its source."""
    hypothesis = list(jieba.cut(prediction))
    reference_words = list(jieba.cut(reference))
    scores = Rouge().get_scores(" ".join(hypothesis), " ".join(reference_words))[0]
    result = {key: round(value["f"] * 100, 4) for key, value in scores.items()}
    bleu = sentence_bleu([list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3)
    result["bleu-4"] = round(bleu * 100, 4)
    return result


def random_text(rng: random.Random) -> str:
    """A mix of Chinese and English words and punctuation with at least one word in it."""
    pool = CHINESE_WORDS if rng.random() < 0.7 else CHINESE_WORDS + ENGLISH_WORDS
    tokens = [rng.choice(pool)]
    for _ in range(rng.randint(0, 40)):
        tokens.append(rng.choice(PUNCTUATION) if rng.random() < 0.2 else rng.choice(pool))
    rng.shuffle(tokens)
    joiner = " " if rng.random() < 0.3 else ""
    return joiner.join(tokens)


def random_pairs(seed: int, count: int) -> tuple[list, list]:
    rng = random.Random(seed)
    predictions, references = [], []
    for _ in range(count):
        reference = random_text(rng)
        # Half the predictions share most of their reference, as a trained model's do.
        if rng.random() < 0.5:
            cut = rng.randint(0, len(reference))
            prediction = reference[:cut] + random_text(rng)[: rng.randint(1, 20)]
        else:
            prediction = random_text(rng)
        predictions.append(prediction)
        references.append(reference)
    return predictions, references


@pytest.mark.parametrize("case_index", [0, 1])
def test_golden_metrics_reproduced_to_4_decimals(golden_case, case_index):
    case = golden_case("metrics")[case_index]
    result = glm_eval.score(case["preds"], case["labels"])
    for metric in METRICS:
        assert result[metric] == pytest.approx(case["scores"][metric], abs=5e-5), metric
    assert result["n"] == len(case["preds"])
    assert result["empty_predictions"] == 0


def test_each_pair_is_rounded_to_4_decimals_before_averaging(golden_case):
    # 55.35715 = mean(25.0, 85.7143): only 4-decimal pair scores average to a 5th decimal like this.
    case = golden_case("metrics")[1]
    assert glm_eval.score(case["preds"], case["labels"])["rouge-1"] == 55.35715


def test_random_pairs_match_direct_rouge_chinese_nltk_jieba_computation():
    predictions, references = random_pairs(seed=20230314, count=200)
    expected = [reference_compute_metrics(p, r) for p, r in zip(predictions, references)]
    for index, (prediction, reference) in enumerate(zip(predictions, references)):
        assert glm_eval.score_pair(prediction, reference) == expected[index], (prediction, reference)
        single = glm_eval.score([prediction], [reference])
        assert {metric: single[metric] for metric in METRICS} == expected[index]

    result = glm_eval.score(predictions, references)
    for metric in METRICS:
        assert result[metric] == float(np.mean([pair[metric] for pair in expected])), metric


@pytest.mark.parametrize("blank", BLANK_TEXTS)
def test_blank_prediction_or_reference_scores_zero_and_is_counted(blank):
    result = glm_eval.score([blank, "简约的设计", blank], ["简约而不简单的设计", blank, blank])
    assert result == {
        "bleu-4": 0.0,
        "rouge-1": 0.0,
        "rouge-2": 0.0,
        "rouge-l": 0.0,
        "n": 3,
        "empty_predictions": 3,
    }


def test_blank_pairs_count_as_zero_in_the_averages():
    scored = glm_eval.score_pair("简约的设计", "简约而不简单的设计")
    result = glm_eval.score(["简约的设计", ""], ["简约而不简单的设计", "有参考的样本"])
    for metric in METRICS:
        assert result[metric] == scored[metric] / 2
    assert (result["n"], result["empty_predictions"]) == (2, 1)


def test_two_workers_give_identical_results_to_one():
    predictions, references = random_pairs(seed=7, count=300)
    predictions[5] = ""  # a blank pair must be handled the same way in a worker
    assert glm_eval.score(predictions, references, workers=2) == glm_eval.score(predictions, references)


def test_different_lengths_are_rejected():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        glm_eval.score(["a", "b"], ["a"])


def test_no_pairs_are_rejected():
    with pytest.raises(ValueError, match="no predictions"):
        glm_eval.score([], [])


def test_non_string_item_is_rejected():
    with pytest.raises(TypeError, match=r"references\[1\] is a int"):
        glm_eval.score(["a", "b"], ["a", 3])


def test_workers_below_one_are_rejected():
    with pytest.raises(ValueError, match="workers must be at least 1"):
        glm_eval.score(["a"], ["a"], workers=0)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_scoring_imports_neither_mindspore_nor_torch():
    completed = run_python(
        "import sys, glm_eval, glm_eval.cli; glm_eval.score(['简约'], ['简约']);"
        "print(sorted({'mindspore', 'torch'} & set(sys.modules)))"
    )
    assert completed.stdout.strip() == "[]"


def test_scoring_prints_nothing_to_stderr():
    # jieba announces "Building prefix dict ..." on stderr unless its logger is quietened.
    completed = run_python("import glm_eval; glm_eval.score(['这件衬衫很宽松'], ['这件衬衫非常宽松'])")
    assert completed.stderr == ""

"""Sampling: temperature, then top-k, then top-p over the renormalised distribution, then a seeded draw."""

import math

import numpy as np
import pytest

from glm_core.generation import INVALID_SCORE_TOKEN, filtered_probabilities, process_logits, sample

LOGITS = np.array([[2.0, 1.5, 1.2, 0.9, 0.5, 0.1, -0.3, -1.0]], np.float32)


def expected_distribution(logits, temperature, top_k, top_p):
    """The filtered distribution written out step by step, independently of the code under test."""
    scaled = [x / temperature for x in logits]
    ranked = sorted(range(len(scaled)), key=lambda i: -scaled[i])[:top_k]
    weights = {i: math.exp(scaled[i]) for i in ranked}
    total = sum(weights.values())
    kept, mass = [], 0.0
    for i in ranked:  # most likely first; keep until the mass before a token reaches top_p
        if mass >= top_p:
            break
        kept.append(i)
        mass += weights[i] / total
    norm = sum(weights[i] for i in kept)
    return np.array([weights[i] / norm if i in kept else 0.0 for i in range(len(logits))])


def chi_square_critical(degrees: int, z: float = 3.09) -> float:
    """Upper 0.1 % point of chi-square (Wilson-Hilferty approximation)."""
    return degrees * (1 - 2 / (9 * degrees) + z * math.sqrt(2 / (9 * degrees))) ** 3


def test_filtered_probabilities_follow_temperature_top_k_then_top_p():
    probs = filtered_probabilities(LOGITS, temperature=0.7, top_k=5, top_p=0.8)
    np.testing.assert_allclose(probs[0], expected_distribution(LOGITS[0], 0.7, 5, 0.8), atol=1e-12)


def test_draws_follow_the_filtered_distribution():
    expected = expected_distribution(LOGITS[0], 0.7, 5, 0.8)
    probs = np.repeat(filtered_probabilities(LOGITS, temperature=0.7, top_k=5, top_p=0.8), 4000, axis=0)
    draws = sample(probs, np.random.default_rng(1234))
    counts = np.bincount(draws, minlength=len(expected))
    assert counts[expected == 0].sum() == 0  # filtered tokens are never drawn
    support = expected > 0
    observed, wanted = counts[support], expected[support] * len(draws)
    statistic = float(((observed - wanted) ** 2 / wanted).sum())
    assert statistic < chi_square_critical(int(support.sum()) - 1)


def test_same_seed_same_draws():
    probs = np.repeat(filtered_probabilities(LOGITS, temperature=1.0), 50, axis=0)
    first = sample(probs, np.random.default_rng(7))
    assert (first == sample(probs, np.random.default_rng(7))).all()
    assert (first != sample(probs, np.random.default_rng(8))).any()


def test_top_p_always_keeps_the_most_likely_token():
    probs = filtered_probabilities(LOGITS, top_p=1e-6)
    assert probs[0, 0] == 1.0


def test_invalid_scores_fall_back_to_the_fixed_token():
    logits = LOGITS.copy()
    logits[0, 3] = np.nan
    processed = process_logits(logits, [[1, 2]])
    assert processed[0].argmax() == INVALID_SCORE_TOKEN


def test_dead_rows_are_never_chosen():
    processed = process_logits(LOGITS, [[0]], num_pieces=4)
    assert np.isneginf(processed[0, 4:]).all()
    assert filtered_probabilities(processed)[0, 4:].sum() == 0


@pytest.mark.parametrize("penalty", [1.5, 0.5])
def test_repetition_penalty_scales_seen_tokens_like_hugging_face(penalty):
    logits = np.array([[2.0, -1.0, 0.5]], np.float32)
    processed = process_logits(logits, [[0, 1]], repetition_penalty=penalty)
    np.testing.assert_allclose(processed[0], [2.0 / penalty, -1.0 * penalty, 0.5])

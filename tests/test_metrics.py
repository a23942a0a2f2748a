import math

import numpy as np
import pytest

from lifelora.errors import LifeloraError
from lifelora.metrics.ctr import ctr_metrics, group_auc


def test_auc_logloss_acc_match_hand_computed_values():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.6, 0.4, 0.1])
    metrics = ctr_metrics(labels, scores)
    # Positive/negative pairs: (0.9>0.6) (0.9>0.1) (0.4<0.6) (0.4>0.1) → 3 of 4 ordered correctly.
    assert metrics["AUC"] == pytest.approx(0.75)
    expected_logloss = -(math.log(0.9) + math.log(0.4) + math.log(0.4) + math.log(0.9)) / 4
    assert metrics["LogLoss"] == pytest.approx(expected_logloss)
    assert metrics["ACC"] == pytest.approx(0.5)  # 0.9 ✓, 0.6 ✗, 0.4 ✗, 0.1 ✓


def test_auc_counts_ties_as_half():
    assert ctr_metrics(np.array([1, 0]), np.array([0.5, 0.5]))["AUC"] == pytest.approx(0.5)


def test_gauc_weights_users_by_samples_and_skips_single_class_users():
    labels = np.array([1, 0, 0, 1, 0, 1, 1])
    scores = np.array([0.8, 0.2, 0.3, 0.1, 0.9, 0.5, 0.6])
    users = np.array([1, 1, 2, 2, 2, 3, 3])
    # user 1: AUC 1.0 over 2 samples; user 2: positive 0.1 below both negatives → 0.0 over 3 samples;
    # user 3 has positives only and is skipped.
    assert group_auc(labels, scores, users) == pytest.approx((1.0 * 2 + 0.0 * 3) / 5)
    assert ctr_metrics(labels, scores, groups=users)["gAUC"] == pytest.approx(0.4)


def test_logloss_clips_certain_wrong_predictions():
    metrics = ctr_metrics(np.array([1, 0]), np.array([0.0, 0.0]))
    assert math.isfinite(metrics["LogLoss"])
    assert metrics["LogLoss"] == pytest.approx(-math.log(1e-7) / 2, rel=1e-6)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([1, 0], [0.5], "2 labels but 1 scores"),
        ([], [], "no samples"),
        ([1, 1], [0.3, 0.4], "both positive and negative"),
        ([1, 0], [1.5, 0.2], "probabilities"),
    ],
)
def test_bad_metric_inputs_raise_clear_errors(labels, scores, message):
    with pytest.raises(LifeloraError, match=message):
        ctr_metrics(np.array(labels), np.array(scores))


def test_delong_interval_by_hand_and_against_the_bootstrap():
    from sklearn.metrics import roc_auc_score

    from lifelora.metrics.intervals import auc_interval

    # 2 positives (0.9, 0.4), 2 negatives (0.5, 0.1): V10 = (1, 0.5), V01 = (0.5, 0); AUC 0.75;
    # variance = var(V10)/2 + var(V01)/2 = 0.125/2 + 0.125/2 = 0.125
    auc, low, high = auc_interval([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1])
    assert auc == pytest.approx(0.75)
    assert auc - low == pytest.approx(1.959964 * 0.125**0.5)
    assert high == 1.0  # 0.75 + 0.69, clipped
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = np.round(labels * 0.6 + rng.normal(size=400), 1)  # with ties
    auc, low, high = auc_interval(labels, scores)
    assert auc == pytest.approx(roc_auc_score(labels, scores))
    draws = [rng.integers(0, 400, 400) for _ in range(1000)]
    boot = np.std([roc_auc_score(labels[d], scores[d]) for d in draws])
    assert (high - low) / 2 / 1.959964 == pytest.approx(boot, rel=0.15)


def test_paired_auc_difference_tells_a_better_model_from_noise():
    from lifelora.metrics.intervals import paired_auc_difference

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    noise = rng.normal(size=300)
    strong, weak = labels + noise, 0.1 * labels + noise
    better = paired_auc_difference(labels, strong, weak)
    assert better["difference"] > 0 and better["low"] > 0 and better["p_value"] < 0.01
    same = paired_auc_difference(labels, strong, strong)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    flipped = paired_auc_difference(labels, weak, strong)
    assert flipped["difference"] == pytest.approx(-better["difference"])
    assert flipped["p_value"] == pytest.approx(better["p_value"])


def test_mean_interval_is_the_normal_interval_of_a_mean():
    from lifelora.metrics.intervals import mean_interval

    values = np.array([0.0, 1.0] + [0.5] * 14)  # mean 0.5, sample sd 0.18257, se 0.045644
    mean, low, high = mean_interval(values)
    assert mean == 0.5
    assert low == pytest.approx(0.5 - 1.959964 * 0.045644, abs=1e-5)
    assert high == pytest.approx(0.5 + 1.959964 * 0.045644, abs=1e-5)
    assert mean_interval(np.array([0.0, 0.0, 1.0]))[1] == 0.0  # clipped to [0, 1]
    assert mean_interval(np.zeros(5)) == (0.0, 0.0, 0.0)
    with pytest.raises(LifeloraError, match="at least two users"):
        mean_interval(np.array([1.0]))


def test_paired_mean_difference_uses_the_per_user_differences():
    from lifelora.metrics.intervals import paired_mean_difference

    a, b = np.array([1.0, 0.5, 0.0, 1.0]), np.array([0.0, 0.5, 0.0, 0.0])
    test = paired_mean_difference(a, b)  # differences 1, 0, 0, 1: mean 0.5, se 0.288675
    assert test["difference"] == 0.5
    assert test["high"] - test["low"] == pytest.approx(2 * 1.959964 * 0.288675, abs=1e-5)
    assert test["p_value"] == pytest.approx(0.0833, abs=1e-3)
    same = paired_mean_difference(a, a)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    with pytest.raises(LifeloraError, match="same two or more users"):
        paired_mean_difference(a[:1], b[:1])

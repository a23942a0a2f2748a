import math

import numpy as np
import pytest

from lifelora.errors import LifeloraError
from lifelora.metrics.ranking import (
    NOT_FOUND,
    ranking_metrics,
    ranks_from_lists,
    target_ranks,
    top_k_items,
)


def test_hand_computed_ranks_and_metrics():
    scores = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # target 0: best -> rank 0
            [0.9, 0.8, 0.7, 0.1],  # target 2: two above -> rank 2
            [0.5, 0.5, 0.5, 0.1],  # target 1: tied with two others -> pessimistic rank 2
            [0.1, 0.2, 0.3, 0.4],  # target 0: worst -> rank 3
        ]
    )
    ranks = target_ranks(scores, np.array([0, 2, 1, 0]))
    assert ranks.tolist() == [0, 2, 2, 3]
    m = ranking_metrics(ranks, ks=(1, 3))
    assert m["hit@1"] == pytest.approx(0.25)
    assert m["hit@3"] == pytest.approx(0.75)
    assert m["recall@3"] == m["hit@3"]
    assert m["ndcg@1"] == pytest.approx(0.25)  # rank 0 -> gain 1
    assert m["ndcg@3"] == pytest.approx((1 + 2 / math.log2(4)) / 4)  # rank 2 -> 1/log2(4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 3 + 1 / 4) / 4)
    assert m["users"] == 4


def test_exclude_removes_items_but_never_the_target():
    scores = np.array([[0.9, 0.8, 0.7, 0.1]])
    assert target_ranks(scores, np.array([2])).tolist() == [2]
    exclude = (np.array([0, 0, 0]), np.array([0, 1, 2]))  # the target itself is in the pairs
    assert target_ranks(scores, np.array([2]), exclude).tolist() == [0]
    assert scores[0, 0] == 0.9  # the caller's scores are not modified


def test_ranks_from_lists_with_padding_and_misses():
    ranked = np.array([[3, 1, 2], [0, -1, -1], [5, 4, -1]])
    ranks = ranks_from_lists(ranked, np.array([2, 1, 5]))
    assert ranks.tolist() == [2, NOT_FOUND, 0]
    m = ranking_metrics(ranks, ks=(1, 3), cutoff=3)
    assert "mrr" not in m
    assert m["mrr@3"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert m["hit@3"] == pytest.approx(2 / 3)


def _brute_force(scores, targets, exclude_sets, ks):
    ranks = []
    for row, target in enumerate(targets):
        others = [i for i in range(scores.shape[1]) if i != target and i not in exclude_sets[row]]
        ranks.append(sum(scores[row, i] >= scores[row, target] for i in others))
    out = {}
    for k in ks:
        out[f"hit@{k}"] = np.mean([r < k for r in ranks])
        out[f"ndcg@{k}"] = np.mean([1 / math.log2(r + 2) if r < k else 0 for r in ranks])
    out["mrr"] = np.mean([1 / (r + 1) for r in ranks])
    return ranks, out


@pytest.mark.parametrize("seed", range(5))
def test_matches_a_brute_force_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n, n_items = 40, 25
    scores = rng.integers(0, 6, (n, n_items)).astype(np.float32)  # many ties
    targets = rng.integers(0, n_items, n)
    rows = rng.integers(0, n, 200)
    items = rng.integers(0, n_items, 200)
    exclude_sets = [set(items[rows == r]) - {targets[r]} for r in range(n)]
    ranks = target_ranks(scores, targets, (rows, items))
    expected_ranks, expected = _brute_force(scores, targets, exclude_sets, (5, 10))
    assert ranks.tolist() == expected_ranks
    m = ranking_metrics(ranks, ks=(5, 10))
    for key, value in expected.items():
        assert m[key] == pytest.approx(value)


def test_top_k_lists_agree_with_full_ranks_without_ties():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(30, 50))
    targets = rng.integers(0, 50, 30)
    top = top_k_items(scores, 10)
    assert top.shape == (30, 10)
    assert (np.diff(np.take_along_axis(scores, top, 1), axis=1) <= 0).all()
    full = target_ranks(scores, targets)
    from_lists = ranks_from_lists(top, targets)
    assert (from_lists == np.where(full < 10, full, NOT_FOUND)).all()
    assert ranking_metrics(from_lists, (5, 10), cutoff=10)["ndcg@10"] == pytest.approx(
        ranking_metrics(full, (5, 10))["ndcg@10"]
    )
    assert top_k_items(scores, 80).shape == (30, 50)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ranking_metrics(np.array([], dtype=np.int64)), "no users"),
        (lambda: target_ranks(np.zeros((0, 3)), np.array([])), "no targets"),
        (lambda: target_ranks(np.zeros((2, 3)), np.array([0])), "2 score rows but 1 targets"),
        (lambda: target_ranks(np.zeros((1, 3)), np.array([3])), "outside the 3 items"),
        (lambda: target_ranks(np.zeros(3), np.array([0])), r"\[n, n_items\]"),
        (lambda: ranks_from_lists(np.zeros(3), np.array([0])), r"\[n, K\]"),
        (lambda: ranking_metrics(np.array([-1])), "negative"),
        (lambda: target_ranks(np.full((1, 3), np.nan), np.array([0])), "NaN"),
        (lambda: target_ranks(np.zeros((1, 3)), np.array([0]), (np.array([1]), np.array([2]))), "outside"),
        (lambda: ranking_metrics(np.array([0]), ks=(0,)), "positive"),
        (lambda: ranking_metrics(np.array([0]), ks=(20,), cutoff=10), "beyond"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(LifeloraError, match=message):
        call()

"""The AUC, its null spread and the threshold classifier against known values."""

from __future__ import annotations

import itertools
import random

import pytest

from minikv.errors import InvalidRequestError
from minikv.security.auc import balanced_accuracy, chance_band, fit_threshold, null_auc_se, roc_auc


def pairwise_auc(pos, neg):
    """The definition, pair by pair: wins count 1, ties 1/2."""
    return sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))


@pytest.mark.parametrize(
    "pos, neg, expected",
    [
        ([3, 4], [1, 2], 1.0),
        ([1, 2], [3, 4], 0.0),
        ([1, 1], [1, 1], 0.5),
        ([1, 3], [2, 4], 0.25),  # 3 > 2 only: 1 of 4 pairs
        ([2], [1, 2, 3], 0.5),  # a win, a tie, a loss
        ([0.9, 0.8, 0.7, 0.6], [0.8, 0.5, 0.4, 0.1], 13.5 / 16),  # 4 + (3 + a tie) + 3 + 3 of 16 pairs
    ],
)
def test_auc_known_values(pos, neg, expected):
    assert roc_auc(pos, neg) == pytest.approx(expected)
    assert pairwise_auc(pos, neg) == pytest.approx(expected)


def test_auc_equals_pair_count_on_random_samples_with_ties():
    rng = random.Random(7)
    for _ in range(200):
        pos = [rng.randrange(6) for _ in range(rng.randrange(1, 12))]
        neg = [rng.randrange(6) for _ in range(rng.randrange(1, 12))]
        assert roc_auc(pos, neg) == pytest.approx(pairwise_auc(pos, neg))


def test_auc_is_symmetric_and_order_free():
    pos, neg = [0.3, 0.9, 0.1, 0.5], [0.2, 0.4, 0.8]
    assert roc_auc(pos, neg) == pytest.approx(1 - roc_auc(neg, pos))
    assert roc_auc(pos[::-1], neg[::-1]) == roc_auc(pos, neg)


def test_null_se_matches_the_spread_of_simulated_null_aucs():
    rng = random.Random(0)
    n1 = n2 = 20
    aucs = [roc_auc([rng.random() for _ in range(n1)], [rng.random() for _ in range(n2)]) for _ in range(2000)]
    mean = sum(aucs) / len(aucs)
    sd = (sum((a - mean) ** 2 for a in aucs) / (len(aucs) - 1)) ** 0.5
    assert mean == pytest.approx(0.5, abs=0.01)
    assert sd == pytest.approx(null_auc_se(n1, n2), rel=0.08)
    assert null_auc_se(1, 1) == pytest.approx((3 / 12) ** 0.5)
    assert chance_band(20, 20) < 0.75 < chance_band(10, 10)


def test_threshold_learnt_on_training_trials():
    assert fit_threshold([0.1, 0.2], [0.9, 1.1]) == pytest.approx(0.55)
    cut = fit_threshold([0.1, 0.2, 0.95], [0.9, 1.0, 1.1])
    assert balanced_accuracy(cut, [0.1, 0.2, 0.95], [0.9, 1.0, 1.1]) == pytest.approx(5 / 6)
    assert balanced_accuracy(0.5, [0.1, 0.2], [0.9, 0.3]) == pytest.approx(0.75)


@pytest.mark.parametrize("pos, neg", [([], [1.0]), ([1.0], []), ([float("nan")], [1.0])])
def test_bad_scores_raise(pos, neg):
    with pytest.raises(InvalidRequestError):
        roc_auc(pos, neg)

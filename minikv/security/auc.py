"""How well a timing tells a hit from a miss: ROC AUC, its spread by chance, and a threshold classifier.

The attacker scores each probe (here: minus its TTFT, since a hit is fast)
and the question is how often a probe of a prefix the victim *did* send
scores above one it did not. That probability is the ROC AUC, and it equals
the Mann-Whitney U statistic divided by ``n1 * n2`` (ties count one half):

- 1.0: every hit is faster than every miss (the channel leaks fully);
- 0.5: timings say nothing (what a salt should bring);
- its standard error when timings say nothing is
  ``sqrt((n1 + n2 + 1) / (12 n1 n2))`` (the null distribution of U),
  so a measured AUC can be judged against the trial count.

The threshold classifier is what an attacker would deploy: learn a cut on
training trials, then count how many *other* trials it labels right
(scoring it on its own training trials flatters it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from minikv.errors import InvalidRequestError


def _scores(values: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise InvalidRequestError(f"{what} is empty; an AUC needs at least one positive and one negative score")
    if any(math.isnan(v) for v in out):
        raise InvalidRequestError(f"{what} holds NaN; give finite scores (e.g. minus each probe's TTFT)")
    return out


def roc_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counted one half (Mann-Whitney U / (n1 n2)).

    Computed from mid-ranks in O(n log n): pool both samples, rank them
    (tied values share the mean of their ranks), sum the positives' ranks
    ``R1``; then ``U = R1 - n1 (n1 + 1) / 2``.

    >>> roc_auc([3, 4], [1, 2]), roc_auc([1, 2], [3, 4]), roc_auc([1, 2], [2, 1])
    (1.0, 0.0, 0.5)
    >>> roc_auc([2.0], [1.0, 2.0, 3.0])   # above one, tied with one, below one
    0.5
    """
    pos, neg = _scores(positives, "positives"), _scores(negatives, "negatives")
    pooled = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    rank_sum, i = 0.0, 0
    while i < len(pooled):
        j = i
        while j < len(pooled) and pooled[j][0] == pooled[i][0]:
            j += 1
        mid_rank = (i + 1 + j) / 2  # ranks i+1 .. j share their mean
        rank_sum += mid_rank * sum(label for _, label in pooled[i:j])
        i = j
    n1, n2 = len(pos), len(neg)
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n2)


def null_auc_se(n1: int, n2: int) -> float:
    """Standard error of the AUC when positives and negatives come from one distribution.

    ``sqrt((n1 + n2 + 1) / (12 n1 n2))``: e.g. 20 against 20 trials give
    0.092, so a salted AUC of 0.6 is well within chance there.

    >>> round(null_auc_se(20, 20), 4)
    0.0924
    """
    if n1 < 1 or n2 < 1:
        raise InvalidRequestError(f"null_auc_se needs n1, n2 >= 1, got {n1}, {n2}")
    return math.sqrt((n1 + n2 + 1) / (12 * n1 * n2))


def chance_band(n1: int, n2: int, z: float = 2.5) -> float:
    """The AUC a no-leak channel stays below but for a one-sided ``z``-sigma fluke: ``0.5 + z * se``.

    >>> round(chance_band(20, 20), 3)
    0.731
    """
    return 0.5 + z * null_auc_se(n1, n2)


def fit_threshold(hit_ttfts: Sequence[float], miss_ttfts: Sequence[float]) -> float:
    """The TTFT cut ("faster than this is a hit") that labels the most training probes right.

    Tries a cut between every two neighbouring distinct TTFTs (and beyond
    both ends) and keeps the one with the best balanced accuracy (mean of
    the hit and miss recalls), the smallest such cut on ties.

    >>> fit_threshold([0.1, 0.2], [0.9, 1.1])
    0.55
    """
    hits, misses = _scores(hit_ttfts, "hit_ttfts"), _scores(miss_ttfts, "miss_ttfts")
    values = sorted(set(hits + misses))
    cuts = [values[0] - 1.0] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1.0]
    return max(cuts, key=lambda t: (balanced_accuracy(t, hits, misses), -t))


def balanced_accuracy(threshold: float, hit_ttfts: Sequence[float], miss_ttfts: Sequence[float]) -> float:
    """Mean of the fraction of hits faster than ``threshold`` and of misses not faster.

    >>> balanced_accuracy(0.5, [0.1, 0.7], [0.9, 0.2])
    0.5
    """
    hits, misses = _scores(hit_ttfts, "hit_ttfts"), _scores(miss_ttfts, "miss_ttfts")
    tpr = sum(t < threshold for t in hits) / len(hits)
    tnr = sum(t >= threshold for t in misses) / len(misses)
    return (tpr + tnr) / 2


__all__ = ["balanced_accuracy", "chance_band", "fit_threshold", "null_auc_se", "roc_auc"]

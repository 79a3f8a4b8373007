"""Exercise 8.1, score the timing attack on held-out trials: the learner's ``score_attack`` against
:mod:`minikv.security.auc` (``fit_threshold``, ``balanced_accuracy``, ``roc_auc``) on hand-made trials
(one rule each) and hypothesis-drawn ones with ties, naming the rule a difference breaks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from minikv.grade.compare import CheckFailed, call, forall, looks_like, one_line, short
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.security.auc import balanced_accuracy, fit_threshold, roc_auc

MODULE = "ch08_security"

ex81 = register(Exercise(
    "8.1", "score the timing attack on held-out trials", MODULE, ("score_attack",),
    hint="split by trial < train_trials; fit the cut on the training TTFTs only (midpoints, ends at min-1 and max+1, "
         "best balanced accuracy with ttft < cut meaning hit, smallest cut on ties); report that cut's balanced "
         "accuracy and the AUC (hit faster than miss: 1, equal: 1/2) on the test trials only",
))

Pairs = Sequence[tuple[int, float]]


def _split(pairs: Pairs, train: int, training: bool) -> list[float]:
    return [t for trial, t in pairs if (trial < train) == training]


def reference(hits: Pairs, misses: Pairs, train: int) -> tuple[float, float, float]:
    """minikv's answer: the cut fit on the training trials, its balanced accuracy and the AUC on the test ones."""
    cut = fit_threshold(_split(hits, train, True), _split(misses, train, True))
    th, tm = _split(hits, train, False), _split(misses, train, False)
    return cut, balanced_accuracy(cut, th, tm), roc_auc([-t for t in th], [-t for t in tm])


def _ties_whole(hits: list[float], misses: list[float], tie: float) -> float:
    return sum(1.0 if h < m else tie if h == m else 0.0 for h in hits for m in misses) / (len(hits) * len(misses))


def _slow_is_hit_cut(hits: list[float], misses: list[float]) -> float:
    """The cut an attacker who calls a probe *slower* than it a hit would fit (the rule turned around)."""
    values = sorted(set(hits + misses))
    cuts = [values[0] - 1.0] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1.0]

    def acc(c: float) -> float:
        return (sum(t >= c for t in hits) / len(hits) + sum(t < c for t in misses) / len(misses)) / 2

    return max(cuts, key=lambda c: (acc(c), -c))


def _close(a: Any, b: float) -> bool:
    try:
        return math.isclose(float(a), b, rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def expect_score(fn: Any, hits: Pairs, misses: Pairs, train: int) -> None:
    """The learner's ``score_attack`` against minikv's; CheckFailed naming the field and the likely mistake."""
    desc = f"score_attack(hits={short(list(hits), 6)}, misses={short(list(misses), 6)}, train_trials={train})"
    got = call(fn, list(hits), list(misses), train, context=desc)
    if not isinstance(got, tuple) or len(got) != 3:
        raise CheckFailed(one_line(f"{desc} returned {got!r}; return AttackScore(threshold, accuracy, auc)"))
    cut, acc, auc = reference(hits, misses, train)
    g_cut, g_acc, g_auc = got
    tr_h, tr_m = _split(hits, train, True), _split(misses, train, True)
    te_h, te_m = _split(hits, train, False), _split(misses, train, False)
    if not _close(g_cut, cut):
        hint = looks_like(g_cut, [
            ("the threshold on the wrong side (calling a probe slower than the cut a hit; a hit is faster: "
             "ttft < threshold)", lambda: _slow_is_hit_cut(tr_h, tr_m)),
            ("a cut fit on every trial, the test trials too (fit it on the training trials only)",
             lambda: fit_threshold([t for _, t in hits], [t for _, t in misses])),
            ("a cut fit on the test trials (fit it on the training trials)", lambda: fit_threshold(te_h, te_m)),
        ])
        raise CheckFailed(one_line(f"{desc} gave threshold {g_cut!r}, expected {cut!r}{hint}"))
    if not _close(g_acc, acc):
        hint = looks_like(g_acc, [
            ("the accuracy scored on the training trials (it flatters the attacker: score the test trials)",
             lambda: balanced_accuracy(cut, tr_h, tr_m)),
            ("the plain accuracy over all test probes (use the balanced accuracy: the mean of the hit and miss "
             "recalls)", lambda: (sum(t < cut for t in te_h) + sum(t >= cut for t in te_m)) / (len(te_h) + len(te_m))),
        ])
        raise CheckFailed(one_line(f"{desc} gave accuracy {g_acc!r}, expected {acc!r}{hint}"))
    if not _close(g_auc, auc):
        hint = looks_like(g_auc, [
            ("an AUC computed on the training trials (compute it on the test trials)",
             lambda: roc_auc([-t for t in tr_h], [-t for t in tr_m])),
            ("an AUC over every trial (compute it on the test trials only)",
             lambda: roc_auc([-t for _, t in hits], [-t for _, t in misses])),
            ("ties not counted half: a tie counted as a loss (a hit exactly as fast as a miss counts 1/2)",
             lambda: _ties_whole(te_h, te_m, 0.0)),
            ("ties not counted half: a tie counted as a win (a hit exactly as fast as a miss counts 1/2)",
             lambda: _ties_whole(te_h, te_m, 1.0)),
            ("the AUC turned around (the probability that a hit is slower than a miss)", lambda: 1.0 - auc),
        ])
        raise CheckFailed(one_line(f"{desc} gave auc {g_auc!r}, expected {auc!r}{hint}"))


@ex81.check("the docstring's example")
def _example(learner: Learner) -> None:
    expect_score(learner.get("score_attack"), [(0, 0.1), (1, 0.2)], [(0, 0.9), (1, 0.2)], 1)


@ex81.check("a clean channel: hits fast, misses slow; the cut between them")
def _clean(learner: Learner) -> str:
    fn = learner.get("score_attack")
    hits = [(i, 0.004 + 0.0002 * (i % 3)) for i in range(6)]
    misses = [(i, 0.020 + 0.001 * (i % 4)) for i in range(6)]
    expect_score(fn, hits, misses, 3)
    return "AUC 1.0 and accuracy 1.0 when every hit is faster than every miss"


@ex81.check("the cut is fit on the training trials, scored on the test trials")
def _held_out(learner: Learner) -> None:
    fn = learner.get("score_attack")
    # training trials separate at 0.010; the test trials drift slower (a busier machine): the cut misjudges them
    hits = [(0, 0.004), (1, 0.006), (2, 0.012), (3, 0.011), (4, 0.009)]
    misses = [(0, 0.020), (1, 0.018), (2, 0.013), (3, 0.010), (4, 0.025)]
    expect_score(fn, hits, misses, 2)


@ex81.check("equal TTFTs (a coarse timer) count one half in the AUC")
def _ties(learner: Learner) -> None:
    fn = learner.get("score_attack")
    hits = [(0, 0.001), (0, 0.003), (1, 0.002), (1, 0.003), (2, 0.002), (2, 0.004)]
    misses = [(0, 0.004), (0, 0.004), (1, 0.002), (1, 0.003), (2, 0.003), (2, 0.005)]
    expect_score(fn, hits, misses, 1)


@ex81.check("random trials with ticking timers, vs minikv.security.auc")
def _random(learner: Learner) -> None:
    fn = learner.get("score_attack")

    @st.composite
    def trials(d: Any) -> tuple[list[tuple[int, float]], list[tuple[int, float]], int]:
        n = d(st.integers(2, 8))
        train = d(st.integers(1, n - 1))
        tick = st.integers(1, 12).map(lambda k: k / 1000)  # milliseconds: ties are common
        hits = [(i, d(tick)) for i in range(n) for _ in range(d(st.integers(1, 2)))]
        misses = [(i, d(tick)) for i in range(n) for _ in range(d(st.integers(1, 3)))]
        return hits, misses, train

    @forall(trials(), max_examples=80)
    def prop(t: tuple[list[tuple[int, float]], list[tuple[int, float]], int]) -> None:
        expect_score(fn, *t)

    prop()

"""Arrival processes, the shuffled few-shot trace, and replays in a scheduling policy's order."""

from __future__ import annotations

import math
import statistics

import pytest

from minikv.engine.policies import LPM
from minikv.errors import InvalidRequestError, KVCacheFull
from minikv.prefix import BlockHashCache, NoPrefixCache, RadixCache
from minikv.workloads import (
    burst_arrivals,
    compare_policies,
    ideal_hit_tokens,
    make_trace,
    poisson_arrivals,
    replay,
    replay_scheduled,
    shuffled_few_shot_groups,
    shuffled_few_shot_trace,
)

# ------------------------------------------------------------------ arrivals


def test_poisson_arrivals_have_the_rate_and_exponential_gaps() -> None:
    t = poisson_arrivals(4000, rate=5.0, seed=3)
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert t[0] == 0.0 and min(gaps) >= 0
    assert statistics.mean(gaps) == pytest.approx(0.2, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(0.2, rel=0.08)  # exponential: sd == mean
    assert t == poisson_arrivals(4000, rate=5.0, seed=3) != poisson_arrivals(4000, rate=5.0, seed=4)


def test_burstiness_keeps_the_rate_and_changes_the_spread() -> None:
    clumpy = poisson_arrivals(4000, rate=5.0, seed=3, burstiness=0.25)
    regular = poisson_arrivals(4000, rate=5.0, seed=3, burstiness=8.0)
    for t, cv in ((clumpy, 2.0), (regular, 8.0**-0.5)):  # gamma: sd / mean = 1 / sqrt(shape)
        gaps = [b - a for a, b in zip(t, t[1:])]
        assert statistics.mean(gaps) == pytest.approx(0.2, rel=0.1)
        assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(cv, rel=0.15)


def test_infinite_rate_and_empty() -> None:
    assert poisson_arrivals(4, math.inf) == [0.0] * 4
    assert poisson_arrivals(0, 1.0) == [] == burst_arrivals(0, 3, 1.0)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n=-1, rate=1.0), "n must be"),
        (dict(n=2.5, rate=1.0), "n must be"),
        (dict(n=3, rate=0), "rate must be"),
        (dict(n=3, rate=float("nan")), "rate must be"),
        (dict(n=3, rate="fast"), "rate must be"),
        (dict(n=3, rate=1.0, burstiness=0), "burstiness must be"),
    ],
)
def test_poisson_arrivals_bad_input(kw: dict, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        poisson_arrivals(**kw)


def test_burst_arrivals() -> None:
    assert burst_arrivals(7, burst_size=3, period=2.0, start=1.0) == [1.0] * 3 + [3.0] * 3 + [5.0]
    for kw, match in [
        (dict(n=3, burst_size=0, period=1.0), "burst_size"),
        (dict(n=3, burst_size=2, period=0.0), "period"),
        (dict(n=3, burst_size=2, period=1.0, start=-1), "start"),
    ]:
        with pytest.raises(InvalidRequestError, match=match):
            burst_arrivals(**kw)


# ----------------------------------------------------- shuffled few-shot trace


def lcp(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_shuffled_few_shot_shares_exactly_the_preamble_within_a_group() -> None:
    n, g = 30, 4
    trace = shuffled_few_shot_trace(n, n_groups=g, preamble_len=20, question_len=(2, 5), header_len=3, seed=5)
    groups = shuffled_few_shot_groups(n, g, seed=5)
    assert sorted(groups.count(k) for k in range(g)) == [7, 7, 8, 8]
    assert groups[:8] != sorted(groups[:8])  # shuffled, not in blocks
    for i in range(n):
        for j in range(i):
            assert lcp(trace[i], trace[j]) == (23 if groups[i] == groups[j] else 3)
    assert make_trace("shuffled-few-shot", 12, seed=1) == shuffled_few_shot_trace(12, seed=1)


# --------------------------------------------------------- scheduled replay

CACHES = {
    "none": lambda nb, bs: NoPrefixCache(nb, bs),
    "hash": lambda nb, bs: BlockHashCache(nb, bs),
    "radix": lambda nb, bs: RadixCache(nb, bs),
    "radix-token": lambda nb, bs: RadixCache(nb, bs, page_size=1),
}


@pytest.mark.parametrize("kind", list(CACHES))
def test_fcfs_one_at_a_time_is_the_plain_replay(kind: str) -> None:
    trace = make_trace("few-shot", 40, seed=2)
    a = replay_scheduled(CACHES[kind](60, 16), trace, "fcfs")
    assert a.hits == replay(CACHES[kind](60, 16), trace)
    assert a.order == list(range(40)) and a.steps == 40 and a.max_wait == 39


@pytest.mark.parametrize("kind", ["hash", "radix", "radix-token"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lpm_hits_at_least_fcfs_on_the_shuffled_few_shot_trace(kind: str, seed: int) -> None:
    trace = shuffled_few_shot_trace(40, n_groups=4, preamble_len=96, question_len=(4, 12), seed=seed)
    arrivals = poisson_arrivals(40, rate=2.0, seed=seed)
    runs = compare_policies(lambda: CACHES[kind](10, 16), trace, arrivals=arrivals)
    fcfs, lpm, dfs = (runs[p].hit_rate for p in ("fcfs", "lpm", "dfs-weight"))
    assert lpm >= fcfs and dfs >= fcfs
    assert lpm > 1.2 * fcfs  # grouping pays: the cache holds about one preamble
    ideal = sum(ideal_hit_tokens(trace, None if kind == "radix-token" else 16))
    assert max(r.hit_tokens for r in runs.values()) <= ideal


@pytest.mark.parametrize("policy", ["fcfs", "lpm", "dfs-weight", LPM(threshold=2)])
def test_every_request_runs_once_after_it_arrives_and_the_cache_ends_idle(policy: object) -> None:
    trace = shuffled_few_shot_trace(30, n_groups=3, preamble_len=40, question_len=(2, 9), seed=4)
    salts = [("a", None)[i % 2] for i in range(30)]
    cache = RadixCache(12, 8, page_size=2)
    run = replay_scheduled(
        cache, trace, policy, arrivals=burst_arrivals(30, 7, 1.5), step_time=0.5,
        max_admit=3, hold_steps=2, salts=salts,
    )  # fmt: skip
    assert sorted(run.order) == list(range(30))
    assert all(w >= 0 for w in run.waits)
    assert run.arrival_step == [3 * (i // 7) for i in range(30)]
    assert all(run.admit_step[a] <= run.admit_step[b] for a, b in zip(run.order, run.order[1:]))
    s = cache.stats()
    assert s.num_used == 0  # requests refused for want of blocks also matched: requests >= 30
    assert s.requests >= 30 and s.hit_tokens >= run.hit_tokens
    cache.check_invariants()


def test_a_request_too_big_for_the_pool_and_bad_arguments() -> None:
    with pytest.raises(KVCacheFull, match="even with nothing running"):
        replay_scheduled(BlockHashCache(2, 4), [[1, 2, 3], list(range(20))])
    cache = BlockHashCache(8, 4)
    for kw, match in [
        (dict(max_admit=0), "max_admit"),
        (dict(hold_steps=0), "hold_steps"),
        (dict(step_time=0), "step_time"),
        (dict(arrivals=[1.0, 0.0]), "never decreasing"),
        (dict(arrivals=[0.0]), "one time"),
        (dict(salts=[None]), "one salt"),
    ]:
        with pytest.raises(InvalidRequestError, match=match):
            replay_scheduled(cache, [[1, 2], [3, 4]], **kw)
    with pytest.raises(InvalidRequestError, match="unknown scheduling policy"):
        replay_scheduled(cache, [[1, 2]], "sjf")


def test_few_shot_order_experiment_rows() -> None:
    from minikv.workloads.scheduled import few_shot_order_experiment, format_rows

    rows = few_shot_order_experiment(
        n=24, n_groups=3, preamble_len=48, cache_blocks=(8,), rates=(math.inf, 2.0)
    )
    assert [(r["rate"], r["policy"]) for r in rows] == [
        (rate, p) for rate in (math.inf, 2.0) for p in ("fcfs", "lpm", "lpm-all", "dfs-weight")
    ]
    by = {(r["rate"], r["policy"]): r["hit_rate"] for r in rows}
    assert all(by[rate, p] >= by[rate, "fcfs"] for rate in (math.inf, 2.0) for p in ("lpm", "lpm-all"))
    assert all(0 < r["hit_rate"] <= r["ideal"] for r in rows)
    table = format_rows(rows)
    assert table.count("\n") == 1 + len(rows) and "| all at once | lpm |" in table

"""Scheduling policies: the pure rankings against brute-force references, and the policy objects.

- ``lpm_order``: a permutation sorted by (cached tokens desc, arrival, queue
  position); the queue order unchanged above the threshold.
- ``dfs_weight_order``: equal to a token-by-token trie walked as the
  docstring says (heaviest child first, ties by earliest arrival, a node's
  own requests after its children); requests with the same cached prefix
  come out next to each other.
- ``FCFS``/``LPM``/``DFSWeight`` on engine ``Sequence`` objects and real
  caches: they rank by ``peek``, change nothing in the cache, count a cache
  without ``peek`` as 0, and ``make_policy``/``checked_order`` refuse what is wrong.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minikv.engine.policies import (
    LPM,
    LPM_THRESHOLD,
    DFSWeight,
    FCFS,
    SchedulingPolicy,
    cached_tokens,
    checked_order,
    dfs_weight_order,
    lpm_order,
    make_policy,
)
from minikv.engine.sequence import Sequence
from minikv.errors import InvalidRequestError
from minikv.prefix import BlockHashCache, NoPrefixCache, RadixCache
from minikv.sampling import SamplingParams

SETTINGS = dict(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

ARRIVAL = st.sampled_from([0.0, 0.5, 1.0, 2.0])
LPM_ITEMS = st.lists(st.tuples(st.integers(0, 3).map(lambda c: c * 4), ARRIVAL), max_size=12)


def _rows(items: list[tuple[int, float]]) -> list[tuple[int, int, float]]:
    return [(i, c, a) for i, (c, a) in enumerate(items)]


@settings(**SETTINGS)
@given(items=LPM_ITEMS)
def test_lpm_order_is_the_sorted_permutation(items: list[tuple[int, float]]) -> None:
    rows = _rows(items)
    out = lpm_order(rows)
    assert sorted(out) == list(range(len(rows)))
    keys = [(-rows[i][1], rows[i][2], i) for i in out]
    assert keys == sorted(keys)


@settings(**SETTINGS)
@given(items=LPM_ITEMS, threshold=st.integers(0, 12))
def test_lpm_order_falls_back_to_the_queue_above_the_threshold(
    items: list[tuple[int, float]], threshold: int
) -> None:
    rows = _rows(items)
    out = lpm_order(rows, threshold=threshold)
    if len(rows) > threshold:
        assert out == list(range(len(rows)))
    else:
        assert out == lpm_order(rows)


def test_lpm_threshold_default_is_sglangs() -> None:
    rows = [(i, i, 0.0) for i in range(LPM_THRESHOLD + 1)]
    assert lpm_order(rows) == list(range(LPM_THRESHOLD + 1))
    assert lpm_order(rows[:LPM_THRESHOLD]) == list(reversed(range(LPM_THRESHOLD)))


def reference_dfs(items: list, salts: list) -> list:
    """The docstring of dfs_weight_order, literally: a token-by-token trie, recursion."""
    root: dict[str, Any] = {"kids": {}, "reqs": []}
    for i, (_, tokens, cached, _) in enumerate(items):
        node = root
        if cached > 0:
            for t in [("salt", salts[i]), *tokens[:cached]]:
                node = node["kids"].setdefault(t, {"kids": {}, "reqs": []})
        node["reqs"].append(i)

    def weight(n: dict) -> int:
        return len(n["reqs"]) + sum(weight(k) for k in n["kids"].values())

    def first(n: dict) -> tuple[float, int]:
        own = [(items[i][3], i) for i in n["reqs"]]
        return min(own + [first(k) for k in n["kids"].values()], default=(0.0, 0))

    out: list = []

    def emit(n: dict) -> None:
        for k in sorted(n["kids"].values(), key=lambda k: (-weight(k), first(k))):
            emit(k)
        out.extend(items[i][0] for i in sorted(n["reqs"], key=lambda i: (items[i][3], i)))

    emit(root)
    return out


DFS_ITEMS = st.lists(
    st.tuples(st.lists(st.integers(0, 2), max_size=7), st.integers(0, 7), ARRIVAL,
              st.sampled_from([None, "a"])),
    max_size=14,
)  # fmt: skip


@settings(**SETTINGS)
@given(rows=DFS_ITEMS)
def test_dfs_weight_order_matches_the_reference(rows: list) -> None:
    items = [(f"r{i}", toks, min(c, len(toks)), a) for i, (toks, c, a, _) in enumerate(rows)]
    salts = [s for *_, s in rows]
    out = dfs_weight_order(items, salts)
    assert out == reference_dfs(items, salts)
    # Requests with the same cached prefix (and salt) are emitted next to each other.
    key = {rid: (s, tuple(t[:c])) if c else () for (rid, t, c, _), s in zip(items, salts)}
    seen: list = []
    for rid in out:
        if seen and seen[-1] == key[rid]:
            continue
        assert key[rid] not in seen, (out, key)
        seen.append(key[rid])


def test_dfs_weight_order_heaviest_group_first_and_salts_apart() -> None:
    p = [1, 2, 3, 4]
    items = [
        ("s", p + [0], 4, 0.0),  # same tokens, another salt: its own group of one
        ("a1", p + [1], 4, 1.0),
        ("a2", p + [2], 4, 2.0),
        ("a3", [1, 2] + [3], 2, 0.5),  # a shorter hit on the same path: after the deeper ones
        ("z", [9], 0, 0.0),
    ]
    assert dfs_weight_order(items, ["other", None, None, None, None]) == ["a1", "a2", "a3", "s", "z"]
    with pytest.raises(InvalidRequestError, match="one salt per request"):
        dfs_weight_order(items, [None])
    assert dfs_weight_order([]) == []


# ----------------------------------------------------------- policy objects


def seq(rid: int, tokens: list[int], arrival: float, salt: str | None = None) -> Sequence:
    s = Sequence(rid, None, list(tokens), SamplingParams(max_tokens=4, cache_salt=salt))
    s.metrics.arrival_time = arrival
    return s


def warm_cache(kind: str):
    """A cache holding [1..8] (and [20..27] under salt 'x'), nothing referenced."""
    cache = {
        "hash": lambda: BlockHashCache(16, 4),
        "radix": lambda: RadixCache(16, 4),
        "radix-p1": lambda: RadixCache(16, 4, page_size=1),
    }[kind]()
    for tokens, salt in (([1, 2, 3, 4, 5, 6, 7, 8], None), ([20, 21, 22, 23, 24, 25, 26, 27], "x")):
        table = cache.allocate(2)
        cache.insert(tokens, table, salt)
        cache.release(table)
    return cache


def state(cache) -> tuple:
    extra = (cache.to_dict(), cache.free_blocks()) if isinstance(cache, RadixCache) else (cache.free_queue(),)
    return (cache.stats(), *extra)


@pytest.mark.parametrize("kind", ["hash", "radix", "radix-p1"])
def test_policies_rank_by_peek_and_change_nothing(kind: str) -> None:
    cache = warm_cache(kind)
    waiting = [
        seq(0, [9, 9, 9], 0.0),  # no hit
        seq(1, [1, 2, 3, 4, 5, 0], 1.0),  # 4 cached (5 token-granular)
        seq(2, [20, 21, 22, 23, 24, 25, 26, 27, 0], 2.0, salt="x"),  # 8 cached, salt x
        seq(3, [20, 21, 22, 23, 24, 25, 26, 27, 0], 3.0),  # no hit: other salt
        seq(4, [1, 2, 3, 4, 5, 6, 7, 8, 0], 4.0),  # 8 cached
    ]
    partial = 5 if kind == "radix-p1" else 4  # token-granular: [1..5] hit, [5] copied
    assert [cached_tokens(s, cache) for s in waiting] == [0, partial, 8, 0, 8]
    before = state(cache)
    ids = {name: [s.request_id for s in make_policy(name).order(list(waiting), cache)]
           for name in ("fcfs", "lpm", "dfs-weight")}  # fmt: skip
    assert state(cache) == before
    assert ids["fcfs"] == [0, 1, 2, 3, 4]
    assert ids["lpm"] == [2, 4, 1, 0, 3]
    # dfs-weight: the [1..] subtree holds two requests (1 and 4), salt x's one.
    assert ids["dfs-weight"] == [4, 1, 2, 0, 3]


def test_lpm_uses_tokens_generated_before_a_preemption() -> None:
    cache = warm_cache("hash")
    s = seq(0, [1, 2, 3, 4], 0.0)
    assert cached_tokens(s, cache) == 0  # the last-token rule leaves 3 tokens: no full block
    s.output_token_ids += [5, 6, 7, 8, 9]
    assert cached_tokens(s, cache) == 8


@pytest.mark.parametrize("cache", [None, NoPrefixCache(8, 4), object()])
def test_caches_without_hits_or_peek_count_as_zero(cache: object) -> None:
    waiting = [seq(i, [1, 2, 3, 4, 5], arrival) for i, arrival in enumerate([2.0, 0.0, 1.0])]
    assert [s.request_id for s in LPM().order(waiting, cache)] == [1, 2, 0]  # by arrival
    assert [s.request_id for s in DFSWeight().order(waiting, cache)] == [1, 2, 0]
    assert [s.request_id for s in FCFS().order(waiting, cache)] == [0, 1, 2]


def test_lpm_above_threshold_does_not_peek() -> None:
    class Counting:
        calls = 0

        def peek(self, token_ids, salt=None) -> int:
            Counting.calls += 1
            return len(token_ids) - 1

    waiting = [seq(i, [1] * (i + 2), 0.0) for i in range(5)]
    assert [s.request_id for s in LPM(threshold=4).order(waiting, Counting())] == [0, 1, 2, 3, 4]
    assert Counting.calls == 0
    assert [s.request_id for s in LPM(threshold=5).order(waiting, Counting())] == [4, 3, 2, 1, 0]
    assert Counting.calls == 5


def test_make_policy() -> None:
    assert isinstance(make_policy("fcfs"), FCFS)
    assert isinstance(make_policy("lpm"), LPM)
    assert isinstance(make_policy("dfs-weight"), DFSWeight)
    mine = LPM(threshold=3)
    assert make_policy(mine) is mine
    assert isinstance(mine, SchedulingPolicy)
    for bad in ("LPM", "dfs_weight", "", "random"):
        with pytest.raises(InvalidRequestError, match="'fcfs', 'lpm', 'dfs-weight'"):
            make_policy(bad)
    for bad in (None, 3, object()):
        with pytest.raises(InvalidRequestError, match=r"order\(waiting, cache\)"):
            make_policy(bad)  # type: ignore[arg-type]


def test_checked_order_refuses_a_result_that_is_not_a_permutation() -> None:
    waiting = [seq(i, [1, 2], 0.0) for i in range(3)]

    class Drops:
        name = "drops"

        def order(self, waiting, cache):
            return waiting[:-1]

    class Repeats:
        name = "repeats"

        def order(self, waiting, cache):
            return [waiting[0], waiting[0], waiting[1]]

    assert checked_order(LPM(), waiting, None) == waiting
    for bad in (Drops(), Repeats()):
        with pytest.raises(InvalidRequestError, match="exactly once"):
            checked_order(bad, waiting, None)

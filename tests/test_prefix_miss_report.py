"""explain_miss: every prompt token in exactly one MissReport bucket, on every cache, with no side effects."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minikv.errors import InvalidRequestError
from minikv.prefix import BlockHashCache, NoPrefixCache, RadixCache
from minikv.prefix.ghost import GhostList
from minikv.prefix.report import MissReport

BS = 4
P8 = [1, 2, 3, 4, 5, 6, 7, 8]
CACHES = {
    "hash": lambda n, **kw: BlockHashCache(n, BS, **kw),
    "radix": lambda n, **kw: RadixCache(n, BS, **kw),
    "radix page 1": lambda n, **kw: RadixCache(n, BS, page_size=1, **kw),
}


def run(cache, tokens: list[int], salt: str | None = None) -> MissReport:  # noqa: ANN001
    """One request the engine's way; returns its report, taken right after match."""
    m = cache.match(tokens, salt)
    report = cache.explain_miss(tokens, salt, m.num_cached_tokens)
    table = [*m.block_ids, *cache.allocate(-(-len(tokens) // BS) - len(m.block_ids))]
    cache.insert(tokens, table, salt)
    cache.release(table)
    return report


# Hand-made cases: (cache kind, expected report) for each bucket.
FRESH = {"hash": MissReport(partial_block=2, never_seen=8), "radix": MissReport(partial_block=2, never_seen=8),
         "radix page 1": MissReport(never_seen=10)}  # fmt: skip
AGAIN = {"hash": MissReport(hit=4, last_token=1, partial_block=3), "radix": MissReport(hit=4, last_token=1, partial_block=3),
         "radix page 1": MissReport(hit=7, last_token=1)}  # fmt: skip
GONE = {"hash": MissReport(evicted=8, partial_block=1), "radix": MissReport(evicted=8, partial_block=1),
        "radix page 1": MissReport(evicted=8, never_seen=1)}  # fmt: skip
SALTED = {"hash": MissReport(other_salt=8, partial_block=1), "radix": MissReport(other_salt=8, partial_block=1),
          "radix page 1": MissReport(other_salt=8, never_seen=1)}  # fmt: skip


@pytest.mark.parametrize("kind", list(CACHES))
def test_never_seen_partial_block_and_last_token(kind: str) -> None:
    cache = CACHES[kind](16)
    assert run(cache, list(range(10, 20))) == FRESH[kind]
    run(cache, P8)
    assert run(cache, P8) == AGAIN[kind]  # the whole prompt is cached: the last-token rule costs


@pytest.mark.parametrize("kind", list(CACHES))
def test_evicted_is_remembered_and_a_zero_ghost_forgets(kind: str) -> None:
    for ghost_size, expect in ((None, GONE[kind]), (0, None)):
        cache = CACHES[kind](16, ghost_size=ghost_size)
        run(cache, P8)
        assert cache.evict(16) == 2
        report = run(cache, P8 + [9])
        if expect is not None:
            assert report == expect
        else:
            assert report.evicted == 0 and report.never_seen == (9 if kind == "radix page 1" else 8)


@pytest.mark.parametrize("kind", list(CACHES))
def test_other_salt_while_cached_and_after_eviction(kind: str) -> None:
    cache = CACHES[kind](16)
    run(cache, P8, salt="x")
    assert run(cache, P8 + [9], salt="y") == SALTED[kind]
    cache = CACHES[kind](16)
    run(cache, P8, salt="x")
    cache.evict(16)
    assert run(cache, P8 + [9], salt=None).other_salt == 8


@pytest.mark.parametrize("kind", list(CACHES))
def test_bad_hit_counts_are_refused(kind: str) -> None:
    cache = CACHES[kind](8)
    with pytest.raises(InvalidRequestError, match="num_cached_tokens"):
        cache.explain_miss(P8, None, 8)  # a hit always leaves the last token
    with pytest.raises(InvalidRequestError, match="num_cached_tokens"):
        cache.explain_miss(P8, None, -1)


def test_no_prefix_cache_never_saw_anything() -> None:
    cache = NoPrefixCache(8, BS)
    assert cache.explain_miss(P8, None, 0) == MissReport(never_seen=8)
    assert cache.explain_miss([], None, 0) == MissReport()
    with pytest.raises(InvalidRequestError):
        cache.explain_miss(P8, None, 4)


def test_ghost_list_is_bounded_oldest_first() -> None:
    g = GhostList(3)
    for k in range(5):
        g.add(k, "s" if k % 2 else None)
    assert len(g) == 3 and 1 not in g and g.has(2, None) and g.has(3, "s")
    assert g.other_salt(3, None) and not g.other_salt(3, "s")
    g.discard(3, "s")
    assert 3 not in g
    with pytest.raises(InvalidRequestError):
        GhostList(-1)


PREFIXES = [[], [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 9, 9, 9, 9, 9], [7] * 10]
REQUESTS = st.lists(
    st.tuples(st.integers(0, 3), st.lists(st.integers(0, 3), max_size=6), st.sampled_from([None, "a"]),
              st.integers(0, 4)),
    min_size=5, max_size=30,
)  # fmt: skip


def snapshot(cache) -> tuple:  # noqa: ANN001
    return cache.stats(), [cache.ref_count(b) for b in range(cache.num_blocks)]


@pytest.mark.parametrize("kind", [*CACHES, "none"])
@settings(max_examples=40, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(requests=REQUESTS)
def test_buckets_sum_to_the_prompt_and_explaining_changes_nothing(kind: str, requests: list[tuple]) -> None:
    cache = NoPrefixCache(12, BS) if kind == "none" else CACHES[kind](12, policy="lru")
    for prefix, suffix, salt, evict in requests:
        tokens = PREFIXES[prefix] + suffix
        if not tokens:
            continue
        m = cache.match(tokens, salt)
        before = snapshot(cache)
        report = cache.explain_miss(tokens, salt, m.num_cached_tokens)
        assert report == cache.explain_miss(tokens, salt, m.num_cached_tokens)
        assert snapshot(cache) == before  # no refs, no stats, no eviction order touched
        assert report.total == len(tokens) and report.hit == m.num_cached_tokens
        assert min(report.as_dict().values()) >= 0 and report.last_token <= 1
        if kind == "none":
            assert report == MissReport(never_seen=len(tokens))
        table = [*m.block_ids, *cache.allocate(-(-len(tokens) // BS) - len(m.block_ids))]
        cache.insert(tokens, table, salt)
        cache.release(table)
        cache.evict(evict)
        if kind.startswith("radix"):
            cache.check_invariants()


@pytest.mark.parametrize("kind", list(CACHES))
def test_a_seeded_stream_fills_every_bucket(kind: str) -> None:
    import random

    rng = random.Random(5)
    cache = CACHES[kind](10)
    total = MissReport()
    for _ in range(300):
        tokens = PREFIXES[rng.randrange(1, 4)] + [rng.randrange(4) for _ in range(rng.randrange(4))]
        if rng.random() < 0.2:
            tokens = tokens[:BS * (len(tokens) // BS)] or tokens  # ends on a block boundary
        report = run(cache, tokens, rng.choice([None, "a"]))
        assert report.total == len(tokens)
        total += report
    counts = total.as_dict()
    if kind == "radix page 1":  # token-granular with copy-on-write: no partial blocks
        assert counts.pop("partial_block") == 0
    assert min(counts.values()) > 0, total

"""Eviction policies behind one interface: both caches take policy=, and each policy does what it says."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_prefix_radix_props import BS, OPS, SETTINGS, Sim

from minikv.errors import InvalidRequestError, KVCacheFull
from minikv.prefix import BlockHashCache, RadixCache, chain_block_hashes, make_prefix_cache, max_cached_blocks
from minikv.prefix.policies import EVICTION_POLICIES, Dueling, resolve_policy
from minikv.workloads import belady_hit_tokens, multi_turn_trace, percent_of_optimum, replay

NEW = ["lfu", "slru", "shallow", "duel"]


def run_request(cache, tokens: list[int], salt: str | None = None) -> list[int]:  # noqa: ANN001
    m = cache.match(tokens, salt)
    table = [*m.block_ids, *cache.allocate(-(-len(tokens) // BS) - len(m.block_ids))]
    cache.insert(tokens, table, salt)
    return table


@pytest.mark.parametrize("kind", ["hash", "radix"])
@pytest.mark.parametrize("policy", list(EVICTION_POLICIES))
def test_every_policy_on_both_caches_through_the_factory(kind: str, policy: str) -> None:
    cache = make_prefix_cache(kind, 6, BS, policy=policy)
    assert cache.policy.name == policy
    trace = [[i // 2 % 3] * 9 + [i] for i in range(30)]  # three prefixes of 2 blocks, each twice in a row
    hits = replay(cache, trace)
    s = cache.stats()
    assert s.num_used == 0 and s.num_evictable + s.num_free == 6 and s.evictions > 0
    assert sum(hits) > 0


def test_unknown_policy_names_the_choices() -> None:
    for kind in ("hash", "radix"):
        with pytest.raises(InvalidRequestError, match="'lru', 'lfu', 'slru', 'shallow', 'duel'"):
            make_prefix_cache(kind, 4, BS, policy="arc")


@pytest.mark.parametrize("cls", [BlockHashCache, RadixCache])
def test_slru_evicts_never_hit_blocks_before_hit_ones_lru_does_not(cls) -> None:  # noqa: ANN001
    reused, one_off = [1, 1, 1, 1, 2, 2, 2, 2, 0], [5, 5, 5, 5, 6, 6, 6, 6, 0]
    kept = {}
    for policy in ("lru", "slru"):
        cache = cls(8, BS, policy=policy)
        cache.release(run_request(cache, reused))
        cache.release(run_request(cache, reused))  # hit once
        cache.release(run_request(cache, one_off))  # newer, never hit
        cache.evict(2)
        kept[policy] = "reused" if cache.match(reused).num_cached_tokens else "one-off"
    assert kept == {"lru": "one-off", "slru": "reused"}


def test_lfu_on_the_hash_cache_keeps_the_popular_prefix() -> None:
    popular, fresh = [1, 1, 1, 1, 2, 2, 2, 2, 0], [5, 5, 5, 5, 6, 6, 6, 6, 0]
    kept = {}
    for policy in ("lru", "lfu"):
        cache = BlockHashCache(8, BS, policy=policy)
        for _ in range(4):
            cache.release(run_request(cache, popular))
        cache.release(run_request(cache, fresh))
        cache.evict(2)
        kept[policy] = "popular" if cache.match(popular).num_cached_tokens else "fresh"
    assert kept == {"lru": "fresh", "lfu": "popular"}


@pytest.mark.parametrize("cls", [BlockHashCache, RadixCache])
def test_duel_turns_a_round_robin_loop_from_thrash_into_near_optimal(cls) -> None:  # noqa: ANN001
    trace = multi_turn_trace(30, 6, user_len=(4, 12), reply_len=(8, 24), interleave="round-robin", seed=2)
    cap = 120
    opt = belady_hit_tokens(trace, cap, BS)
    lru = replay(cls(cap, BS), trace)
    duel_cache = cls(cap, BS, policy="duel")
    duel = replay(duel_cache, trace)
    assert percent_of_optimum(lru, opt) < 20 and percent_of_optimum(duel, opt) > 80
    assert duel_cache.policy.keep_old and duel_cache.policy.generation >= 1


def test_duel_stays_with_lru_on_traffic_that_repeats_soon() -> None:
    cache = RadixCache(16, BS, policy="duel")
    for i in range(40):
        cache.release(run_request(cache, [i % 2] * 12 + [i]))
    assert not cache.policy.keep_old and cache.policy.scores[0] > 0


def test_each_cache_gets_its_own_copy_of_a_stateful_policy() -> None:
    shared = Dueling()
    a, b = RadixCache(8, BS, policy=shared), BlockHashCache(12, BS, policy=shared)
    assert a.policy is not b.policy and (a.policy.capacity, b.policy.capacity) == (8, 12)
    assert resolve_policy("duel").capacity == 0  # sized by the cache that binds it


@pytest.mark.parametrize(("page", "policy"), [(BS, p) for p in NEW] + [(1, "slru"), (1, "duel")])
@settings(max_examples=40, **SETTINGS)
@given(ops=OPS)
def test_radix_invariants_hold_under_every_policy(page: int, policy: str, ops: list[tuple]) -> None:
    sim = Sim(RadixCache(12, BS, page_size=page, policy=policy))
    for op in ops:
        sim.run(op)
    sim.finish_all()


PROMPTS = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 20, 21], [30, 31, 32, 33, 34, 35, 36, 37, 38]]


@pytest.mark.parametrize("policy", NEW)
@settings(max_examples=40, **SETTINGS)
@given(ops=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 2), st.lists(st.integers(0, 3), max_size=6),
                              st.sampled_from([None, "a"])), min_size=10, max_size=50))  # fmt: skip
def test_hash_cache_under_a_policy_heap(policy: str, ops: list[tuple]) -> None:
    """Random starts, finishes and evictions: hits are right, counts add up, held blocks never move."""
    n = 10
    cache = BlockHashCache(n, BS, policy=policy)
    live: list[tuple[list[int], str | None, list[int]]] = []
    for what, k, suffix, salt in ops:
        if what < 5:  # start a request
            tokens = PROMPTS[k] + suffix
            m = cache.match(tokens, salt)
            hashes = chain_block_hashes(tokens, BS, salt)
            assert len(m.block_ids) <= max_cached_blocks(len(tokens), BS)
            assert [cache.block_hash(b) for b in m.block_ids] == hashes[: len(m.block_ids)]
            need = -(-len(tokens) // BS) - len(m.block_ids)
            if need > cache.num_allocatable:
                with pytest.raises(KVCacheFull):
                    cache.allocate(need)
                cache.release(m.block_ids)
                continue
            new = cache.allocate(need)
            held = {b for _, _, t in live for b in t}
            assert not held & set(new)
            table = [*m.block_ids, *new]
            cache.insert(tokens, table, salt)
            live.append((tokens, salt, table))
        elif what < 8 and live:
            cache.release(live.pop(k % len(live))[2])
        else:
            cache.evict(k % 3)
        s = cache.stats()
        refs = Counter(b for _, _, t in live for b in t)
        assert all(cache.ref_count(b) == refs[b] for b in range(n))
        assert s.num_used == len(refs) and s.num_used + s.num_evictable + s.num_free == n
        assert cache.num_allocatable == s.num_evictable + s.num_free
    for _, _, table in live:
        cache.release(table)
    assert cache.stats().num_used == 0


def test_long_seeded_stream_of_the_hash_heap_evicts_and_hits() -> None:
    rng = random.Random(7)
    cache = BlockHashCache(12, BS, policy="slru")
    for _ in range(600):
        p = PROMPTS[rng.randrange(3)] + [rng.randrange(4) for _ in range(rng.randrange(5))]
        cache.release(run_request(cache, p, rng.choice([None, "a"])))
    s = cache.stats()
    assert s.evictions > 50 and s.hit_tokens > 0 and s.num_used == 0

"""Synthetic traces: deterministic, with the sharing each generator documents; the ideal hit
rate against brute force; caches that fit hit exactly the ideal when replayed."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minikv.errors import InvalidRequestError, KVCacheFull
from minikv.prefix import BlockHashCache, RadixCache
from minikv.workloads import (
    TRACE_KINDS,
    PrefixTrie,
    blocks_to_fit,
    branching_trace,
    few_shot_trace,
    ideal_hit_rate,
    ideal_hit_tokens,
    make_trace,
    multi_turn_trace,
    replay,
    skewed_trace,
    system_prompt_trace,
)


def lcp(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def brute_ideal(trace, block_size=None, salts=None) -> list[int]:
    """The definition, O(n^2): best LCP with an earlier same-salt prompt, last-token rule, blocks."""
    out = []
    for i, p in enumerate(trace):
        salt = None if salts is None else salts[i]
        earlier = [q for j, q in enumerate(trace[:i]) if (None if salts is None else salts[j]) == salt]
        hit = max(0, min(max((lcp(list(p), list(q)) for q in earlier), default=0), len(p) - 1))
        out.append(hit - hit % block_size if block_size else hit)
    return out


def parent_index(trace: list[list[int]], i: int) -> int | None:
    """The longest earlier prompt that is a strict prefix of prompt ``i``."""
    p = trace[i]
    best = None
    for j in range(i):
        q = trace[j]
        if len(q) < len(p) and p[: len(q)] == q and (best is None or len(q) > len(trace[best])):
            best = j
    return best


SMALL = {
    "system": lambda seed: system_prompt_trace(30, 40, (3, 12), seed=seed),
    "multi-turn": lambda seed: multi_turn_trace(6, 4, (3, 9), (5, 11), system_len=13, seed=seed),
    "few-shot": lambda seed: few_shot_trace(30, 12, 4, 3, (5, 11), (3, 7), 9, seed=seed),
    "branching": lambda seed: branching_trace(2, 2, 3, 21, (3, 11), seed=seed),
    "skewed": lambda seed: skewed_trace(40, 8, (10, 40), (2, 8), seed=seed),
}

# ------------------------------------------------------------------- determinism


@pytest.mark.parametrize("kind", list(TRACE_KINDS))
def test_traces_are_deterministic_per_seed(kind: str) -> None:
    a, b, c = make_trace(kind, 60, seed=3), make_trace(kind, 60, seed=3), make_trace(kind, 60, seed=4)
    assert a == b and a != c
    assert len(a) == 60
    assert all(isinstance(t, int) and 0 <= t < 49152 for p in a for t in p)


def test_make_trace_rejects_unknown_kind() -> None:
    with pytest.raises(InvalidRequestError, match="unknown trace 'chat'"):
        make_trace("chat", 10)


def test_small_vocab_and_bad_lengths() -> None:
    trace = system_prompt_trace(50, 5, 3, vocab=4)  # heads run out: still valid ids
    assert all(0 <= t < 4 for p in trace for t in p)
    with pytest.raises(InvalidRequestError, match="question_len"):
        system_prompt_trace(3, 5, (4, 2))


# ------------------------------------------------------------- sharing structure


def test_system_prompt_trace_shares_exactly_the_system_prompt() -> None:
    trace = system_prompt_trace(40, 37, (5, 20), seed=1)
    assert all(5 <= len(p) - 37 <= 20 for p in trace)
    for p, q in itertools.combinations(trace, 2):
        assert lcp(p, q) == 37
    assert ideal_hit_tokens(trace) == [0] + [37] * 39
    assert ideal_hit_tokens(trace, block_size=16) == [0] + [32] * 39


def test_fresh_segments_never_share_a_first_token_while_the_vocab_lasts() -> None:
    # With 64 token ids, 40 random questions would share a first token by chance (p > 0.99).
    trace = system_prompt_trace(40, 5, (1, 4), vocab=64, seed=0)
    assert all(lcp(p, q) == 5 for p, q in itertools.combinations(trace, 2))


def test_multi_turn_trace_each_turn_extends_the_previous_one() -> None:
    n_conv, turns = 7, 5
    trace = multi_turn_trace(n_conv, turns, user_len=(4, 9), reply_len=(6, 12), system_len=11, seed=2)
    assert len(trace) == n_conv * turns
    parents = [parent_index(trace, i) for i in range(len(trace))]
    firsts = [i for i, par in enumerate(parents) if par is None]
    assert len(firsts) == n_conv  # one first turn per conversation, all others extend an earlier one
    children = Counter(par for par in parents if par is not None)
    assert max(children.values()) == 1  # a conversation is a chain, not a tree
    for i, par in enumerate(parents):
        if par is not None:  # previous prompt + reply + user message
            assert 6 + 4 <= len(trace[i]) - len(trace[par]) <= 12 + 9
    for a, b in itertools.combinations(firsts, 2):
        assert lcp(trace[a], trace[b]) == 11  # conversations share the system prompt only
    # The ideal hit of a later turn is its whole previous prompt.
    ideal = ideal_hit_tokens(trace)
    assert all(ideal[i] == len(trace[par]) for i, par in enumerate(parents) if par is not None)


def test_multi_turn_conversations_are_interleaved() -> None:
    trace = multi_turn_trace(10, 3, seed=0)
    parents = [parent_index(trace, i) for i in range(len(trace))]
    # Some turn comes right after another conversation's turn, not its own previous one.
    assert any(par is not None and par != i - 1 for i, par in enumerate(parents))


def test_few_shot_trace_uses_a_few_fixed_orders_of_pool_examples() -> None:
    header, ex, q, shots = 9, 7, 5, 4
    trace = few_shot_trace(60, n_examples_pool=10, shots=shots, n_orders=3, example_len=ex,
                           question_len=q, header_len=header, seed=5)  # fmt: skip
    assert all(len(p) == header + shots * ex + q for p in trace)
    assert len({tuple(p[:header]) for p in trace}) == 1  # one shared header
    prefixes = {tuple(p[:-q]) for p in trace}
    assert len(prefixes) == 3  # every order is used
    examples = set()
    for pre in prefixes:
        chunks = [pre[header + k * ex : header + (k + 1) * ex] for k in range(shots)]
        assert len(set(chunks)) == shots  # an order never repeats an example
        examples |= set(chunks)
    assert len(examples) <= 10  # all from the pool
    for p, r in itertools.combinations(trace, 2):  # same order: all but the question is shared
        same = p[:-q] == r[:-q]
        assert (lcp(p, r) == len(p) - q) == same
        if not same:  # different orders: the header plus whole common leading examples
            assert (lcp(p, r) - header) % ex == 0


@pytest.mark.parametrize("order", ["bfs", "dfs"])
def test_branching_trace_is_a_tree_per_root(order: str) -> None:
    n_trees, b, depth = 2, 3, 2
    trace = branching_trace(n_trees, b, depth, root_len=15, step_len=(3, 6), order=order, seed=4)
    assert len(trace) == n_trees * (1 + b + b * b)
    parents = [parent_index(trace, i) for i in range(len(trace))]
    roots = [i for i, par in enumerate(parents) if par is None]
    assert roots == [0, 1] and lcp(trace[0], trace[1]) == 0  # interleaved, nothing shared
    kids = Counter(par for par in parents if par is not None)
    assert sorted(kids.values()) == [b] * (n_trees * (1 + b))  # every inner node has b children
    for i, par in enumerate(parents):
        if par is not None:
            assert 3 <= len(trace[i]) - len(trace[par]) <= 6
    levels = [0] * len(trace)
    for i, par in enumerate(parents):
        levels[i] = 0 if par is None else levels[par] + 1
    tree0 = [levels[i] for i in range(0, len(trace), n_trees)]
    if order == "bfs":
        assert tree0 == sorted(tree0)
    else:
        assert tree0[: depth + 1] == list(range(depth + 1))  # straight down the first branch


def test_skewed_trace_popular_prefixes_dominate() -> None:
    plen, n_prefixes = 12, 50
    trace = skewed_trace(3000, n_prefixes, plen, (2, 5), alpha=1.0, seed=6)
    counts = Counter(tuple(p[:plen]) for p in trace).most_common()
    assert len(counts) <= n_prefixes
    harmonic = sum(1 / (i + 1) for i in range(n_prefixes))
    assert counts[0][1] / 3000 == pytest.approx(1 / harmonic, rel=0.15)  # ~22% for the top one
    assert counts[0][1] > 20 * counts[-1][1]
    flat = Counter(tuple(p[:plen]) for p in skewed_trace(3000, n_prefixes, plen, 3, alpha=0.0))
    assert max(flat.values()) < 3 * min(flat.values())


# -------------------------------------------------------------------- ideal hits


@pytest.mark.parametrize("kind", list(SMALL))
@pytest.mark.parametrize("block_size", [None, 1, 4, 16])
def test_ideal_matches_brute_force_on_each_shape(kind: str, block_size: int | None) -> None:
    trace = SMALL[kind](7)
    assert ideal_hit_tokens(trace, block_size) == brute_ideal(trace, block_size)


@settings(max_examples=150, derandomize=True, database=None, deadline=None)
@given(
    trace=st.lists(st.lists(st.integers(0, 2), max_size=10), max_size=14),
    salt_ids=st.lists(st.sampled_from([None, "a", "b"]), min_size=14, max_size=14),
    block_size=st.sampled_from([None, 1, 2, 3]),
)
def test_ideal_matches_brute_force_on_random_traces(trace, salt_ids, block_size) -> None:
    # A 3-token vocabulary: duplicates, prefixes of earlier prompts and mid-edge splits galore.
    salts = salt_ids[: len(trace)]
    assert ideal_hit_tokens(trace, block_size, salts) == brute_ideal(trace, block_size, salts)
    assert ideal_hit_tokens(trace, block_size) == brute_ideal(trace, block_size)


def test_ideal_edge_cases() -> None:
    assert ideal_hit_tokens([]) == [] and ideal_hit_rate([]) == 0.0
    assert ideal_hit_tokens([[], [], [5], [5], (5, 6), [5, 6, 7]]) == [0, 0, 0, 0, 1, 2]
    assert ideal_hit_tokens([[1, 2, 3], [1, 2, 3]], salts=["x", "y"]) == [0, 0]
    assert ideal_hit_rate([[1, 2, 3, 4], [1, 2, 3, 4]]) == 3 / 8
    with pytest.raises(InvalidRequestError, match="one salt per request"):
        ideal_hit_tokens([[1]], salts=[])
    with pytest.raises(InvalidRequestError, match="block_size"):
        ideal_hit_tokens([[1]], block_size=0)


def test_trie_stays_compressed() -> None:
    trie = PrefixTrie()
    trace = make_trace("system", 300)
    for p in trace:
        trie.add(p)
    assert trie.num_edges <= 2 * len(trace)  # one leaf and at most one split per prompt


# ------------------------------------------------------------ replay vs the ideal


CACHES = {
    "hash-sha256": lambda nb, bs: BlockHashCache(nb, bs, hash_fn="sha256"),
    "hash-xxh3": lambda nb, bs: BlockHashCache(nb, bs, hash_fn="xxh3_128"),
    "radix-block": lambda nb, bs: RadixCache(nb, bs),
    "radix-token": lambda nb, bs: RadixCache(nb, bs, page_size=1),
}


@pytest.mark.parametrize("kind", list(TRACE_KINDS))
@pytest.mark.parametrize("cache_kind", list(CACHES))
def test_caches_that_fit_hit_exactly_the_ideal(kind: str, cache_kind: str) -> None:
    bs = 16
    trace = make_trace(kind, 150, seed=11)
    cache = CACHES[cache_kind](blocks_to_fit(trace, bs), bs)
    hits = replay(cache, trace)
    ideal = ideal_hit_tokens(trace, None if cache_kind == "radix-token" else bs)
    assert hits == ideal
    s = cache.stats()
    assert s.hit_tokens == sum(ideal) and s.evictions == 0 and s.num_used == 0
    if isinstance(cache, RadixCache):
        cache.check_invariants()


@pytest.mark.parametrize("cache_kind", list(CACHES))
def test_salted_replay_hits_the_salted_ideal(cache_kind: str) -> None:
    bs = 4
    trace = SMALL["few-shot"](1) + SMALL["skewed"](1)
    salts = [("tenant-a", "tenant-b", None)[i % 3] for i in range(len(trace))]
    cache = CACHES[cache_kind](blocks_to_fit(trace, bs), bs)
    ideal = ideal_hit_tokens(trace, None if cache_kind == "radix-token" else bs, salts)
    assert replay(cache, trace, salts) == ideal
    assert ideal != ideal_hit_tokens(trace, None if cache_kind == "radix-token" else bs)


@pytest.mark.parametrize("cache_kind", list(CACHES))
def test_a_tight_cache_never_beats_the_ideal(cache_kind: str) -> None:
    bs = 16
    trace = make_trace("skewed", 120, seed=2)
    cache = CACHES[cache_kind](80, bs)  # the longest prompt needs 68 blocks
    times: dict[str, float] = {}
    hits = replay(cache, trace, timings=times)
    ideal = ideal_hit_tokens(trace, None if cache_kind == "radix-token" else bs)
    assert all(h <= i for h, i in zip(hits, ideal))
    assert sum(hits) < sum(ideal) and cache.stats().evictions > 0
    assert set(times) == {"match", "allocate", "insert", "release"}
    assert all(t >= 0 for t in times.values())


@pytest.mark.parametrize("cache_kind", list(CACHES))
def test_replay_of_a_request_too_big_leaves_nothing_held(cache_kind: str) -> None:
    cache = CACHES[cache_kind](4, 4)
    with pytest.raises(KVCacheFull, match="request 2"):
        replay(cache, [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7], list(range(1, 30))])
    assert cache.stats().num_used == 0

"""The radix cache under random request streams (hypothesis, derandomized; seeded long runs).

Two families:

1. No eviction (a big pool): the same stream drives a BlockHashCache, a
   radix cache at page = block size and one at page size 1. The first two
   report exactly the same hit per request; page size 1 reports the true
   longest common prefix with any earlier request (brute force over the
   history, last-token rule applied), never less than the block hit. The
   tree stores each distinct prefix once.
2. Eviction (a small pool), for several page sizes and both policies, against
   a shadow map of which (salt, prefix tokens) each block holds. After every
   operation: the cache's own invariant check passes; ref counts equal the
   live requests' holdings; nodes locked before an operation are still in the
   tree after it; allocate never hands out a held or cached block and fails
   without changing anything; every hit's blocks (and a copy's source) hold
   exactly the request's prefix; every tree node points at blocks holding its
   path's tokens; cached K/V is only ever extended, never overwritten. When
   all requests finish, all locks and refs are 0 and every block is free or
   evictable.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minikv.errors import KVCacheFull
from minikv.kv import cdiv
from minikv.prefix import BlockHashCache, RadixCache
from minikv.prefix.radix import RadixNode

BS = 4
PREFIXES = [
    [],
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    [1, 2, 3, 4, 5, 6, 20, 21, 22],
    [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42],
]
SALTS = [None, "a", "b"]

TOK = st.integers(0, 3)
SALT = st.sampled_from(SALTS)
PREFIX = st.integers(0, len(PREFIXES) - 1)
SHARED_PREFIX = st.integers(1, len(PREFIXES) - 1)
START = st.just("start")
OPS = st.lists(
    st.one_of(
        st.tuples(START, PREFIX, st.lists(TOK, max_size=9), SALT, st.booleans()),
        st.tuples(START, SHARED_PREFIX, st.lists(TOK, max_size=3), SALT, st.just(True)),
        st.tuples(st.just("decode"), st.integers(0, 7), st.lists(TOK, min_size=1, max_size=6)),
        st.tuples(st.just("finish"), st.integers(0, 7)),
        st.tuples(st.just("evict"), st.integers(0, 3)),
        st.tuples(st.just("reset")),
    ),
    min_size=20,
    max_size=60,
)
SETTINGS = dict(
    derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def lcp(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def best_lcp(tokens: list[int], salt: str | None, history: list, page: int = 1) -> int:
    """Longest common prefix with any earlier sequence of that salt (whole pages of it indexed)."""
    return max(
        (lcp(tokens, h[: len(h) - len(h) % page]) for s, h in history if s == salt), default=0
    )


# ------------------------------------------------------------- 1. no eviction


@dataclass
class Live:
    tokens: list[int]
    salt: str | None
    tables: dict[str, list[int]]


@settings(max_examples=150, **SETTINGS)
@given(ops=OPS)
def test_no_eviction_streams_match_the_hash_cache_and_the_true_lcp(ops: list[tuple]) -> None:
    """See the module docstring, family 1 (evict and reset ops are skipped here)."""
    caches = {
        "hash": BlockHashCache(600, BS),
        "radix": RadixCache(600, BS),
        "radix1": RadixCache(600, BS, page_size=1),
    }
    history: list[tuple[str | None, list[int]]] = []
    live: list[Live] = []
    for op in ops:
        if op[0] == "start":
            _, p, suffix, salt, _ = op
            tokens = (PREFIXES[p] + suffix) or [0]
            true_lcp = best_lcp(tokens, salt, history)
            hits = {}
            req = Live(tokens, salt, {})
            for name, c in caches.items():
                if isinstance(c, RadixCache):
                    expect = best_lcp(tokens, salt, history, c.page_size)
                    assert c.longest_prefix(tokens, salt) == expect
                m = c.match(tokens, salt)
                hits[name] = m.num_cached_tokens
                rest = c.allocate(cdiv(len(tokens), BS) - len(m.block_ids))
                req.tables[name] = list(m.block_ids) + rest
                c.insert(tokens, req.tables[name], salt)
            assert hits["radix"] == hits["hash"]
            assert hits["radix1"] == min(true_lcp, len(tokens) - 1) >= hits["hash"]
            live.append(req)
            history.append((salt, list(tokens)))
        elif op[0] == "decode" and live:
            req = live[op[1] % len(live)]
            req.tokens += op[2]
            for name, c in caches.items():
                t = req.tables[name]
                t += c.allocate(cdiv(len(req.tokens), BS) - len(t))
                c.insert(req.tokens, t, req.salt)
            history.append((req.salt, list(req.tokens)))
        elif op[0] == "finish" and live:
            req = live.pop(op[1] % len(live))
            for name, c in caches.items():
                c.release(req.tables[name])
    for c in caches.values():
        assert c.stats().evictions == 0
        if isinstance(c, RadixCache):
            c.check_invariants()
            prefixes = {
                (s, tuple(h[:i]))
                for s, h in history
                for i in range(c.page_size, len(h) + 1, c.page_size)
            }
            assert c.num_tree_tokens() == c.page_size * len(prefixes)  # each prefix once
    s_hash, s_radix = caches["hash"].stats(), caches["radix"].stats()
    assert s_hash.query_tokens == s_radix.query_tokens
    assert s_hash.hit_tokens == s_radix.hit_tokens
    assert s_hash.num_cached == s_radix.num_cached


# ------------------------------------------------------------ 2. under eviction


@dataclass
class Req:
    tokens: list[int]
    table: list[int]
    salt: str | None


@dataclass
class Sim:
    """Drives a radix cache the way an engine would and checks it against a shadow map."""

    cache: RadixCache
    live: list[Req] = field(default_factory=list)
    shadow: dict[int, tuple[str | None, tuple[int, ...]]] = field(default_factory=dict)
    query_tokens: int = 0
    hit_tokens: int = 0

    @property
    def n(self) -> int:
        return self.cache.num_blocks

    def held(self) -> Counter[int]:
        return Counter(b for r in self.live for b in r.table)

    def cached(self) -> set[int]:
        return {b for b in range(self.n) if self.cache.is_cached(b)}

    def snapshot(self) -> tuple:
        return self.cache.free_blocks(), self.cache.render(), self.cache.stats()

    def path_tokens(self, node: RadixNode) -> tuple[int, ...]:
        parts = []
        while node.parent is not None:
            parts.append(node.tokens)
            node = node.parent
        return tuple(t for part in reversed(parts) for t in part)

    def salt_of(self, node: RadixNode) -> str | None:
        while node.parent is not None:
            node = node.parent
        assert node.namespace is not None
        return node.namespace[0]  # type: ignore[return-value]

    def check(self, locked_before: list[RadixNode], held_cached_before: set[int]) -> None:
        c, held = self.cache, self.held()
        c.check_invariants()
        for b in range(self.n):
            assert c.ref_count(b) == held[b], f"block {b}"
        s = c.stats()
        assert s.num_used + s.num_evictable + s.num_free == self.n
        assert (s.query_tokens, s.hit_tokens) == (self.query_tokens, self.hit_tokens)
        assert all(n.alive for n in locked_before), "a locked node was evicted"
        assert held_cached_before <= self.cached(), "a block in use lost its place in the tree"
        for node in c.nodes():  # every node points at blocks holding its path's tokens
            salt = self.salt_of(node)
            path = self.path_tokens(node)
            for i, b in enumerate(node.block_ids):
                j = node.start // BS + i
                lo, hi = max(node.start, j * BS), min(node.end, (j + 1) * BS)
                s_salt, toks = self.shadow[b]
                assert s_salt == salt and toks[lo:hi] == path[lo:hi], f"node {node} block {b}"

    def write(self, req: Req, start: int) -> None:
        """The model writes K/V of tokens ``start:`` into the request's blocks."""
        n = len(req.tokens)
        for j in range(start // BS, cdiv(n, BS)):
            b = req.table[j]
            assert self.cache.ref_count(b) == 1, f"block {b} is written while shared"
            new = (req.salt, tuple(req.tokens[: min((j + 1) * BS, n)]))
            if self.cache.is_cached(b):
                old = self.shadow[b]
                assert old[0] == new[0], "cached K/V overwritten"
                assert new[1][: len(old[1])] == old[1], "cached K/V overwritten"
            self.shadow[b] = new

    def allocate(self, n: int) -> list[int] | None:
        before = self.snapshot()
        held = set(self.held())
        try:
            new = self.cache.allocate(n)
        except KVCacheFull:
            assert self.cache.num_allocatable < n
            assert self.snapshot() == before, "a failed allocate changed the cache"
            return None
        assert len(new) == n == len(set(new))
        assert not set(new) & held, "allocate handed out a held block"
        assert not set(new) & self.cached(), "allocate handed out a cached block"
        return new

    def start(self, tokens: list[int], salt: str | None, insert_now: bool) -> None:
        c, p = self.cache, self.cache.page_size
        lp = c.longest_prefix(tokens, salt)
        cap = min(lp, len(tokens) - 1)
        cap -= cap % p
        allocatable = c.num_allocatable
        m = c.match(tokens, salt)
        self.query_tokens += len(tokens)
        self.hit_tokens += m.num_cached_tokens
        L = m.num_cached_tokens
        if L != cap:  # only when no block was left for the partial copy: the path's own don't count
            assert L == cap - cap % BS, "hit is not the longest cached prefix"
            path_blocks = {
                b
                for node in c.nodes()
                if self.salt_of(node) == salt and node.end <= cap
                and self.path_tokens(node) == tuple(tokens[: node.end])
                for b in node.block_ids
            }
            assert allocatable <= len(path_blocks)
        assert L <= len(tokens) - 1
        full = L // BS
        if m.copy_from_block is None:
            assert len(m.block_ids) * BS == L
        else:
            assert len(m.block_ids) == full + 1 and m.copy_tokens == L % BS > 0
        for j, b in enumerate(m.block_ids[:full]):
            expected = (salt, tuple(tokens[: (j + 1) * BS]))
            assert self.shadow[b] == expected, "a hit returned wrong K/V"
        new = self.allocate(cdiv(len(tokens), BS) - len(m.block_ids))
        if new is None:
            c.release(m.block_ids)
            return
        req = Req(tokens, list(m.block_ids) + new, salt)
        self.live.append(req)
        if m.copy_from_block is not None:  # copied after allocating: the source is pinned
            s_salt, toks = self.shadow[m.copy_from_block]
            assert s_salt == salt and toks[:L] == tuple(tokens[:L]), "copy source holds wrong K/V"
            self.shadow[m.block_ids[-1]] = (salt, tuple(tokens[:L]))
        self.write(req, L)
        if insert_now:
            self.insert(req)

    def insert(self, req: Req) -> None:
        self.cache.insert(req.tokens, req.table, req.salt)
        p = self.cache.page_size
        n = len(req.tokens) - len(req.tokens) % p
        assert self.cache.longest_prefix(req.tokens, req.salt) >= n

    def decode(self, k: int, new_tokens: list[int]) -> None:
        if not self.live:
            return
        req = self.live[k % len(self.live)]
        old = len(req.tokens)
        new = self.allocate(cdiv(old + len(new_tokens), BS) - len(req.table))
        if new is None:
            return
        req.table += new
        req.tokens = req.tokens + new_tokens
        self.write(req, old)
        self.insert(req)

    def finish(self, k: int) -> None:
        if self.live:
            self.cache.release(self.live.pop(k % len(self.live)).table)

    def run(self, op: tuple) -> None:
        locked = [n for n in self.cache.nodes() if n.lock_ref]
        held_cached = set(self.held()) & self.cached()
        kind = op[0]
        if kind == "start":
            _, p, suffix, salt, insert_now = op
            self.start((PREFIXES[p] + suffix) or [0], salt, insert_now)
        elif kind == "decode":
            self.decode(op[1], op[2])
        elif kind == "finish":
            self.finish(op[1])
        elif kind == "evict":
            evictable = self.cache.stats().num_evictable
            got = self.cache.evict(op[1])
            assert got == min(op[1], evictable)
            assert self.cache.stats().num_evictable == evictable - got
        elif kind == "reset" and not self.live:
            self.cache.reset()
            self.query_tokens = self.hit_tokens = 0
            assert not self.cached() and self.cache.free_blocks() == list(range(self.n))
        self.check(locked, held_cached)

    def finish_all(self) -> None:
        while self.live:
            self.run(("finish", 0))
        c = self.cache
        assert all(n.lock_ref == 0 for n in c.nodes())
        assert all(c.ref_count(b) == 0 for b in range(self.n))
        s = c.stats()
        assert s.num_used == 0 and s.num_free + s.num_evictable == self.n


CONFIGS = [(BS, "lru"), (1, "lru"), (1, "lfu"), (2, "lru")]


@pytest.mark.parametrize(("page", "policy"), CONFIGS)
@settings(max_examples=150, **SETTINGS)
@given(ops=OPS)
def test_random_streams_under_eviction(page: int, policy: str, ops: list[tuple]) -> None:
    sim = Sim(RadixCache(12, BS, page_size=page, policy=policy))
    for op in ops:
        sim.run(op)
    sim.finish_all()


@pytest.mark.parametrize(("page", "policy"), CONFIGS)
def test_long_seeded_stream(page: int, policy: str) -> None:
    """One long stream (seeded), so the pool churns through many evictions and copies."""
    rng = random.Random(1234)
    sim = Sim(RadixCache(12, BS, page_size=page, policy=policy))
    copies = 0
    for _ in range(3000):
        x = rng.random()
        if x < 0.35:
            suffix = [rng.randrange(4) for _ in range(rng.randrange(6))]
            before = sim.cache.stats().hit_tokens
            prefix, salt = rng.randrange(len(PREFIXES)), rng.choice(SALTS)
            sim.run(("start", prefix, suffix, salt, rng.random() < 0.7))
            copies += (sim.cache.stats().hit_tokens - before) % BS != 0
        elif x < 0.6:
            new_tokens = [rng.randrange(4) for _ in range(rng.randint(1, 5))]
            sim.run(("decode", rng.randrange(8), new_tokens))
        elif x < 0.95:
            sim.run(("finish", rng.randrange(8)))
        else:
            sim.run(("evict", rng.randrange(3)))
    s = sim.cache.stats()
    assert s.evictions > 50 and s.hit_tokens > 0
    if page < BS:
        assert copies > 20  # the copy-on-write path really ran
    sim.finish_all()

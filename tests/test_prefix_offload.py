"""The CPU offload tier: the store itself, and both caches' hits against brute-force models of two LRU levels.

The models are written from the rules alone, with lists and linear scans:
the pool (level 1) evicts as each cache does under LRU (the hash cache: the
head of its free queue, released blocks joining the tail last block first;
the radix tree: the least recently used leaf block, deepest first), every
evicted block enters the tier (level 2, LRU, its own capacity, exclusive:
a block lives in one level), and a hit past the pool's continues in the tier.
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minikv.errors import InvalidRequestError
from minikv.kv import KVPool
from minikv.prefix import BlockHashCache, RadixCache, chain_block_hashes
from minikv.prefix.ledger import PrefixCacheError
from minikv.prefix.offload import OffloadTier

BS = 4


def tiny_pool(num_blocks: int, block_size: int = BS) -> KVPool:
    return KVPool(num_layers=2, num_kv_heads=1, head_dim=2, block_size=block_size, num_blocks=num_blocks)


# ------------------------------------------------------------------------------------------ the store


def test_store_and_load_copy_the_blocks_k_and_v_every_layer() -> None:
    pool = tiny_pool(6)
    pool.kv.copy_(torch.randn_like(pool.kv))
    want = pool.kv[:, :, [4, 1]].clone()
    tier = OffloadTier(pool, 3)
    tier.store([("x", 4, "meta-x"), ("y", 1, None)])
    pool.kv[:, :, [4, 1]] = 0.0  # the pool reuses the blocks
    assert tier.get("x") == (True, "meta-x") and tier.get("z") == (False, None)
    out = tier.checkout(["x", "y"])
    tier.load(out, [0, 5])
    assert torch.equal(pool.kv[:, :, [0, 5]], want)
    assert len(tier) == 0 and tier.stats().loaded == 2 and tier.num_checked_out == 0
    tier.check_invariants()


def test_a_full_tier_drops_its_least_recent_block_and_a_burst_keeps_its_last() -> None:
    tier = OffloadTier(tiny_pool(8), 3)
    tier.store([("a", 0, None), ("b", 1, None), ("c", 2, None)])
    tier.store([("d", 3, None)])
    assert tier.keys() == ["b", "c", "d"] and tier.stats().dropped == 1
    tier.store([(k, i, None) for i, k in enumerate("efghi")])  # more than it holds at once
    assert tier.keys() == ["g", "h", "i"] and tier.stats().dropped == 6
    tier.check_invariants()


def test_checked_out_blocks_are_never_pushed_out_and_checkin_puts_them_back() -> None:
    tier = OffloadTier(tiny_pool(8), 2)
    tier.store([("a", 0, None), ("b", 1, None)])
    out = tier.checkout(["a"])
    tier.store([("c", 2, None), ("d", 3, None)])  # one free slot: "a" keeps its own
    assert tier.keys() == ["d"] and tier.num_checked_out == 1
    tier.check_invariants()
    with pytest.raises(PrefixCacheError, match="checked out"):
        tier.reset()
    tier.checkin(out)
    assert tier.keys() == ["d", "a"] and tier.num_checked_out == 0
    tier.check_invariants()


def test_discard_frees_the_slot_and_says_what_it_held() -> None:
    tier = OffloadTier(tiny_pool(4), 2)
    tier.store([("a", 0, 7)])
    assert tier.discard("a") == (True, 7) and tier.discard("a") == (False, None)
    assert len(tier) == 0
    tier.check_invariants()


def test_the_host_buffer_is_one_contiguous_slot_per_block() -> None:
    pool = tiny_pool(4)
    tier = OffloadTier(pool, 5)
    assert tier.host.shape == (5, *pool.kv[:, :, 0].shape) and tier.host.is_contiguous()
    assert tier.host.device.type == "cpu" and tier.memory_bytes == 5 * pool.bytes_per_block


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8", None])
def test_bad_tier_sizes_are_refused(bad: object) -> None:
    with pytest.raises(InvalidRequestError, match="cpu_offload_blocks must be a whole number >= 1"):
        OffloadTier(tiny_pool(4), bad)


def test_bad_tier_uses_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="through a minikv.kv.KVPool"):
        OffloadTier(object(), 4)
    tier = OffloadTier(tiny_pool(4), 2)
    with pytest.raises(PrefixCacheError, match="not in the offload tier"):
        tier.checkout(["nope"])
    tier.store([("a", 0, None)])
    with pytest.raises(InvalidRequestError, match="1 blocks are checked out but 2"):
        tier.load(tier.checkout(["a"]), [0, 1])
    for cls in (BlockHashCache, RadixCache):
        with pytest.raises(InvalidRequestError, match="offload must be an OffloadTier"):
            cls(4, BS, offload="cpu")
        with pytest.raises(InvalidRequestError, match="blocks of 8 tokens but the cache's are 4"):
            cls(4, BS, offload=OffloadTier(tiny_pool(4, block_size=8), 2))


# ------------------------------------------------------------------------------- brute-force models


def block_keys(tokens: list[int]) -> list[tuple[int, ...]]:
    """Each full block's key: the whole prefix up to its end (what the chained hashes stand for)."""
    return [tuple(tokens[: (i + 1) * BS]) for i in range(len(tokens) // BS)]


class Tier2:
    """Level 2: an LRU list of keys, ``capacity`` of them, minus those checked out for a copy back."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.keys, self.out = capacity, [], 0

    def put(self, key: tuple) -> None:
        if key in self.keys:
            self.keys.remove(key)
        self.keys.append(key)
        while len(self.keys) > self.capacity - self.out:
            self.keys.pop(0)

    def take(self, key: tuple) -> None:
        self.keys.remove(key)


class HashModel:
    """The hash cache under LRU with a tier: one free queue of blocks (head first), each with a key or none."""

    def __init__(self, num_blocks: int, tier_blocks: int) -> None:
        self.queue = list(range(num_blocks))
        self.key_of: dict[int, tuple] = {}
        self.block_of: dict[tuple, int] = {}
        self.l2 = Tier2(tier_blocks)

    def _take(self, n: int) -> list[int]:
        out, self.queue = self.queue[:n], self.queue[n:]
        for b in out:
            if b in self.key_of:  # evicted: into the tier
                key = self.key_of.pop(b)
                del self.block_of[key]
                self.l2.put(key)
        return out

    def request(self, tokens: list[int]) -> tuple[int, int]:
        keys, limit = block_keys(tokens), (len(tokens) - 1) // BS
        chain = []
        for key in keys[:limit]:
            if key in self.block_of:
                chain.append((key, True))
            elif key in self.l2.keys:
                chain.append((key, False))
            else:
                break
        for key, in_pool in chain:
            if in_pool:
                self.queue.remove(self.block_of[key])
        loads = [key for key, in_pool in chain if not in_pool]
        for key in loads:
            self.l2.take(key)
        self.l2.out = len(loads)
        fresh = iter(self._take(len(loads)))
        self.l2.out = 0
        table = []
        for key, in_pool in chain:
            b = self.block_of[key] if in_pool else next(fresh)
            self.key_of[b], self.block_of[key] = key, b
            table.append(b)
        table += self._take(-(-len(tokens) // BS) - len(table))
        for key, b in zip(keys, table):
            if b not in self.key_of and key not in self.block_of:  # cached now (a duplicate stays plain)
                self.key_of[b], self.block_of[key] = key, b
                if key in self.l2.keys:
                    self.l2.take(key)
        self.queue += reversed(table)
        return (len(chain) - len(loads)) * BS, len(loads) * BS


class RadixModel:
    """The radix tree (page = block) under LRU with a tier: cached prefix keys with a last-use time each."""

    def __init__(self, num_blocks: int, tier_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.stamp: dict[tuple, int] = {}
        self.held = 0  # blocks a request holds that no key owns yet
        self.clock = 0
        self.l2 = Tier2(tier_blocks)

    def _take(self, n: int, locked: set) -> None:
        short = n - (self.num_blocks - len(self.stamp) - self.held)
        for _ in range(max(0, short)):
            leaves = [k for k in self.stamp if k not in locked
                      and not any(len(c) == len(k) + BS and c[: len(k)] == k for c in self.stamp)]
            victim = min(leaves, key=lambda k: (self.stamp[k], -len(k)))  # LRU leaf, deepest first
            del self.stamp[victim]
            self.l2.put(victim)
        self.held += n

    def request(self, tokens: list[int]) -> tuple[int, int]:
        keys, limit = block_keys(tokens), (len(tokens) - 1) // BS
        self.clock += 1
        hit = 0
        while hit < limit and keys[hit] in self.stamp:
            hit += 1
        run = []
        while hit + len(run) < limit and keys[hit + len(run)] in self.l2.keys:
            run.append(keys[hit + len(run)])
        locked = set(keys[:hit])
        for key in run:
            self.l2.take(key)
        self.l2.out = len(run)
        self._take(len(run), locked)
        self.l2.out = 0
        for key in run:
            self.stamp[key] = self.clock
            locked.add(key)
        self.held -= len(run)
        self._take(-(-len(tokens) // BS) - hit - len(run), locked)
        for key in keys:
            if key not in self.stamp:
                self.held -= 1
                if key in self.l2.keys:
                    self.l2.take(key)
            self.stamp[key] = self.clock
        self.held = 0  # released: the partial last block is free again
        return hit * BS, len(run) * BS


def chat_stream(seed: int, n_requests: int, n_chats: int, max_tokens: int, aligned: bool) -> list[list[int]]:
    """Chats that take turns at random, each prompt its chat's history plus a few tokens; some restart.

    ``aligned=False`` keeps every prompt off a block boundary (see ``test_radix_tier_...``).
    """
    rng = random.Random(seed)
    chats = [[] for _ in range(n_chats)]
    out = []
    for _ in range(n_requests):
        c = rng.randrange(n_chats)
        if len(chats[c]) > max_tokens - 12 or rng.random() < 0.1:
            chats[c] = []  # a new conversation in its place
        chats[c] += [rng.randrange(1, 60) for _ in range(rng.randrange(1, 12))]
        if not aligned and len(chats[c]) % BS == 0:
            chats[c].append(rng.randrange(1, 60))
        out.append(list(chats[c]))
    return out


def run_cache(cache, tier: OffloadTier, stream: list[list[int]]) -> list[tuple[int, int]]:
    """Replay ``stream`` one request at a time (match, allocate, insert, release): (pool, tier) hit tokens each."""
    got = []
    for tokens in stream:
        before = cache.stats().offload_hit_tokens
        peeked = cache.peek(tokens)
        m = cache.match(tokens)
        assert peeked == m.num_cached_tokens
        table = [*m.block_ids, *cache.allocate(-(-len(tokens) // BS) - len(m.block_ids))]
        cache.insert(tokens, table)
        cache.release(table)
        tier_hit = cache.stats().offload_hit_tokens - before
        got.append((m.num_cached_tokens - tier_hit, tier_hit))
        tier.check_invariants()
        assert tier.num_checked_out == 0
    return got


STREAMS = dict(seed=st.integers(0, 2**32 - 1), n_requests=st.integers(1, 40), n_chats=st.integers(1, 6),
               num_blocks=st.integers(8, 24), tier_blocks=st.integers(1, 40))


@settings(max_examples=60, deadline=None)
@given(**STREAMS, hash_fn=st.sampled_from(["sha256", "xxh3_128"]))
def test_hash_tier_hits_equal_the_two_level_lru_model(seed, n_requests, n_chats, num_blocks, tier_blocks, hash_fn):
    stream = chat_stream(seed, n_requests, n_chats, num_blocks * BS, aligned=True)
    tier = OffloadTier(tiny_pool(num_blocks), tier_blocks)
    cache = BlockHashCache(num_blocks, BS, hash_fn=hash_fn, offload=tier)  # xxh3_128 verifies every hit
    model = HashModel(num_blocks, tier_blocks)
    assert run_cache(cache, tier, stream) == [model.request(t) for t in stream]
    assert tier.keys() == [chain_block_hashes(list(k), BS, hash_fn=hash_fn)[-1] for k in model.l2.keys]
    s = cache.stats()
    assert s.num_used == 0 and s.offload_num_cached == len(tier) <= tier_blocks


@settings(max_examples=60, deadline=None)
@given(**STREAMS, page_size=st.sampled_from([BS, 1]))
def test_radix_tier_hits_equal_the_two_level_lru_model(seed, n_requests, n_chats, num_blocks, tier_blocks, page_size):
    """Prompts never end on a block boundary here: then the tree's insert stamps exactly the prompt's
    blocks (one ending mid-edge stamps the whole edge, a finer point the model leaves out)."""
    stream = chat_stream(seed, n_requests, n_chats, num_blocks * BS, aligned=False)
    if page_size == 1:  # token-granular, one block range may be backed by several blocks on a path: more room
        num_blocks *= 2
    tier = OffloadTier(tiny_pool(num_blocks), tier_blocks)
    cache = RadixCache(num_blocks, BS, offload=tier, page_size=page_size, partial_copy=False)
    model = RadixModel(num_blocks, tier_blocks)
    got = run_cache(cache, tier, stream)
    cache.check_invariants()
    if page_size == BS:
        assert got == [model.request(t) for t in stream]
        assert tier.keys() == [chain_block_hashes(list(k), BS)[-1] for k in model.l2.keys]
    assert cache.stats().num_used == 0 and len(tier) <= tier_blocks


@settings(max_examples=40, deadline=None)
@given(**STREAMS)
def test_without_budget_cuts_the_tier_never_changes_what_the_pool_hits(seed, n_requests, n_chats, num_blocks,
                                                                        tier_blocks):
    """A block copied back ends up where a recomputed one would: the pool's own hits are those of no tier."""
    stream = chat_stream(seed, n_requests, n_chats, num_blocks * BS, aligned=True)
    for make in (lambda t: BlockHashCache(num_blocks, BS, offload=t), lambda t: RadixCache(num_blocks, BS, offload=t)):
        tier = OffloadTier(tiny_pool(num_blocks), tier_blocks)
        with_tier = run_cache(make(tier), tier, stream)
        without = run_cache(make(None), tier, stream)
        assert [p for p, _ in with_tier] == [p for p, _ in without]


@settings(max_examples=40, deadline=None)
@given(**STREAMS, kind=st.sampled_from(["hash", "radix", "radix-page1", "radix-page1-copy"]),
       policy=st.sampled_from(["lru", "lfu", "slru", "shallow", "duel"]))
def test_any_policy_and_page_keeps_peek_equal_to_match_and_leaks_nothing(seed, n_requests, n_chats, num_blocks,
                                                                         tier_blocks, kind, policy):
    stream = chat_stream(seed, n_requests, n_chats, num_blocks * BS, aligned=seed % 2 == 0)
    tier = OffloadTier(tiny_pool(2 * num_blocks), tier_blocks)
    if kind == "hash":
        cache = BlockHashCache(2 * num_blocks, BS, policy=policy, offload=tier)
    else:
        page = {"radix": BS}.get(kind, 1)
        cache = RadixCache(2 * num_blocks, BS, page_size=page, partial_copy=kind.endswith("copy"), policy=policy,
                           offload=tier)
    got = run_cache(cache, tier, stream)
    s = cache.stats()
    assert sum(t for _, t in got) == s.offload_hit_tokens and sum(p + t for p, t in got) == s.hit_tokens
    assert s.num_used == 0 and all(cache.ref_count(b) == 0 for b in range(cache.num_blocks))
    if isinstance(cache, RadixCache):
        cache.check_invariants()
    cache.reset()
    assert len(tier) == 0 and tier.stats().stored == 0


@pytest.mark.parametrize("make", [lambda n, t: BlockHashCache(n, BS, offload=t), lambda n, t: RadixCache(n, BS, offload=t),
                                  lambda n, t: RadixCache(n, BS, page_size=1, offload=t)])
def test_the_tier_keeps_salts_apart(make) -> None:
    """Blocks evicted under one salt come back only to that salt (any hashable salt, for the tree)."""
    tier = OffloadTier(tiny_pool(6), 16)
    cache = make(6, tier)
    tokens = list(range(1, 22))  # 5 full blocks + 1: fills the pool, so each request evicts the last
    salts = ["a", "b", 1.5] if isinstance(cache, RadixCache) else ["a", "b", None]
    got = {}
    for salt in [*salts, *salts]:
        m = cache.match(tokens, salt)
        table = [*m.block_ids, *cache.allocate(6 - len(m.block_ids))]
        cache.insert(tokens, table, salt)
        cache.release(table)
        got.setdefault(salt, []).append(m.num_cached_tokens)
    assert all(hits == [0, 20] for hits in got.values()), got  # the second time: all 5 blocks from the tier
    assert cache.stats().offload_hit_tokens == 3 * 20
    tier.check_invariants()

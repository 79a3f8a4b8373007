"""Focused cases for minikv.prefix: hashing, the LRU block pool, NoPrefixCache, the factory."""

from __future__ import annotations

import hashlib
import struct

import pytest

from minikv.errors import BlockAllocatorError, InvalidRequestError, KVCacheFull
from minikv.kv import BlockTable
from minikv.prefix import (
    ROOT_HASH,
    BlockHashCache,
    Match,
    NoPrefixCache,
    PrefixCache,
    PrefixCacheError,
    chain_block_hashes,
    encode_block,
    hash_block,
    make_prefix_cache,
    max_cached_blocks,
)

BS = 4


def run_request(cache: BlockHashCache, tokens: list[int], salt: str | None = None) -> list[int]:
    """match -> allocate the rest -> (model runs) -> insert; returns the block table."""
    m = cache.match(tokens, salt)
    table = list(m.block_ids) + cache.allocate(-(-len(tokens) // BS) - len(m.block_ids))
    cache.insert(tokens, table, salt)
    return table


# ------------------------------------------------------------------- hashing


def test_encoding_layout_is_explicit_and_stable() -> None:
    parent = b"\x01\x02"
    expected = (
        struct.pack("<I", 2) + parent
        + struct.pack("<I", 2) + struct.pack("<2q", 5, -1)
        + b"t" + struct.pack("<I", 1) + b"s" + struct.pack("<I", 2) + b"hi"
    )  # fmt: skip
    assert encode_block(parent, [5, -1], ("hi",)) == expected
    assert hash_block(parent, [5, -1], ("hi",)) == hashlib.sha256(expected).digest()


def test_chain_starts_at_the_root_and_skips_the_partial_block() -> None:
    toks = list(range(11))
    h = chain_block_hashes(toks, BS)
    assert len(h) == 2
    assert h[0] == hash_block(ROOT_HASH, toks[:4])
    assert h[1] == hash_block(h[0], toks[4:8])
    assert chain_block_hashes(toks[:3], BS) == []


def test_extra_keys_and_salt_are_distinct_and_typed() -> None:
    toks = [1, 2, 3, 4]
    variants = [
        chain_block_hashes(toks, BS),
        chain_block_hashes(toks, BS, salt=""),
        chain_block_hashes(toks, BS, salt="a"),
        chain_block_hashes(toks, BS, extra_keys=("a",)),
        chain_block_hashes(toks, BS, extra_keys=(b"a",)),
        chain_block_hashes(toks, BS, extra_keys=(1,)),
        chain_block_hashes(toks, BS, extra_keys=(True, "x")),
        chain_block_hashes(toks, BS, extra_keys=(("lora", 3),)),
    ]
    assert len({v[0] for v in variants}) == len(variants)
    with pytest.raises(InvalidRequestError, match="extra key"):
        chain_block_hashes(toks, BS, extra_keys=(1.5,))


def test_bad_tokens_and_hash_names_raise_minikv_errors() -> None:
    with pytest.raises(InvalidRequestError, match="int64"):
        chain_block_hashes([2**63, 0, 0, 0], BS)
    with pytest.raises(InvalidRequestError, match="integers"):
        chain_block_hashes([1.0, 2, 3, 4], BS)
    with pytest.raises(InvalidRequestError, match="'sha256', 'xxh3_128', 'xxh64'"):
        chain_block_hashes([1, 2, 3, 4], BS, hash_fn="md5")


@pytest.mark.parametrize("name,size", [("sha256", 32), ("xxh3_128", 16), ("xxh64", 8)])
def test_hash_functions_by_name(name: str, size: int) -> None:
    h = chain_block_hashes(list(range(8)), BS, hash_fn=name)
    assert [len(x) for x in h] == [size, size]
    assert BlockHashCache(4, BS, hash_fn=name).verify is (name != "sha256")


# ---------------------------------------------------------- the block pool


def test_last_token_rule() -> None:
    assert [max_cached_blocks(n, BS) for n in (0, 1, 4, 5, 8, 9)] == [0, 0, 0, 1, 1, 2]
    cache = BlockHashCache(8, BS)
    prompt = list(range(8))
    cache.release(run_request(cache, prompt))
    m = cache.match(prompt)  # fully cached, yet the last token must run
    assert (len(m.block_ids), m.num_cached_tokens) == (1, 4)
    cache.release(m.block_ids)
    m = cache.match(prompt + [99])
    assert m.num_cached_tokens == 8


def test_release_is_tail_first() -> None:
    cache = BlockHashCache(6, BS)
    table = run_request(cache, list(range(14)))
    assert table == [0, 1, 2, 3]
    cache.release(table)
    assert cache.free_queue() == [4, 5, 3, 2, 1, 0]
    assert [cache.is_cached(b) for b in range(4)] == [True, True, True, False]


def test_allocation_evicts_in_lru_order() -> None:
    cache = BlockHashCache(4, BS)
    a = run_request(cache, [1] * 9)  # blocks 0, 1 cached, 2 partial
    cache.release(a)  # queue: 3, 2, 1, 0
    b = run_request(cache, [5] * 4 + [6])  # takes 3 (free) and 2 (free)
    assert b == [3, 2]
    cache.release(b)  # queue: 1, 0, 2, 3 (3 cached)
    assert cache.free_queue() == [1, 0, 2, 3]
    assert cache.allocate(1) == [1]  # least recently released goes first, losing its hash
    assert not cache.is_cached(1) and cache.stats().evictions == 1
    assert cache.match([1] * 9).block_ids == (0,)  # the deeper block went first; block 0 still hits


def test_evict_takes_lru_cached_blocks_and_leaves_them_in_place() -> None:
    cache = BlockHashCache(6, BS)
    cache.release(run_request(cache, [1] * 9))  # queue 3 4 5 | 2 1 0 (1, 0 cached)
    cache.release(run_request(cache, [2] * 5))  # takes 3 4; queue 5 2 1 0 | 4 3 (3 cached)
    assert cache.free_queue() == [5, 2, 1, 0, 4, 3]
    assert cache.evict(2) == 2
    assert [cache.is_cached(b) for b in (1, 0, 3)] == [False, False, True]
    assert cache.free_queue() == [5, 2, 1, 0, 4, 3]
    assert cache.evict(5) == 1 and cache.evict(1) == 0
    assert cache.stats().evictions == 3 and cache.stats().num_cached == 0


def test_hit_revives_an_evictable_block() -> None:
    cache = BlockHashCache(4, BS)
    cache.release(run_request(cache, [7] * 9))  # queue: 3, 2, 1, 0
    assert cache.stats().num_evictable == 2
    m = cache.match([7] * 6)
    assert m == Match((0,), 4)
    assert cache.ref_count(0) == 1 and cache.free_queue() == [3, 2, 1]
    assert cache.stats().num_evictable == 1
    assert cache.allocate(3) == [3, 2, 1]  # the revived block is never handed out
    with pytest.raises(KVCacheFull):
        cache.allocate(1)
    m2 = cache.match([7] * 6)  # a second holder of a used block
    assert m2.block_ids == (0,) and cache.ref_count(0) == 2


def test_stats_count_tokens() -> None:
    cache = BlockHashCache(8, BS)
    cache.release(run_request(cache, list(range(10))))  # 10 queried, 0 hit
    cache.release(run_request(cache, list(range(10))))  # 10 queried, 8 hit
    cache.release(run_request(cache, list(range(5)) + [0]))  # 6 queried, 4 hit
    s = cache.stats()
    assert (s.requests, s.query_tokens, s.hit_tokens) == (3, 26, 12)
    assert s.hit_rate == pytest.approx(12 / 26)
    assert s.num_used + s.num_evictable + s.num_free == s.num_blocks == 8


def test_salts_and_extra_keys_isolate() -> None:
    cache = BlockHashCache(8, BS)
    prompt = list(range(9))
    cache.release(run_request(cache, prompt, salt="alice"))
    for salt in (None, "", "bob"):
        assert cache.match(prompt, salt).block_ids == ()
    hit = cache.match(prompt, "alice")
    assert hit.num_cached_tokens == 8
    cache.release(hit.block_ids)
    t = cache.allocate(3)
    cache.insert(prompt, t, extra_keys=(("lora", 1),))
    assert cache.match(prompt, extra_keys=(("lora", 2),)).block_ids == ()
    assert cache.match(prompt, extra_keys=(("lora", 1),)).block_ids == tuple(t[:2])


def test_kv_cache_full_is_all_or_nothing() -> None:
    cache = BlockHashCache(4, BS)
    cache.release(run_request(cache, [3] * 9))
    held = cache.allocate(1)
    before = (cache.free_queue(), [cache.is_cached(b) for b in range(4)], cache.stats())
    with pytest.raises(KVCacheFull, match=r"3 free or evictable blocks of 4 tokens but 4 are needed"):
        cache.allocate(4)
    assert (cache.free_queue(), [cache.is_cached(b) for b in range(4)], cache.stats()) == before
    assert held == [3]


def test_insert_is_incremental_and_checks_its_input() -> None:
    cache = BlockHashCache(8, BS)
    seq = list(range(5))
    table = cache.allocate(2)
    assert cache.insert(seq, table) == 1
    assert cache.insert(seq, table) == 0  # already cached: nothing new
    seq += [5, 6, 7]
    assert cache.insert(seq, table) == 1
    with pytest.raises(ValueError, match="block table has only 2"):
        cache.insert(seq + [8] * 4, table)
    with pytest.raises(ValueError, match="other tokens"):
        cache.insert([9] * 8, table)
    with pytest.raises(BlockAllocatorError, match="not held"):
        cache.insert(list(range(4)), [5])


def test_release_validates_before_changing_anything() -> None:
    cache = BlockHashCache(4, BS)
    t = cache.allocate(2)
    for bad in ([t[0], t[0]], [t[1], 3], [t[0], 9], [t[0], "x"]):
        with pytest.raises(BlockAllocatorError):
            cache.release(bad)
    assert [cache.ref_count(b) for b in t] == [1, 1]
    cache.release(t)
    with pytest.raises(BlockAllocatorError, match="not held"):
        cache.release(t)


def test_reset_refuses_while_in_use_then_forgets_everything() -> None:
    cache = BlockHashCache(4, BS)
    table = run_request(cache, [1] * 9)
    with pytest.raises(PrefixCacheError, match="3 blocks are in use"):
        cache.reset()
    assert cache.ref_count(0) == 1 and cache.is_cached(0)
    cache.release(table)
    cache.reset()
    s = cache.stats()
    assert (s.num_cached, s.num_free, s.requests, s.query_tokens, s.evictions) == (0, 4, 0, 0, 0)
    assert cache.free_queue() == [0, 1, 2, 3]
    assert cache.match([1] * 9).block_ids == ()


# ------------------------------------------- collisions: fast hash + verification


def _constant_hash(data: bytes) -> bytes:
    return b"\x00"  # every block collides with every other


def test_verification_turns_collisions_into_misses() -> None:
    cache = BlockHashCache(8, BS, hash_fn=_constant_hash)
    assert cache.verify
    a = run_request(cache, [1] * 4 + [2] * 4 + [3])
    assert [cache.is_cached(b) for b in a] == [True, False, False]  # block 1 collides with block 0: stop
    m = cache.match([9] * 4 + [2] * 4 + [3])
    assert m.block_ids == ()  # same hash, other tokens: a miss, not block 0's K/V
    assert cache.match([1] * 4 + [2] * 4 + [3]).block_ids == (a[0],)
    assert cache.stats().collisions >= 2


def test_without_verification_a_collision_returns_wrong_blocks() -> None:
    """Why ``verify`` exists: trusting a weak hash serves another prompt's K/V."""
    cache = BlockHashCache(8, BS, hash_fn=_constant_hash, verify=False)
    a = run_request(cache, [1] * 5)
    assert cache.match([9] * 5).block_ids == (a[0],)


def _seven_is_eight(data: bytes) -> bytes:
    """A toy hash that cannot tell token 7 from token 8 (nor any 0x07 byte from 0x08)."""
    return hashlib.sha256(data.replace(b"\x08", b"\x07")).digest()


def test_verification_checks_the_parent_not_only_the_block_tokens() -> None:
    """A child block computed after prefix Y must not be served after prefix X, even when
    hash(X) == hash(Y) and the child's own tokens match. Comparing the block's tokens alone
    (without its parent) would return it."""
    cache = BlockHashCache(8, BS, hash_fn=_seven_is_eight)
    y = [8, 1, 1, 1, 2]
    r1 = cache.allocate(2)
    r2 = cache.allocate(2)  # a second request with the same prompt, scheduled in the same step
    cache.insert(y, r1)  # caches r1[0]
    cache.insert(y, r2)  # r2[0] duplicates it: stays uncached
    y2 = y + [2, 2, 2, 3]
    r2 += cache.allocate(1)
    cache.insert(y2, r2)  # r2[1] (tokens 2 2 2 2, after Y) is cached
    assert cache.is_cached(r2[1])
    cache.release(r1)
    assert cache.evict(8) == 1  # Y's first block is gone; r2[1] is held, so it stays
    x = run_request(cache, [7, 1, 1, 1, 5])  # X's first block: same hash as Y's, other tokens
    assert cache.is_cached(x[0])
    m = cache.match([7, 1, 1, 1, 2, 2, 2, 2, 3])
    assert m.block_ids == (x[0],)  # not (x[0], r2[1])
    assert cache.stats().collisions == 1


# ---------------------------------------------------- NoPrefixCache, factory


def test_no_prefix_cache_never_hits_and_frees_tail_first() -> None:
    cache = NoPrefixCache(4, BS)
    m = cache.match([1, 2, 3, 4, 5])
    assert m == Match((), 0)
    t = cache.allocate(3)
    assert cache.insert([1, 2, 3, 4, 5], t) == 0
    with pytest.raises(PrefixCacheError):
        cache.reset()
    cache.release(t)
    assert cache.allocate(4) == [3, 2, 1, 0]
    with pytest.raises(KVCacheFull):
        cache.allocate(1)
    s = cache.stats()
    assert (s.requests, s.query_tokens, s.hit_tokens, s.hit_rate, s.num_used) == (1, 5, 0, 0.0, 4)
    assert cache.evict(3) == 0
    with pytest.raises(BlockAllocatorError):
        cache.release([0, 0])


def test_factory_and_protocol() -> None:
    for kind, cls in (("none", NoPrefixCache), ("hash", BlockHashCache)):
        c = make_prefix_cache(kind, 8, BS)
        assert isinstance(c, cls) and isinstance(c, PrefixCache)
        assert (c.num_blocks, c.block_size, c.num_allocatable) == (8, BS, 8)
    assert make_prefix_cache("hash", 8, BS, hash_fn="xxh64").hash_fn_name == "xxh64"
    with pytest.raises(InvalidRequestError, match="'none', 'hash', 'radix'") as e:
        make_prefix_cache("paged", 8, BS)
    assert "paged" in str(e.value)


def test_block_table_allocates_through_a_prefix_cache() -> None:
    """An engine's road: a BlockTable seeded with the hit, topped up from the cache."""
    cache = make_prefix_cache("hash", 8, BS)
    prompt = list(range(10))
    for expect_cached in (0, 8):
        m = cache.match(prompt)
        assert m.num_cached_tokens == expect_cached
        table = BlockTable(BS, m.block_ids, m.num_cached_tokens)
        slots = table.append_tokens(len(prompt) - m.num_cached_tokens, cache)
        assert len(slots) == len(prompt) - expect_cached
        cache.insert(prompt, table.blocks)
        cache.release(table.blocks)
    assert cache.stats().hit_tokens == 8

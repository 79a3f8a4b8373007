"""The block ledger every prefix cache shares, and the caches' checks of their constructor arguments."""

from __future__ import annotations

import pytest

from minikv.errors import BlockAllocatorError, InvalidRequestError, KVCacheFull
from minikv.prefix import (
    BlockHashCache,
    BlockLedger,
    NoPrefixCache,
    PrefixCacheError,
    RadixCache,
    chain_block_hashes,
    make_prefix_cache,
)

BS = 4


def snapshot(led: BlockLedger) -> tuple[list[int], list[int], int]:
    return [led.ref_count(b) for b in range(led.num_blocks)], led.free_ids(), led.num_held


# ------------------------------------------------------------------ the ledger


def test_take_is_fifo_and_drop_returns_the_last_block_first() -> None:
    led = BlockLedger(5, BS)
    assert led.take(3) == [0, 1, 2]
    assert (led.num_held, led.num_free, led.free_ids()) == (3, 2, [3, 4])
    led.hold([1])  # a second request shares block 1
    assert led.release([0, 1, 2]) == [2, 0]  # block 1 is still held once
    assert (led.ref_count(1), led.num_held) == (1, 1)
    for b in (2, 0):
        led.free(b)
    assert led.free_ids() == [3, 4, 2, 0]  # released blocks join the tail
    led.unfree(4)  # a hit revives a block from the middle
    led.hold([4])
    assert led.free_ids() == [3, 2, 0] and led.num_held == 2
    led.check_invariants()


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ([7], "block 7 does not exist: the pool has blocks 0..3; release only ids that match() or allocate()"),
        ([-1], "block -1 does not exist"),
        ([3], "block 3 is not held (already free: released twice, or never handed out); release each block of a sequence once"),
        ([0, 1, 0], "block 0 is not held (already free"),
        ([0, 1, 2, 99], "block 99 does not exist"),
        (["0"], "block ids must be integers"),
        ([1.0], "block ids must be integers"),
    ],
)
def test_release_validates_every_id_before_changing_anything(bad: list, words: str) -> None:
    led = BlockLedger(4, BS)
    led.take(3)
    before = snapshot(led)
    with pytest.raises(BlockAllocatorError) as e:
        led.release(bad)
    assert words in str(e.value)
    assert snapshot(led) == before  # not even the good ids before the bad one were released


def test_check_held_names_the_block_and_the_fix() -> None:
    led = BlockLedger(4, BS)
    led.take(2)
    led.check_held([0, 1])
    for bad in (2, 9, -1):
        with pytest.raises(BlockAllocatorError, match=rf"block {bad} is not held by anyone; insert only blocks that match\(\)"):
            led.check_held([0, bad])


def test_require_counts_and_messages() -> None:
    led = BlockLedger(10, BS)
    assert led.require(3, available=3) == 3
    with pytest.raises(KVCacheFull) as e:
        led.require(4, available=3, holders="running requests or their cached prefixes")
    msg = str(e.value)
    assert msg == (
        "the KV pool has 3 free or evictable blocks of 4 tokens but 4 are needed (7 of 10 blocks are "
        "held by running requests or their cached prefixes); raise num_blocks or kv_cache_memory, or "
        "shorten the prompt"
    )
    with pytest.raises(KVCacheFull, match=r"has 2 free blocks of 4 tokens but 5 are needed \(8 of 10 blocks are held by running requests\)"):
        led.require(5, available=2, evictable=False)
    with pytest.raises(InvalidRequestError, match=r"cannot allocate a negative number of blocks \(-1\)"):
        led.require(-1, available=10)
    for bad in (True, 2.0, "2"):
        with pytest.raises(InvalidRequestError, match="the number of blocks to allocate must be a whole number"):
            led.require(bad, available=10)  # type: ignore[arg-type]


def test_check_idle_refuses_while_blocks_are_held() -> None:
    led = BlockLedger(4, BS)
    ids = led.take(2)
    with pytest.raises(PrefixCacheError, match="cannot reset the prefix cache while 2 blocks are in use; finish or abort"):
        led.check_idle()
    led.release(ids)
    led.check_idle()
    led.reset()
    assert snapshot(led) == ([0, 0, 0, 0], [0, 1, 2, 3], 0)


def test_misuse_by_a_cache_is_an_assertion_not_a_silent_corruption() -> None:
    led = BlockLedger(3, BS)
    with pytest.raises(AssertionError, match="free queue"):
        led.hold([0])  # block 0 waits in the free queue: a cache must unfree it first
    with pytest.raises(AssertionError, match="take"):
        led.take(4)
    led.take(1)
    with pytest.raises(AssertionError, match="held or already free"):
        led.free(0)  # still held
    with pytest.raises(AssertionError, match="held or already free"):
        led.free(1)  # already free
    assert snapshot(led) == ([1, 0, 0], [1, 2], 1)


# ----------------------------------------------- every cache, one set of rules


CACHES = [NoPrefixCache, BlockHashCache, RadixCache]


@pytest.mark.parametrize("cls", CACHES)
def test_every_cache_validates_release_with_the_same_words(cls: type) -> None:
    cache = cls(4, BS)
    t = cache.allocate(2)
    for bad, words in (([t[0], t[0]], "is not held (already free"), ([9], "block 9 does not exist"),
                       ([t[0], 3], "block 3 is not held")):
        with pytest.raises(BlockAllocatorError) as e:
            cache.release(bad)
        assert words in str(e.value)
        assert cache.stats().num_used == 2 and cache.num_allocatable == 2
    cache.release(t)
    assert cache.stats().num_used == 0


@pytest.mark.parametrize("cls", CACHES)
def test_every_cache_says_how_full_the_pool_is(cls: type) -> None:
    cache = cls(4, BS)
    cache.allocate(3)
    with pytest.raises(KVCacheFull, match=r"has 1 free.* blocks of 4 tokens but 2 are needed \(3 of 4 blocks are held by running requests"):
        cache.allocate(2)
    with pytest.raises(InvalidRequestError, match="negative"):
        cache.allocate(-1)
    assert cache.num_allocatable == 1


@pytest.mark.parametrize("cls", CACHES)
def test_every_cache_refuses_a_reset_while_blocks_are_in_use(cls: type) -> None:
    cache = cls(4, BS)
    t = cache.allocate(3)
    with pytest.raises(PrefixCacheError, match="while 3 blocks are in use"):
        cache.reset()
    cache.release(t)
    cache.reset()


def test_no_prefix_cache_owns_its_blocks() -> None:
    """No allocator behind it any more: its own ledger, last block released first."""
    cache = NoPrefixCache(4, BS)
    t = cache.allocate(3)
    assert [cache.ref_count(b) for b in range(4)] == [1, 1, 1, 0]
    cache.release(t)
    assert cache.allocate(4) == [3, 2, 1, 0]
    with pytest.raises(TypeError):
        NoPrefixCache(4, BS, allocator=None)  # type: ignore[call-arg]


# ------------------------------------------------------- constructor arguments


@pytest.mark.parametrize("cls", CACHES)
@pytest.mark.parametrize(
    ("num_blocks", "block_size", "words"),
    [
        (True, BS, "num_blocks must be a whole number >= 0 (e.g. 64), got True"),
        (-1, BS, "num_blocks must be a whole number >= 0 (e.g. 64), got -1"),
        (8.0, BS, "num_blocks must be a whole number >= 0 (e.g. 64), got 8.0 of type float"),
        ("8", BS, "num_blocks must be a whole number >= 0"),
        (8, True, "block_size must be a whole number >= 1 (e.g. 16), got True"),
        (8, 0, "block_size must be a whole number >= 1 (e.g. 16), got 0"),
        (8, -4, "block_size must be a whole number >= 1"),
        (8, 2.5, "block_size must be a whole number >= 1 (e.g. 16), got 2.5 of type float"),
        (8, None, "block_size must be a whole number >= 1"),
    ],
)
def test_bad_sizes_name_the_argument_and_what_to_give(cls: type, num_blocks: object, block_size: object,
                                                      words: str) -> None:
    with pytest.raises(InvalidRequestError) as e:
        cls(num_blocks, block_size)
    assert words in str(e.value)


def test_bad_sizes_through_the_factory_and_the_hash_chain() -> None:
    with pytest.raises(InvalidRequestError, match="num_blocks must be a whole number"):
        make_prefix_cache("radix", False, BS)
    with pytest.raises(InvalidRequestError, match="block_size must be a whole number >= 1"):
        chain_block_hashes([1, 2, 3], 0)
    with pytest.raises(InvalidRequestError, match="block_size must be a whole number >= 1"):
        chain_block_hashes([1, 2, 3], True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("page_size", "words"),
    [
        (3, "page_size must divide block_size=16: give one of 1, 2, 4, 8, 16 (1: token-granular, 16: whole blocks), got 3"),
        (32, "page_size must divide block_size=16"),
        (0, "page_size must be a whole number >= 1 (e.g. 1 or 16), got 0"),
        (True, "page_size must be a whole number >= 1 (e.g. 1 or 16), got True"),
        ("4", "page_size must be a whole number >= 1"),
        (4.0, "page_size must be a whole number >= 1"),
    ],
)
def test_radix_page_size_must_divide_the_block(page_size: object, words: str) -> None:
    with pytest.raises(InvalidRequestError) as e:
        RadixCache(8, 16, page_size=page_size)  # type: ignore[arg-type]
    assert words in str(e.value)
    assert isinstance(e.value, ValueError)  # old callers catching ValueError still work


def test_other_bad_cache_options() -> None:
    with pytest.raises(InvalidRequestError, match="partial_copy must be True or False, got 'no'"):
        RadixCache(8, BS, partial_copy="no")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="'lru', 'lfu'"):
        RadixCache(8, BS, policy="fifo")
    with pytest.raises(InvalidRequestError, match=r"verify must be True, False or None .* got 'yes'"):
        BlockHashCache(8, BS, verify="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="unknown hash function 'md5'"):
        BlockHashCache(8, BS, hash_fn="md5")
    assert RadixCache(8, 16, page_size=8).page_size == 8 and RadixCache(0, 16).num_blocks == 0

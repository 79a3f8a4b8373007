"""``peek`` on every prefix cache: it predicts ``match`` and changes nothing.

Random request streams (hypothesis, derandomized) drive two identical caches
side by side; before every ``match`` one of them is also ``peek``ed. Checked:

- ``peek`` returns exactly the ``num_cached_tokens`` the next ``match`` gives
  (last-token rule, salts, pages, a radix copy block that cannot be had);
- the peeked cache stays indistinguishable from its twin: equal stats, free
  queue, tree (locks, access times, hit counts), the same hits and evictions
  all along, and the same eviction order when everything is evicted at the end;
- ``peek`` itself leaves stats and the tree untouched (checked around each call).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minikv.errors import KVCacheFull
from minikv.prefix import BlockHashCache, NoPrefixCache, PrefixCache, RadixCache

BS = 4
NUM_BLOCKS = 10
PREFIXES = [
    [],
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    [1, 2, 3, 4, 5, 6, 20, 21, 22],
    [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42],
]
SALTS = [None, "a"]


def _toy_hash(data: bytes) -> bytes:
    """16 values: collisions all the time (verified hits only)."""
    return bytes([hashlib.sha256(data).digest()[0] % 16])


CACHES: dict[str, Callable[[], PrefixCache]] = {
    "none": lambda: NoPrefixCache(NUM_BLOCKS, BS),
    "hash": lambda: BlockHashCache(NUM_BLOCKS, BS),
    "hash-toy": lambda: BlockHashCache(NUM_BLOCKS, BS, hash_fn=_toy_hash),
    "radix": lambda: RadixCache(NUM_BLOCKS, BS),
    "radix-p1": lambda: RadixCache(NUM_BLOCKS, BS, page_size=1),
    "radix-p2-lfu": lambda: RadixCache(NUM_BLOCKS, BS, page_size=2, policy="lfu"),
    "radix-p1-nocopy": lambda: RadixCache(NUM_BLOCKS, BS, page_size=1, partial_copy=False),
}

TOK = st.integers(0, 3)
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("start"),
            st.integers(0, len(PREFIXES) - 1),
            st.lists(TOK, max_size=7),
            st.sampled_from(SALTS),
            st.booleans(),  # keep it running (holding its blocks)
        ),
        st.tuples(st.just("finish"), st.integers(0, 5)),
        st.tuples(st.just("evict"), st.integers(0, 3)),
    ),
    min_size=10,
    max_size=40,
)
SETTINGS = dict(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def snapshot(cache: PrefixCache) -> tuple:
    """Everything observable about a cache's state."""
    parts: list[object] = [cache.stats(), cache.num_allocatable]
    if isinstance(cache, RadixCache):
        cache.check_invariants()
        parts += [cache.to_dict(), cache.free_blocks(), cache.num_nodes]
    elif isinstance(cache, BlockHashCache):
        parts += [cache.free_queue(), [cache.block_hash(b) for b in range(cache.num_blocks)]]
    return tuple(parts)


def start(cache: PrefixCache, tokens: list[int], salt: str | None) -> tuple[int, list[int] | None]:
    """One admission as the engine does it; returns (hit tokens, block table or None if full)."""
    m = cache.match(tokens, salt)
    try:
        new = cache.allocate(-(-len(tokens) // BS) - len(m.block_ids))
    except KVCacheFull:
        cache.release(m.block_ids)
        return m.num_cached_tokens, None
    table = [*m.block_ids, *new]
    cache.insert(tokens, table, salt)
    return m.num_cached_tokens, table


def drive(kind: str, ops: list) -> int:
    """Run ``ops`` on a peeked cache and its twin; returns how many requests hit something."""
    peeked, twin = CACHES[kind](), CACHES[kind]()
    running: list[list[int]] = []
    num_hits = 0
    for op in ops:
        if op[0] == "start":
            _, p, suffix, salt, keep = op
            tokens = PREFIXES[p] + suffix
            before = snapshot(peeked)
            guess = peeked.peek(tokens, salt)
            assert snapshot(peeked) == before, "peek changed the cache"
            hit, table = start(peeked, tokens, salt)
            twin_hit, twin_table = start(twin, tokens, salt)
            assert guess == hit == twin_hit, (tokens, salt, guess, hit, twin_hit)
            assert table == twin_table
            num_hits += hit > 0
            if table is not None:
                if keep and len(running) < 4:
                    running.append(table)
                else:
                    peeked.release(table)
                    twin.release(table)
        elif op[0] == "finish" and running:
            table = running.pop(op[1] % len(running))
            peeked.release(table)
            twin.release(table)
        elif op[0] == "evict":
            assert peeked.evict(op[1]) == twin.evict(op[1])
        assert snapshot(peeked) == snapshot(twin)
    for table in running:
        peeked.release(table)
        twin.release(table)
    # The eviction order is the same: evict one block at a time, compare what got freed.
    while True:
        a, b = peeked.evict(1), twin.evict(1)
        assert a == b
        assert snapshot(peeked) == snapshot(twin)
        if a == 0:
            break
    return num_hits


def make_test(kind: str):
    @settings(**SETTINGS)
    @given(ops=OPS)
    def test(ops: list) -> None:
        drive(kind, ops)

    test.__name__ = f"test_peek_predicts_match_and_changes_nothing_{kind.replace('-', '_')}"
    return test


for _kind in CACHES:
    globals()[f"test_peek_{_kind.replace('-', '_')}"] = make_test(_kind)


def test_streams_do_hit() -> None:
    """The stream above is not vacuous: shared prefixes do hit, on every caching kind."""
    ops = [("start", 1, [0], None, False), ("start", 1, [1], None, False)]
    ops += [("start", 2, [2, 3], None, True), ("start", 2, [3], None, False)]
    for kind in CACHES:
        assert (drive(kind, ops) > 0) == (kind != "none"), kind


def test_radix_peek_sees_when_no_copy_block_can_be_had() -> None:
    """A partial hit that ``match`` must cut to whole blocks (pool exhausted) is cut by peek too."""
    cache = RadixCache(3, BS, page_size=1)
    first = cache.allocate(2)
    cache.insert([1, 2, 3, 4, 5, 6], first)  # blocks [1..4] [5, 6]; still held
    other = cache.allocate(1)  # the last free block
    assert cache.num_allocatable == 0
    assert cache.peek([1, 2, 3, 4, 5, 6, 7]) == 4  # 6 in the tree, no block to copy [5, 6] into
    m = cache.match([1, 2, 3, 4, 5, 6, 7])
    assert m.num_cached_tokens == 4 and m.copy_from_block is None
    cache.release(m.block_ids)
    cache.release(other)
    assert cache.peek([1, 2, 3, 4, 5, 6, 7]) == 6  # now a block is free for the copy
    m = cache.match([1, 2, 3, 4, 5, 6, 7])
    assert m.num_cached_tokens == 6 and m.copy_tokens == 2
    cache.release(m.block_ids)
    cache.release(first)


def test_radix_peek_counts_blocks_the_match_would_lock() -> None:
    """The copy block may only come from evicting the very path being matched: then it cannot."""
    cache = RadixCache(2, BS, page_size=1)
    table = cache.allocate(2)
    cache.insert([1, 2, 3, 4, 5, 6], table)
    cache.release(table)  # both blocks cached and evictable, none free
    assert cache.num_allocatable == 2
    assert cache.peek([1, 2, 3, 4, 5, 6, 7]) == 4
    m = cache.match([1, 2, 3, 4, 5, 6, 7])
    assert m.num_cached_tokens == 4
    cache.release(m.block_ids)


def test_radix_peek_counts_the_upper_part_of_a_split_edge() -> None:
    """A match ending inside an edge locks the edge's upper part: its blocks cannot be the copy's."""
    cache = RadixCache(2, BS, page_size=1)
    table = cache.allocate(2)
    cache.insert([1, 2, 3, 4, 5, 6, 7, 8], table)  # one edge, two blocks
    cache.release(table)
    query = [1, 2, 3, 4, 5, 6, 99]  # ends 6 tokens into the edge
    assert cache.peek(query) == 4
    m = cache.match(query)
    assert m.num_cached_tokens == 4
    cache.release(m.block_ids)
    cache.check_invariants()


def test_hash_peek_memo_is_bounded_and_exact() -> None:
    """The hash cache remembers peeked prompts' block hashes, within a token budget, never wrongly."""
    cache = BlockHashCache(8, BS)
    cache.PEEK_MEMO_TOKENS = 12
    table = cache.allocate(2)
    cache.insert([1, 2, 3, 4, 5, 6, 7, 8], table)
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 9, 9, 9, 9, 9], [5, 5, 5, 5, 5], [1, 2, 3, 4, 5]]
    for _ in range(3):
        assert [cache.peek(p) for p in prompts] == [8, 4, 0, 4]
        assert [cache.peek(p, salt="s") for p in prompts] == [0, 0, 0, 0]
        assert cache._peek_memo_tokens <= 12
    cache.release(table)
    assert [cache.peek(p) for p in prompts] == [8, 4, 0, 4]  # evictable blocks still hit
    cache.evict(8)
    assert [cache.peek(p) for p in prompts] == [0, 0, 0, 0]  # the memo holds hashes, not hits

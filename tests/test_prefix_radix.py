"""Focused cases for the radix cache: match, split, insert, locks, eviction, pages, copies."""

from __future__ import annotations

import pytest

from minikv.errors import BlockAllocatorError, InvalidRequestError, KVCacheFull
from minikv.kv import BlockTable, cdiv
from minikv.prefix import (
    BlockHashCache,
    Match,
    PrefixCache,
    PrefixCacheError,
    RadixCache,
    make_prefix_cache,
)
from minikv.prefix.policies import LFU, LRU, resolve_policy
from minikv.prefix.radix import RadixNode

BS = 4


def run_request(cache: RadixCache, tokens: list[int], salt: str | None = None) -> list[int]:
    """match -> allocate the rest -> (copy, model runs) -> insert; returns the block table."""
    m = cache.match(tokens, salt)
    table = list(m.block_ids) + cache.allocate(cdiv(len(tokens), BS) - len(m.block_ids))
    cache.insert(tokens, table, salt)
    return table


def tree(cache: RadixCache, salt: str | None = None) -> list[dict]:
    """The children of one salt's root, as plain data."""
    for t in cache.to_dict():
        if t["salt"] == salt:
            return t["children"]
    return []


def shape(nodes: list[dict]) -> list:
    """Just (tokens, children) of each node, recursively: the tree's structure."""
    return [(n["tokens"], shape(n["children"])) for n in nodes]


# ------------------------------------------------------------- match / split / insert


@pytest.mark.parametrize("page", [1, BS])
def test_match_splits_an_edge_in_the_middle(page: int) -> None:
    cache = RadixCache(16, BS, page_size=page)
    a = list(range(1, 13))  # 12 tokens, 3 blocks
    t = run_request(cache, a)
    cache.release(t)
    assert shape(tree(cache)) == [(a, [])]
    probe = a[:8] + [99, 98]  # shares 8 tokens: the match ends inside the edge
    m = cache.match(probe)
    assert m.num_cached_tokens == 8 and m.block_ids == tuple(t[:2]) and m.copy_from_block is None
    assert shape(tree(cache)) == [(a[:8], [(a[8:], [])])]
    upper, lower = tree(cache)[0], tree(cache)[0]["children"][0]
    assert upper["block_ids"] == t[:2] and lower["block_ids"] == t[2:]
    assert upper["lock_ref"] > 0 and lower["lock_ref"] == 0  # only the matched part is locked
    cache.check_invariants()
    cache.release(m.block_ids)
    assert upper["id"] != lower["id"]


def test_token_granular_split_inside_a_block_shares_the_block() -> None:
    cache = RadixCache(16, BS, page_size=1)
    a = list(range(1, 11))
    t = run_request(cache, a)
    m = cache.match(a[:6] + [50, 51])
    assert shape(tree(cache)) == [(a[:6], [(a[6:], [])])]
    upper, lower = tree(cache)[0], tree(cache)[0]["children"][0]
    assert upper["block_ids"] == t[:2] and lower["block_ids"] == t[1:]
    assert lower["shares_first_block"] and not upper["shares_first_block"]
    assert m.copy_from_block == t[1] and m.copy_tokens == 2 and m.num_cached_tokens == 6
    cache.check_invariants()


def test_insert_returns_what_was_already_there_and_never_stores_twice() -> None:
    cache = RadixCache(32, BS, page_size=1)
    a = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    b = [1, 2, 3, 4, 5, 6, 70, 80]
    ta = cache.allocate(3)
    r = cache.insert_detailed(a, ta)
    assert (r.prefix_len, r.new_tokens, r.new_blocks) == (0, 9, 3)
    tb = cache.allocate(2)  # b computed itself (no match): its first 6 tokens are duplicates
    r = cache.insert_detailed(b, tb)
    assert (r.prefix_len, r.new_tokens) == (6, 2)
    assert r.new_blocks == 1  # tb[1] (positions 4..7) backs the new branch; tb[0] stays uncached
    assert not cache.is_cached(tb[0]) and cache.is_cached(tb[1])
    assert cache.insert_detailed(a, ta).prefix_len == 9  # all there already
    assert cache.insert(a[:5], ta) == 0  # ends inside an edge: nothing to add, no split
    distinct = {tuple(s[:i]) for s in (a, b) for i in range(1, len(s) + 1)}
    assert cache.num_tree_tokens() == len(distinct) == 11
    assert shape(tree(cache)) == [(a[:6], [(a[6:], []), (b[6:], [])])]
    cache.release(tb)
    assert tb[0] in cache.free_blocks()  # the duplicate went back to the free list
    cache.release(ta)
    cache.check_invariants()


def test_a_block_shared_with_a_grandparent() -> None:
    """A request's own block can back two nodes with another request's node between them."""
    cache = RadixCache(8, BS, page_size=1)
    r1 = [0]
    t1 = run_request(cache, r1)  # node [0] @0 on r1's block
    r2 = [0, 0]
    t2 = run_request(cache, r2)  # copies token 0, adds node [0] @1 on its own block
    assert cache.stats().hit_tokens == 1
    r1 = r1 + [0, 1]  # r1 decodes into its block: the tree already has 0 0 (on r2's block)
    cache.insert(r1, t1)
    assert shape(tree(cache)) == [([0], [([0], [([1], [])])])]
    top, mid = tree(cache)[0], tree(cache)[0]["children"][0]
    leaf = mid["children"][0]
    assert top["block_ids"] == leaf["block_ids"] == t1 and mid["block_ids"] == t2
    assert leaf["shares_first_block"] and not mid["shares_first_block"]
    cache.check_invariants()
    cache.release(t1)
    cache.check_invariants()
    cache.release(t2)
    assert cache.evict(8) == 2 and cache.stats().num_free == 8
    cache.check_invariants()


def test_page_granular_tree_keys_by_first_block_and_ignores_partial_pages() -> None:
    cache = RadixCache(16, BS)  # page_size defaults to block_size
    assert cache.page_size == BS
    a = list(range(10))
    t = run_request(cache, a)
    assert shape(tree(cache)) == [(a[:8], [])]  # the partial third block is not indexed
    assert cache.longest_prefix(a) == 8
    assert cache.longest_prefix([0, 1, 2, 3, 4, 5, 9]) == 6  # token-exact, inside a page
    assert cache.longest_prefix([0, 1, 7]) == 2  # no page key matches: partial first page
    cache.release(t)
    m = cache.match([0, 1, 2, 3, 4, 5, 9, 9])
    assert m.num_cached_tokens == 4 and m.block_ids == (t[0],)


def test_last_token_rule_and_partial_copy() -> None:
    a = list(range(8))
    page_cache = RadixCache(16, BS)
    page_cache.release(run_request(page_cache, a))
    assert page_cache.match(a).num_cached_tokens == 4  # a full hit would leave nothing to run

    cache = RadixCache(16, BS, page_size=1)
    t = run_request(cache, a)
    cache.release(t)
    m = cache.match(a)
    assert m.num_cached_tokens == 7 and m.copy_tokens == 3 and m.copy_from_block == t[1]
    assert m.block_ids[0] == t[0] and m.block_ids[1] not in t  # a fresh block to copy into
    assert cache.ref_count(m.block_ids[1]) == 1 and not cache.is_cached(m.block_ids[1])
    assert cache.match([]).num_cached_tokens == cache.match([0]).num_cached_tokens == 0


def test_partial_copy_off_keeps_whole_blocks() -> None:
    cache = RadixCache(16, BS, page_size=1, partial_copy=False)
    a = list(range(10))
    cache.release(run_request(cache, a))
    m = cache.match(a[:7] + [99])
    assert (m.num_cached_tokens, m.copy_from_block, len(m.block_ids)) == (4, None, 1)
    assert cache.longest_prefix(a[:7] + [99]) == 7  # the index still knows all 7


def test_copy_source_is_pinned_until_insert_or_release() -> None:
    cache = RadixCache(4, BS, page_size=1)
    a = list(range(8))
    cache.release(run_request(cache, a))  # blocks 0, 1 cached, 2, 3 free
    m = cache.match(a[:6] + [90, 91])
    src, dst = m.copy_from_block, m.block_ids[-1]
    assert m.num_cached_tokens == 6 and src is not None
    assert cache.stats().num_evictable == 0  # the whole path is locked, source included
    with pytest.raises(KVCacheFull):
        cache.allocate(2)
    cache.insert(a[:6] + [90, 91], list(m.block_ids))  # the copy is done: source unpinned
    assert cache.stats().num_evictable == 0  # still locked: block 0 is held
    cache.release(m.block_ids)
    cache.check_invariants()

    m = cache.match(a[:6] + [70, 71])
    cache.release(m.block_ids)  # given back before any insert (e.g. KVCacheFull): unpinned too
    cache.check_invariants()
    assert cache.stats().num_used == 0


def test_partial_hit_falls_back_to_whole_blocks_when_no_block_is_left() -> None:
    cache = RadixCache(2, BS, page_size=1)
    a = list(range(8))
    t = run_request(cache, a)  # both blocks held by a running request
    m = cache.match(a[:6] + [50])
    assert (m.block_ids, m.num_cached_tokens, m.copy_from_block) == ((t[0],), 4, None)
    cache.check_invariants()
    cache.release(m.block_ids)
    cache.release(t)
    assert cache.stats().num_used == 0


def test_engine_road_with_a_block_table_and_the_copy() -> None:
    """BlockTable seeded with the hit (copy block included), topped up from the cache."""
    cache = make_prefix_cache("radix", 8, BS, page_size=1)
    prompt = list(range(10))
    for expect_cached in (0, 9):
        m = cache.match(prompt)
        assert m.num_cached_tokens == expect_cached
        table = BlockTable(BS, m.block_ids, m.num_cached_tokens)
        if m.copy_from_block is not None:
            # the engine would copy: kv[:, :, table.blocks[-1], :r] = kv[:, :, src, :r]
            assert table.blocks[-1] == m.block_ids[-1] and m.copy_tokens == 1
        slots = table.append_tokens(len(prompt) - m.num_cached_tokens, cache)
        assert len(slots) == len(prompt) - expect_cached
        cache.insert(prompt, table.blocks)
        cache.release(table.blocks)
    assert cache.stats().hit_tokens == 9


def test_vllm_design_doc_example_hits_the_same_as_the_hash_cache() -> None:
    """The requests of vLLM's prefix-caching worked example: same hits at page = block."""
    r0 = list(range(100, 117))
    r1 = r0[:10] + [200, 201, 202, 203]
    hits: dict[str, list[int]] = {}
    for name, cache in (
        ("hash", BlockHashCache(10, BS)),
        ("radix", RadixCache(10, BS)),
        ("radix1", RadixCache(10, BS, page_size=1)),
    ):
        t0 = run_request(cache, r0)  # type: ignore[arg-type]
        m1 = cache.match(r1)
        hits[name] = [m1.num_cached_tokens]
        t1 = list(m1.block_ids) + cache.allocate(cdiv(len(r1), BS) - len(m1.block_ids))
        cache.insert(r1, t1)
        cache.release(t0)
        cache.release(t1)
        hits[name].append(cache.match(r0).num_cached_tokens)
    assert hits["hash"] == hits["radix"] == [8, 16]
    assert hits["radix1"] == [10, 16]  # 2 full blocks + 2 tokens copied from the third


# -------------------------------------------------------------- locks and eviction


def test_locked_paths_are_never_evicted_and_counts_return_to_zero() -> None:
    cache = RadixCache(6, BS)
    a = list(range(13))  # 4 blocks, 3 of them full (cached)
    ta = run_request(cache, a)
    assert cache.stats().num_evictable == 0 and cache.num_allocatable == 2
    before = (cache.render(), cache.free_blocks(), cache.stats())
    with pytest.raises(KVCacheFull):
        cache.allocate(3)
    assert (cache.render(), cache.free_blocks(), cache.stats()) == before  # all-or-nothing
    b = a[:4] + [50, 51, 52, 53, 54]
    m = cache.match(b)  # locks the first block's node (split off)
    cache.release(ta)  # ta[3] was never cached: it is free again
    assert cache.stats().num_evictable == 2  # the unlocked leaf below b's path
    assert cache.free_blocks() == [4, 5, ta[3]]
    tb = list(m.block_ids) + cache.allocate(2)
    assert cache.stats().evictions == 0  # free blocks go first
    more = cache.allocate(3)  # 1 free + the 2 evictable blocks
    assert cache.stats().evictions == 2 and set(more) == {ta[3], ta[1], ta[2]}
    assert cache.is_cached(ta[0]) and tb[0] == ta[0]  # the locked node survived
    with pytest.raises(KVCacheFull):
        cache.allocate(1)
    cache.check_invariants()
    cache.release(tb)
    cache.release(more)
    assert all(n.lock_ref == 0 for n in cache.nodes())
    assert all(cache.ref_count(b) == 0 for b in range(6))
    s = cache.stats()
    assert s.num_used == 0 and s.num_free + s.num_evictable == 6


def test_eviction_reexamines_the_parent_and_trims_leaves() -> None:
    cache = RadixCache(8, BS)
    a = list(range(16))  # 4 full blocks
    b = a[:8] + [90] * 8
    ta = run_request(cache, a)
    tb = run_request(cache, b)
    cache.release(ta)
    cache.release(tb)
    assert shape(tree(cache)) == [(a[:8], [(a[8:], []), (b[8:], [])])]
    assert cache.stats().num_evictable == 6
    assert cache.evict(1) == 1  # LRU leaf is a's branch (older); only its tail block goes
    assert shape(tree(cache)) == [(a[:8], [(a[8:12], []), (b[8:], [])])]
    assert cache.evict(3) == 3  # the rest of a's branch, then b's 2 blocks
    assert shape(tree(cache)) == [(a[:8], [])]  # the parent is a leaf now
    assert cache.evict(10) == 2 and cache.to_dict() == []  # empty roots are dropped too
    s = cache.stats()
    assert (s.num_free, s.num_evictable, s.num_cached, s.evictions) == (8, 0, 0, 6)
    cache.check_invariants()


def test_access_time_is_stamped_along_the_whole_path() -> None:
    cache = RadixCache(16, BS)
    a, b = list(range(12)), list(range(8)) + [70, 71, 72, 73]
    for t in (run_request(cache, a), run_request(cache, b)):
        cache.release(t)
    m = cache.match(a + [1])
    top = tree(cache)[0]
    assert top["tokens"] == a[:8]
    a_leaf = next(c for c in top["children"] if c["tokens"] == a[8:])
    assert top["last_access"] == a_leaf["last_access"] == cache._clock
    assert (top["hit_count"], a_leaf["hit_count"]) == (2, 1)  # b's match went through top too
    cache.release(m.block_ids)
    # b's leaf was used least recently: it goes first, then a's leaf, then the shared top.
    cache.evict(1)
    assert [c["tokens"] for c in tree(cache)[0]["children"]] == [a[8:]]


def test_lru_and_lfu_pick_different_victims() -> None:
    popular = [1, 1, 1, 1, 2, 2, 2, 2]
    fresh = [5, 5, 5, 5, 6, 6, 6, 6]
    victims = {}
    for policy in ("lru", "lfu"):
        cache = RadixCache(8, BS, policy=policy)
        cache.release(run_request(cache, popular + [0]))
        for _ in range(3):  # popular is hit 3 times...
            cache.release(run_request(cache, popular + [0]))
        cache.release(run_request(cache, fresh + [0]))  # ...then fresh is used once, last
        cache.evict(2)
        victims[policy] = "popular" if cache.longest_prefix(popular) == 0 else "fresh"
        cache.check_invariants()
    assert victims == {"lru": "popular", "lfu": "fresh"}


def test_policies() -> None:
    assert isinstance(resolve_policy("lru"), LRU) and isinstance(resolve_policy("lfu"), LFU)
    assert resolve_policy(LFU()).name == "lfu"
    with pytest.raises(InvalidRequestError, match="'lru', 'lfu'"):
        resolve_policy("fifo")
    with pytest.raises(InvalidRequestError):
        resolve_policy(object())  # type: ignore[arg-type]
    node = RadixNode(1, (1,), 0, [0], None)
    node.last_access, node.hit_count = 7, 2
    assert LRU().priority(node) == (7,) and LFU().priority(node) == (2, 7)


# ------------------------------------------------------------ salts, errors, reset


def test_salts_are_isolated() -> None:
    cache = RadixCache(16, BS, page_size=1)
    a = list(range(10))
    for salt in (None, "alice"):
        t = run_request(cache, a, salt)
        cache.release(t)
    assert cache.match(a, "bob").num_cached_tokens == 0
    assert cache.longest_prefix(a, "bob") == 0
    assert cache.longest_prefix(a, "alice") == cache.longest_prefix(a) == 10
    m = cache.match(a, "alice")
    assert m.num_cached_tokens == 9
    alice_blocks = {b for n in tree(cache, "alice") for b in n["block_ids"]}
    none_blocks = {b for n in tree(cache, None) for b in n["block_ids"]}
    assert set(m.block_ids[:-1]) <= alice_blocks and not alice_blocks & none_blocks
    assert m.copy_from_block in alice_blocks
    assert "root salt='alice'" in cache.render() and "root salt=None" in cache.render()
    with pytest.raises(InvalidRequestError):
        cache.match(a, ["unhashable"])  # type: ignore[arg-type]
    cache.release(m.block_ids)


def test_release_and_insert_validate_before_changing_anything() -> None:
    cache = RadixCache(4, BS)
    t = run_request(cache, list(range(6)))
    before = (cache.render(), cache.free_blocks(), cache.stats())
    for bad in ([t[0], t[0]], [99], [t[0], 3]):
        with pytest.raises(BlockAllocatorError):
            cache.release(bad)
        assert (cache.render(), cache.free_blocks(), cache.stats()) == before
    with pytest.raises(BlockAllocatorError, match="not held"):
        cache.insert(list(range(8)), [t[0], 3])
    with pytest.raises(ValueError, match="only 1 blocks"):
        cache.insert(list(range(8)), [t[0]])
    with pytest.raises(ValueError, match="cached for other tokens"):
        cache.insert([9, 9, 9, 9], [t[0]])
    with pytest.raises(ValueError):
        cache.allocate(-1)
    with pytest.raises(InvalidRequestError):
        cache.match(["x"])  # type: ignore[list-item]
    cache.release(t)
    cache.check_invariants()


def test_reset() -> None:
    cache = RadixCache(8, BS, page_size=1)
    t = run_request(cache, list(range(10)))
    with pytest.raises(PrefixCacheError, match="in use"):
        cache.reset()
    cache.release(t)
    cache.match(list(range(5)))  # holds a block and pins another...
    with pytest.raises(PrefixCacheError):
        cache.reset()
    cache2 = RadixCache(8, BS, page_size=1)
    cache2.release(run_request(cache2, list(range(10))))
    cache2.reset()
    s = cache2.stats()
    assert (s.num_free, s.num_cached, s.requests, s.query_tokens, s.hit_tokens) == (8, 0, 0, 0, 0)
    assert cache2.free_blocks() == list(range(8))
    assert cache2.to_dict() == [] and cache2.num_nodes == 0
    assert cache2.match(list(range(10))).num_cached_tokens == 0


def test_factory_protocol_and_arguments() -> None:
    c = make_prefix_cache("radix", 8, BS)
    assert isinstance(c, RadixCache) and isinstance(c, PrefixCache)
    assert (c.num_blocks, c.block_size, c.num_allocatable, c.page_size) == (8, BS, 8, BS)
    assert make_prefix_cache("radix", 8, BS, page_size=1, policy="lfu").policy.name == "lfu"
    for bad in (0, 3, 8):
        with pytest.raises(ValueError, match="page_size"):
            RadixCache(8, BS, page_size=bad)
    with pytest.raises(ValueError):
        RadixCache(-1, BS)
    assert Match((1,), 4) == Match((1,), 4, None, 0)  # the copy fields default to "no copy"


def test_render_to_dict_and_dot() -> None:
    cache = RadixCache(16, BS, page_size=1)
    cache.release(run_request(cache, list(range(10))))
    m = cache.match(list(range(6)) + [40, 41])
    text = cache.render()
    assert text.splitlines()[0] == "root salt=None"
    assert "├── " not in text and "└── [0 1 2 3 4 5] @0..6" in text
    assert "blocks=[~1,2]" in text  # the lower half shares block 1 with its parent
    assert "'abc'" in cache.render(decode=lambda toks: "abc")
    dot = cache.to_dot()
    assert dot.startswith("digraph radix {") and dot.count("->") == 2 and "lightpink" in dot
    cache.release(m.block_ids)
    assert RadixCache(4, BS).render() == "(empty)"
    assert "page_size=1" in repr(cache)

"""Salts isolate tenants: over random request streams, no block written by one tenant is ever hit by another.

Hypothesis draws streams of requests (tenant, prompt) over a small vocabulary
and a few shared prefixes, so prompts overlap a lot, and replays them the way
the engine does (match, copy a partly shared block, allocate, insert,
release; requests overlap in time, and the pool is small enough to evict).
A shadow map remembers which tenant wrote each block. For both caches (block
hashes; radix tree at page size 1 and 4):

- every tenant salted: every hit block (and a copy's source) was written by
  the same tenant: zero cross-tenant hits;
- no salt on the same streams: cross-tenant hits do happen (so the check can
  fail);
- :class:`~minikv.security.public_prefix.PublicPrefixCache`: a block hit
  across tenants holds only positions inside the published prefix.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minikv.errors import KVCacheFull
from minikv.prefix import BlockHashCache, RadixCache
from minikv.security.public_prefix import PublicPrefixCache

BS = 4
PUBLIC = [7, 7, 1, 2, 3, 4, 5, 6, 8, 9]
PREFIXES = [[], PUBLIC, PUBLIC[:6], [9, 8, 7, 6, 5, 4, 3, 2, 1]]
TENANTS = ["t0", "t1", "t2"]

REQUEST = st.tuples(
    st.sampled_from(TENANTS),
    st.integers(0, len(PREFIXES) - 1),
    st.lists(st.integers(0, 3), min_size=0, max_size=10),
    st.integers(0, 2),  # how many earlier requests finish before this one starts
)
STREAM = st.lists(REQUEST, min_size=1, max_size=30)

CACHES = {
    "hash": lambda n: BlockHashCache(n, BS),
    "radix-page1": lambda n: RadixCache(n, BS, page_size=1),
    "radix-page4": lambda n: RadixCache(n, BS),
}


def replay(cache, stream, salted: bool):
    """Run the stream; per hit block: (writer tenant, reader tenant, block index, tokens of it used)."""
    writer: dict[int, str] = {}  # block id -> tenant whose request wrote its K/V
    live: list[list[int]] = []
    seen = []
    for tenant, p, tail, finish in stream:
        for _ in range(min(finish, len(live))):
            cache.release(live.pop(0))
        tokens = PREFIXES[p] + tail
        if not tokens:
            continue
        salt = tenant if salted else None
        m = cache.match(tokens, salt)
        n_full = len(m.block_ids) - (m.copy_from_block is not None)
        for i, b in enumerate(m.block_ids[:n_full]):
            seen.append((writer[b], tenant, i, BS))
        if m.copy_from_block is not None:
            seen.append((writer[m.copy_from_block], tenant, n_full, m.copy_tokens))
            writer[m.block_ids[-1]] = tenant
        try:
            new = cache.allocate(-(-len(tokens) // BS) - len(m.block_ids))
        except KVCacheFull:
            cache.release(m.block_ids)
            continue
        for b in new:
            writer[b] = tenant
        table = [*m.block_ids, *new]
        cache.insert(tokens, table, salt)
        live.append(table)
    for table in live:
        cache.release(table)
    return seen


SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("kind", CACHES)
@pytest.mark.parametrize("num_blocks", [12, 64])
@SETTINGS
@given(stream=STREAM)
def test_salted_tenants_never_hit_each_others_blocks(kind, num_blocks, stream):
    cache = CACHES[kind](num_blocks)
    for writer, reader, _, _ in replay(cache, stream, salted=True):
        assert writer == reader, f"{reader} hit a block written by {writer}"
    assert cache.stats().num_used == 0


@pytest.mark.parametrize("kind", CACHES)
def test_without_salts_the_same_streams_cross_tenants(kind):
    stream = [("t0", 1, [0, 1], 0), ("t1", 1, [2, 3], 1), ("t2", 3, [0], 0), ("t0", 3, [1], 0)]
    cross = [s for s in replay(CACHES[kind](64), stream, salted=False) if s[0] != s[1]]
    assert len(cross) >= 2


@pytest.mark.parametrize("kind", CACHES)
@pytest.mark.parametrize("num_blocks", [12, 64])
@SETTINGS
@given(stream=STREAM)
def test_public_prefix_is_the_only_thing_shared(kind, num_blocks, stream):
    cache = PublicPrefixCache(CACHES[kind](num_blocks), [PUBLIC])
    for writer, reader, block, used in replay(cache, stream, salted=True):
        if writer != reader:  # a cross-tenant hit: what was used of the block lies inside the published prefix
            assert block * BS + used <= len(PUBLIC), (writer, reader, block, used)
    assert cache.stats().num_used == 0


def test_public_prefix_shares_the_system_prompt_across_tenants():
    for kind in CACHES:
        cache = PublicPrefixCache(CACHES[kind](64), [PUBLIC])
        stream = [("t0", 1, [0, 1, 2, 3], 1), ("t1", 1, [3, 2, 1, 0], 1), ("t1", 1, [3, 2, 1, 0, 1], 1)]
        seen = replay(cache, stream, salted=True)
        cross = {(b, used) for w, r, b, used in seen if w != r}
        assert {(0, BS), (1, BS)} <= cross  # the public blocks: 8 of PUBLIC's 10 tokens
        assert cross <= {(0, BS), (1, BS), (2, 2)}  # page size 1 also copies the public tokens 8, 9
        assert ("t1", "t1", 2, BS) in seen  # t1's own private block, hit by t1 again

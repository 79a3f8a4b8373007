"""The one "nothing left allocated" check for an engine, read from the prefix cache's own ledger.

The prefix cache (``NoPrefixCache`` when caching is off) owns every block of
the paged pool, so this asks *it*: no block used (cached ones may wait,
evictable), no reference held, and for a radix tree no lock left and the
tree's invariants intact. It also checks that the engine's block manager
tracks no sequence any more. Imported by the engine tests (``from
pool_checks import assert_nothing_allocated``).
"""

from __future__ import annotations

from minikv import LLM
from minikv.prefix import PrefixCache, RadixCache


def assert_cache_empty(cache: PrefixCache, when: str = "after generate") -> None:
    """No block of ``cache`` in use: every one free or evictable, every ref and lock count zero."""
    stats = cache.stats()
    assert stats.num_used + stats.num_evictable + stats.num_free == stats.num_blocks, f"the counts do not add up: {stats}"
    assert stats.num_used == 0, f"{stats.num_used} of {stats.num_blocks} blocks still in use {when} ({stats})"
    ref_count = getattr(cache, "ref_count", None)
    if ref_count is not None:
        held = {b: ref_count(b) for b in range(cache.num_blocks) if ref_count(b)}
        assert not held, f"blocks still referenced {when} (block: refs): {held}"
    if isinstance(cache, RadixCache):
        cache.check_invariants()
        locked = [node for node in cache.nodes() if node.lock_ref]
        assert not locked, f"radix nodes still locked {when}: {locked}"


def assert_nothing_allocated(llm: LLM, when: str = "after generate") -> None:
    """``llm`` holds no KV block: its prefix cache is empty (see above) and no sequence holds blocks."""
    assert_cache_empty(llm.cache, when)
    if llm.block_manager is not None:
        holders = sorted(llm.block_manager.holders)
        assert not holders, f"requests {holders} still hold blocks {when}"

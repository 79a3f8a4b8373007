"""What an engine needs from a prefix cache, and the cache that caches nothing.

A prefix cache owns every physical block of the KV pool. The engine's block
manager talks to it instead of a plain :class:`~minikv.kv.BlockAllocator`:

1. ``m = cache.match(prompt, salt)``: the longest cached prefix, in full
   blocks; the cache takes one reference on each block it returns.
2. ``new = cache.allocate(n)``: the blocks still missing (reference 1 each).
   On :class:`~minikv.errors.KVCacheFull` give the matched blocks back with
   ``cache.release(m.block_ids)`` and try the request later.
3. Run the model on tokens ``m.num_cached_tokens:``; whenever blocks fill up,
   ``cache.insert(tokens_with_kv, block_table, salt)`` makes them shareable.
4. When the sequence finishes (or is preempted): ``cache.release(block_table)``.

Block ids handed out are ``0 .. num_blocks - 1``, the same ids a
:class:`~minikv.kv.KVPool`'s tensors are indexed by.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from minikv.errors import BlockAllocatorError, MinikvError
from minikv.kv.allocator import BlockAllocator


class PrefixCacheError(MinikvError):
    """The prefix cache was used out of order (e.g. reset while blocks are in use)."""


@dataclass(frozen=True)
class Match:
    """A cache hit: blocks holding the first ``num_cached_tokens`` tokens, in order.

    ``num_cached_tokens == len(block_ids) * block_size``; a miss is ``Match((), 0)``.
    The caller owns one reference on each block and must ``release`` it.

    A partial hit (only a token-granular cache gives one, e.g. the radix cache
    at ``page_size=1``): ``copy_from_block`` is set and the *last* block of
    ``block_ids`` is a fresh block of the caller's own. Before running the
    model, copy the first ``copy_tokens`` slots of ``copy_from_block`` into it
    (every layer, K and V; copy-on-write of a partly shared block). Then
    ``num_cached_tokens == (len(block_ids) - 1) * block_size + copy_tokens``.
    """

    block_ids: tuple[int, ...]
    num_cached_tokens: int
    copy_from_block: int | None = None
    copy_tokens: int = 0


@dataclass(frozen=True)
class CacheStats:
    """Counters since creation or the last ``reset``, and the pool's state now.

    Token counters follow vLLM's metrics: ``query_tokens`` sums the prompt
    lengths given to ``match``, ``hit_tokens`` the tokens it found cached.
    Block counts split the pool: ``num_used + num_evictable + num_free ==
    num_blocks``; ``num_cached`` counts blocks with a hash, in use or evictable.
    """

    num_blocks: int
    block_size: int
    num_used: int
    num_evictable: int
    num_free: int
    num_cached: int
    requests: int = 0
    query_tokens: int = 0
    hit_tokens: int = 0
    evictions: int = 0
    collisions: int = 0

    @property
    def hit_rate(self) -> float:
        """``hit_tokens / query_tokens``, 0.0 before any query."""
        return self.hit_tokens / self.query_tokens if self.query_tokens else 0.0


@runtime_checkable
class PrefixCache(Protocol):
    """The one interface between the engine and a prefix cache (hash, radix, a learner's)."""

    num_blocks: int
    block_size: int

    @property
    def num_allocatable(self) -> int:
        """Blocks ``allocate`` can hand out right now: free ones plus evictable cached ones."""
        ...

    def match(self, token_ids: Sequence[int], salt: str | None = None) -> Match:
        """Longest cached prefix of ``token_ids`` in full blocks; takes a ref on each block.

        The hit is capped by :func:`max_cached_blocks`, so the last prompt
        token is always computed (its logits give the first output token).
        Only blocks inserted with the same ``salt`` can be hit.
        """
        ...

    def allocate(self, n: int) -> list[int]:
        """``n`` fresh, unshared blocks with ref 1; all-or-nothing ``KVCacheFull``."""
        ...

    def insert(self, token_ids: Sequence[int], block_ids: Sequence[int], salt: str | None = None) -> int:
        """Make the full blocks of a sequence shareable; returns how many became newly cached.

        ``token_ids`` are the tokens whose K/V are already written, in
        ``block_ids`` (the sequence's block table, which the caller holds).
        """
        ...

    def release(self, block_ids: Sequence[int]) -> None:
        """Drop one ref on each block, the last block first; unreferenced blocks become reusable."""
        ...

    def evict(self, n: int) -> int:
        """Forget up to ``n`` unreferenced cached blocks (LRU first); returns how many."""
        ...

    def stats(self) -> CacheStats:
        """Hit and eviction counters plus the pool's block counts."""
        ...

    def reset(self) -> None:
        """Forget every cached block and zero the counters; raises if blocks are in use."""
        ...


def max_cached_blocks(num_prompt_tokens: int, block_size: int) -> int:
    """The last-token rule: at most ``(len - 1) // block_size`` blocks of a prompt may hit.

    A fully cached prompt would leave nothing to run the model on, yet the
    last prompt token's logits are needed to sample the first output token.
    So the hit is capped at ``len - 1`` tokens, then rounded down to a block.

    >>> max_cached_blocks(48, 16), max_cached_blocks(49, 16), max_cached_blocks(0, 16)
    (2, 3, 0)
    """
    return max(0, (num_prompt_tokens - 1) // block_size)


def as_block_ids(block_ids: Iterable[int]) -> list[int]:
    """The ids as plain ints; ``BlockAllocatorError`` for anything that is not an integer."""
    try:
        return [operator.index(b) for b in block_ids]
    except TypeError as e:
        raise BlockAllocatorError(f"block ids must be integers: {e}") from None


def _check_sizes(num_blocks: int, block_size: int) -> None:
    if num_blocks < 0:
        raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")


class NoPrefixCache:
    """The :class:`PrefixCache` that never hits: a plain :class:`BlockAllocator` behind the same API.

    ``match`` always misses (but still counts the query, so the hit rate reads
    0%), ``insert`` and ``evict`` do nothing, ``release`` frees blocks last
    first. It lets an engine have one code path with caching on or off.
    """

    def __init__(self, num_blocks: int, block_size: int, allocator: BlockAllocator | None = None) -> None:
        """``allocator``: an existing allocator of ``num_blocks`` blocks to hand out from (e.g. a KV pool's own)."""
        _check_sizes(num_blocks, block_size)
        self.num_blocks = int(num_blocks)
        self.block_size = int(block_size)
        if allocator is not None and allocator.num_blocks != self.num_blocks:
            raise ValueError(f"the allocator has {allocator.num_blocks} blocks, not {self.num_blocks}")
        self._allocator = allocator or BlockAllocator(self.num_blocks, block_size=self.block_size)
        self._requests = 0
        self._query_tokens = 0

    @property
    def num_allocatable(self) -> int:
        return self._allocator.num_free

    def match(self, token_ids: Sequence[int], salt: str | None = None) -> Match:
        self._requests += 1
        self._query_tokens += len(token_ids)
        return Match((), 0)

    def allocate(self, n: int) -> list[int]:
        return self._allocator.allocate(n)

    def insert(self, token_ids: Sequence[int], block_ids: Sequence[int], salt: str | None = None) -> int:
        return 0

    def release(self, block_ids: Sequence[int]) -> None:
        self._allocator.free(reversed(as_block_ids(block_ids)))

    def evict(self, n: int) -> int:
        return 0

    def stats(self) -> CacheStats:
        return CacheStats(
            num_blocks=self.num_blocks,
            block_size=self.block_size,
            num_used=self._allocator.num_used,
            num_evictable=0,
            num_free=self._allocator.num_free,
            num_cached=0,
            requests=self._requests,
            query_tokens=self._query_tokens,
        )

    def reset(self) -> None:
        """Back to the state of a new cache; raises :class:`PrefixCacheError` if blocks are in use."""
        if self._allocator.num_used:
            raise PrefixCacheError(
                f"cannot reset the prefix cache while {self._allocator.num_used} blocks are in "
                f"use; finish or abort the running requests first"
            )
        self._requests = 0
        self._query_tokens = 0

    def __repr__(self) -> str:
        return f"NoPrefixCache(num_blocks={self.num_blocks}, block_size={self.block_size})"

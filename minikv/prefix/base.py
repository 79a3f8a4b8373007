"""What an engine needs from a prefix cache, and the cache that caches nothing.

A prefix cache owns every physical block of the KV pool (its
:class:`~minikv.prefix.ledger.BlockLedger` is the one record of which blocks
are used, evictable and free). The engine's block manager talks to it
instead of a plain :class:`~minikv.kv.BlockAllocator`:

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

**Optional methods.** Beyond :class:`PrefixCache`, a cache may offer (the
engine checks with ``hasattr`` and does without):

- ``explain_miss(token_ids, salt, num_cached_tokens) -> MissReport``: why
  the prompt's tokens past the hit missed (:mod:`minikv.prefix.report`: last
  token, partial block, evicted, other salt, never seen; the fields sum to
  ``len(token_ids)``). Called right after ``match`` with its
  ``num_cached_tokens``; takes no references and changes no statistics or
  eviction order. All three caches here have it; the hash and radix caches
  remember recently evicted blocks in a bounded ghost list for it
  (:mod:`minikv.prefix.ghost`).
- ``peek(token_ids, salt=None) -> int``: what ``match`` would hit right now,
  with no side effects (see the comment in :class:`PrefixCache`); the
  scheduling policies rank waiting requests with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from minikv.errors import InvalidRequestError
from minikv.prefix.ghost import check_hit
from minikv.prefix.ledger import BlockLedger, PrefixCacheError, as_block_ids, as_ints
from minikv.prefix.report import MissReport

__all__ = [
    "CacheStats",
    "Match",
    "NoPrefixCache",
    "PrefixCache",
    "PrefixCacheError",
    "as_block_ids",
    "as_token_ids",
    "max_cached_blocks",
]


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

    With a CPU offload tier (:mod:`minikv.prefix.offload`), hits split by
    level: ``offload_hit_tokens`` of the ``hit_tokens`` were copied back from
    host memory (vLLM's ``external_prefix_cache_hits``), the rest were in the
    pool (``pool_hit_tokens``); ``offload_num_blocks`` is the tier's capacity
    and ``offload_num_cached`` the blocks it holds now (0 without a tier).
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
    offload_hit_tokens: int = 0
    offload_num_blocks: int = 0
    offload_num_cached: int = 0

    @property
    def hit_rate(self) -> float:
        """``hit_tokens / query_tokens``, 0.0 before any query."""
        return self.hit_tokens / self.query_tokens if self.query_tokens else 0.0

    @property
    def pool_hit_tokens(self) -> int:
        """Hit tokens found in the KV pool itself (tier 1)."""
        return self.hit_tokens - self.offload_hit_tokens

    @property
    def offload_hit_rate(self) -> float:
        """``offload_hit_tokens / query_tokens``: the share of prompt tokens the tier saved."""
        return self.offload_hit_tokens / self.query_tokens if self.query_tokens else 0.0


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

    # Optional (not part of the runtime check): ``peek(token_ids, salt=None) -> int``,
    # the ``num_cached_tokens`` that ``match`` would return right now, with the same
    # last-token cap, salt isolation and page rules, but taking no reference and
    # changing nothing: no counters, no LRU order, no clocks or hit counts. A
    # scheduler calls it to rank waiting requests (minikv.engine.policies); a cache
    # without it counts as a 0-token hit for every request. All caches here have it.

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


def as_token_ids(token_ids: Sequence[int]) -> list[int]:
    """The token ids as plain ints; :class:`InvalidRequestError` for anything else."""
    return as_ints(token_ids, "token ids", InvalidRequestError)


class NoPrefixCache:
    """The :class:`PrefixCache` that never hits: a plain block pool behind the same API.

    ``match`` always misses (but still counts the query, so the hit rate reads
    0%), ``insert`` and ``evict`` do nothing, ``release`` frees blocks last
    first, to the tail of a FIFO free queue. It lets an engine have one code
    path, and one ledger of its blocks, with caching on or off.
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self._ledger = BlockLedger(num_blocks, block_size)
        self.num_blocks = self._ledger.num_blocks
        self.block_size = self._ledger.block_size
        self._requests = 0
        self._query_tokens = 0

    @property
    def num_allocatable(self) -> int:
        return self._ledger.num_free

    def ref_count(self, block_id: int) -> int:
        """References on the block (0 or 1: nothing is shared)."""
        return self._ledger.ref_count(block_id)

    def peek(self, token_ids: Sequence[int], salt: str | None = None) -> int:
        """Always 0: nothing is cached. Counts nothing (``match`` counts the query)."""
        as_token_ids(token_ids)
        return 0

    def match(self, token_ids: Sequence[int], salt: str | None = None) -> Match:
        self._requests += 1
        self._query_tokens += len(token_ids)
        return Match((), 0)

    def allocate(self, n: int) -> list[int]:
        """``n`` blocks from the head of the free queue; all-or-nothing :class:`KVCacheFull`."""
        return self._ledger.take(self._ledger.require(n, self._ledger.num_free, evictable=False))

    def insert(self, token_ids: Sequence[int], block_ids: Sequence[int], salt: str | None = None) -> int:
        return 0

    def release(self, block_ids: Sequence[int]) -> None:
        """Free the blocks, the last first; validates every id before freeing any."""
        for b in self._ledger.release(block_ids):
            self._ledger.free(b)

    def evict(self, n: int) -> int:
        return 0

    def explain_miss(self, token_ids: Sequence[int], salt: str | None = None, num_cached_tokens: int = 0) -> MissReport:
        """Every token is ``never_seen``: nothing is cached, so no other bucket applies."""
        n = len(as_token_ids(token_ids))
        check_hit(n, num_cached_tokens)
        if num_cached_tokens:
            raise InvalidRequestError(
                f"num_cached_tokens={num_cached_tokens}, but NoPrefixCache never hits; pass the Match it returned"
            )
        return MissReport(never_seen=n)

    def stats(self) -> CacheStats:
        return CacheStats(
            num_blocks=self.num_blocks,
            block_size=self.block_size,
            num_used=self._ledger.num_held,
            num_evictable=0,
            num_free=self._ledger.num_free,
            num_cached=0,
            requests=self._requests,
            query_tokens=self._query_tokens,
        )

    def reset(self) -> None:
        """Zero the counters; raises :class:`PrefixCacheError` if blocks are in use.

        The free queue keeps its order: with nothing cached there is nothing to forget.
        """
        self._ledger.check_idle()
        self._requests = 0
        self._query_tokens = 0

    def __repr__(self) -> str:
        return f"NoPrefixCache(num_blocks={self.num_blocks}, block_size={self.block_size})"

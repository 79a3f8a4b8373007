"""A ref-counted LRU block pool that caches full blocks by their chained hash (vLLM v1 style).

Prefix caching the way vLLM v1 does it (vLLM's design document,
``docs/design/prefix_caching.md``):

- Each *full* block of a sequence gets a hash that covers its parent block's
  hash, its own token ids and extra keys (cache salt, adapter id, ...); see
  :mod:`minikv.prefix.block_hashes`, whose names this module re-exports.
- Every block of the pool has a reference count. Blocks nobody references
  wait in one free queue, and that queue *is* the LRU order: released blocks
  join the tail, ``allocate`` takes from the head, and a cached block taken
  from the head loses its hash right then (that is eviction). Both live in
  the cache's :class:`~minikv.prefix.ledger.BlockLedger`.
- A cached block waiting in the queue keeps its hash, so a later request can
  still hit it; the hit pulls it out of the queue (revival).

**Other eviction policies.** ``policy="lru"`` (the default) is exactly the
behaviour above. Any other :mod:`~minikv.prefix.policies` policy (``"lfu"``,
``"slru"``, ``"shallow"`` or an object) keeps evictable blocks *out* of the
free queue, in a heap ordered by the policy's priority of each block (its
last use, its hit count, its depth), as the radix cache does with its leaves:
``allocate`` takes never-cached free blocks first, then evicts by priority.

**Ghost list.** Evicted blocks leave their salt-free key in a bounded
:class:`~minikv.prefix.ghost.GhostList` (``ghost_size`` keys, default
``num_blocks``), so :meth:`BlockHashCache.explain_miss` can tell an evicted
block from one never seen.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence

from minikv.errors import InvalidRequestError
from minikv.prefix import block_hashes
from minikv.prefix.base import CacheStats, Match, as_block_ids, as_token_ids, max_cached_blocks
from minikv.prefix.block_hashes import (
    HASH_FUNCTIONS,
    ROOT_HASH,
    SALT_KEY,
    TRUSTED_HASHES,
    ExtraKey,
    HashFn,
    block_extra_keys,
    chain_block_hashes,
    encode_block,
    hash_block,
    iter_block_hashes,
    resolve_hash_fn,
)
from minikv.prefix.ghost import ROOT_KEY, GhostList
from minikv.prefix.hash_offload import HashOffloadMixin
from minikv.prefix.hash_peek import HashPeekMixin
from minikv.prefix.hash_policy import HashEvictionMixin, _Entry
from minikv.prefix.ledger import BlockLedger
from minikv.prefix.offload import OffloadTier, check_offload
from minikv.prefix.policies import LRU, EvictionPolicy, bind_policy, resolve_policy

class BlockHashCache(HashPeekMixin, HashEvictionMixin, HashOffloadMixin):
    """A :class:`~minikv.prefix.PrefixCache` over chained block hashes (vLLM v1 style).

    Owns blocks ``0 .. num_blocks - 1``. Each block is *used* (ref > 0),
    *evictable* (ref 0, still cached) or *free* (ref 0, no hash); the last two
    share one LRU free queue (an ``OrderedDict``: O(1) removal from the middle
    when a hit revives a block).

    ``hash_fn``: ``"sha256"`` (default), ``"xxh3_128"``, ``"xxh64"`` or any
    ``bytes -> bytes`` callable. ``verify`` (default: on unless the hash is
    sha256) makes every hit also compare the block's token ids, extra keys and
    parent block with what the cache stored, so a hash collision costs a miss,
    never wrong K/V. A detected collision counts in ``stats().collisions``.

    ``match`` and ``insert`` also take ``extra_keys``, mixed into every block's
    hash (e.g. ``(("lora", 3),)``); requests share blocks only with equal keys.

    ``policy``: ``"lru"`` (default: the free queue's order, as vLLM), or any
    eviction policy of :mod:`minikv.prefix.policies` (a heap of evictable
    blocks). ``ghost_size``: how many evicted block keys to remember for
    :meth:`explain_miss` (default ``num_blocks``; 0 remembers none).
    ``peek`` comes from :mod:`minikv.prefix.hash_peek`.

    ``offload``: an :class:`~minikv.prefix.offload.OffloadTier` over the
    pool's tensors: evicted blocks are copied there and a later hit on them
    is copied back instead of recomputed (:mod:`minikv.prefix.hash_offload`);
    ``stats().offload_hit_tokens`` counts those hits (inside ``hit_tokens``).

    >>> c = BlockHashCache(4, 2, policy="slru")
    >>> table = c.allocate(2)
    >>> c.insert([1, 2, 3, 4], table), c.release(table), c.stats().num_evictable
    (2, None, 2)
    >>> c.evict(1), c.explain_miss([1, 2, 3, 4, 5], None, 0)
    (1, MissReport(hit=0, last_token=0, partial_block=1, evicted=4, other_salt=0, never_seen=0))
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        hash_fn: str | HashFn = "sha256",
        verify: bool | None = None,
        policy: str | EvictionPolicy = "lru",
        ghost_size: int | None = None,
        *,
        offload: OffloadTier | None = None,
    ) -> None:
        self._ledger = BlockLedger(num_blocks, block_size)
        self.offload = check_offload(offload, self._ledger.block_size)
        self.num_blocks = self._ledger.num_blocks
        self.block_size = self._ledger.block_size
        self._hash = resolve_hash_fn(hash_fn)
        self.hash_fn_name: str = (
            hash_fn if isinstance(hash_fn, str) else getattr(hash_fn, "__name__", "custom")
        )
        if verify is not None and not isinstance(verify, bool):
            raise InvalidRequestError(
                f"verify must be True, False or None (None: verify unless the hash is sha256), "
                f"got {verify!r}"
            )
        self.verify = (hash_fn not in TRUSTED_HASHES) if verify is None else verify
        self._by_hash: dict[bytes, _Entry] = {}
        self._by_block: dict[int, _Entry] = {}
        self._uids = itertools.count(1)
        self._policy = resolve_policy(policy)  # a stateful one is bound afresh on each reset
        self._queue_lru = isinstance(self._policy, LRU)  # the free queue is the eviction order
        self._heap: list[tuple[object, int, _Entry]] = []  # evictable blocks (others: policy order)
        self._ghost = GhostList(self.num_blocks if ghost_size is None else ghost_size)
        self._live: dict[int, list[Hashable]] = {}  # ghost key -> salts of cached blocks with it
        self._reset_pool_and_counters()

    def _reset_pool_and_counters(self) -> None:
        self.policy = bind_policy(self._policy, self.num_blocks, self.block_size)
        self._observe = getattr(self.policy, "observe", None)  # a stateful policy watches every match
        self._generation = getattr(self.policy, "generation", 0)
        self._ledger.reset()
        self._heap.clear()
        self._ghost.clear()
        self._clock = 0
        self._num_evictable = 0
        self._requests = 0
        self._query_tokens = 0
        self._hit_tokens = 0
        self._evictions = 0
        self._collisions = 0
        self._offload_hit_tokens = 0
        self._spill: list[tuple[bytes, int, _Entry]] = []  # evicted, not yet copied to the tier
        if self.offload is not None:
            self.offload.reset()

    # ----------------------------------------------------------------- queries

    @property
    def num_allocatable(self) -> int:
        return self._ledger.num_free + (0 if self._queue_lru else self._num_evictable)

    def ref_count(self, block_id: int) -> int:
        return self._ledger.ref_count(block_id)

    def is_cached(self, block_id: int) -> bool:
        return block_id in self._by_block

    def block_hash(self, block_id: int) -> bytes | None:
        """The hash a block is cached under, or None."""
        entry = self._by_block.get(block_id)
        return None if entry is None else entry.block_hash

    def free_queue(self) -> list[int]:
        """Unreferenced blocks, head (next to be reused) first. O(n): for tests and teaching."""
        return self._ledger.free_ids()

    def stats(self) -> CacheStats:
        return CacheStats(
            num_blocks=self.num_blocks,
            block_size=self.block_size,
            num_used=self._ledger.num_held,
            num_evictable=self._num_evictable,
            num_free=self._ledger.num_free - (self._num_evictable if self._queue_lru else 0),
            num_cached=len(self._by_block),
            requests=self._requests,
            query_tokens=self._query_tokens,
            hit_tokens=self._hit_tokens,
            evictions=self._evictions,
            collisions=self._collisions,
            **self._offload_fields(),
        )

    # -------------------------------------------------------------- operations

    def match(
        self,
        token_ids: Sequence[int],
        salt: str | None = None,
        *,
        extra_keys: Sequence[ExtraKey] = (),
    ) -> Match:
        """Longest cached prefix in full blocks (last-token rule applied); takes a ref on each hit.

        Walks the hash chain from the first block and stops at the first miss.
        A hit on an evictable block revives it (it leaves the free queue).
        """
        tokens = as_token_ids(token_ids)
        limit = max_cached_blocks(len(tokens), self.block_size)
        blocks = iter_block_hashes(tokens, self.block_size, salt, extra_keys, self._hash, limit)
        chain = self._walk_chain((h for h, _, _ in blocks), tokens, salt, extra_keys, count=True)
        self._clock += 1
        held = []
        for entry, in_tier in chain:
            if in_tier:
                continue
            b = entry.block_id
            if self._ledger.ref_count(b) == 0:  # revive an evictable block
                if self._queue_lru:
                    self._ledger.unfree(b)
                self._num_evictable -= 1  # (a heap entry goes stale: skipped when popped)
            self._ledger.hold((b,))
            held.append(b)
            entry.last_access = self._clock
            entry.hit_count += 1
        from_tier = [entry for entry, in_tier in chain if in_tier]
        if from_tier:
            self._load_from_tier(from_tier, held)
        hits = [entry.block_id for entry, _ in chain]
        self._requests += 1
        self._query_tokens += len(tokens)
        self._hit_tokens += len(hits) * self.block_size
        if self._observe is not None:
            self._observe(tokens, salt, extra_keys)
        return Match(tuple(hits), len(hits) * self.block_size)

    def allocate(self, n: int) -> list[int]:
        """``n`` blocks from the head of the free queue, ref 1 each; cached ones lose their hash.

        This is strict LRU over *all* unreferenced blocks, as in vLLM: a cached
        block at the head is evicted even if a never-cached block waits behind it.
        All-or-nothing: raises :class:`KVCacheFull` and changes nothing when short.
        """
        if not self._queue_lru:
            n = self._ledger.require(n, self.num_allocatable)
            if n > self._ledger.num_free:
                self._evict_by_policy(n - self._ledger.num_free)
                self._flush_spill()
            return self._ledger.take(n)
        out = self._ledger.take(self._ledger.require(n, self._ledger.num_free))
        for b in out:
            if b in self._by_block:
                self._forget(b)
                self._num_evictable -= 1
                self._evictions += 1
        self._flush_spill()
        return out

    def insert(
        self,
        token_ids: Sequence[int],
        block_ids: Sequence[int],
        salt: str | None = None,
        *,
        extra_keys: Sequence[ExtraKey] = (),
    ) -> int:
        """Cache the full blocks of a sequence; returns how many blocks became newly cached.

        ``token_ids``: the tokens whose K/V are written; ``block_ids``: the
        sequence's block table (held by the caller). Call it again as blocks
        fill: blocks already cached are skipped without rehashing. A block
        whose hash another block already caches is a duplicate: it stays
        uncached and is freed normally on release. Under ``verify``, a hash
        held by *different* content (a collision) stops caching there.
        """
        tokens = as_token_ids(token_ids)
        ids = as_block_ids(block_ids)
        bs = self.block_size
        num_full = len(tokens) // bs
        if num_full > len(ids):
            raise InvalidRequestError(
                f"{len(tokens)} tokens fill {num_full} blocks of {bs}, but the block table "
                f"has only {len(ids)} blocks"
            )
        self._ledger.check_held(ids[:num_full])
        newly = 0
        parent, parent_uid = ROOT_HASH, 0
        key = hash((ROOT_KEY, tuple(extra_keys)))  # the salt-free chain of minikv.prefix.ghost
        self._clock += 1
        for i in range(num_full):
            b = ids[i]
            toks = tuple(tokens[i * bs : (i + 1) * bs])
            extra = block_extra_keys(i, salt, extra_keys)
            own = self._by_block.get(b)
            if own is not None:  # cached earlier by this sequence, or a hit
                if (own.tokens != toks or own.extra_keys != extra) and \
                        self._hash(encode_block(parent, toks, extra)) == own.block_hash:
                    self._collisions += 1  # a hit by a colliding hash (weak hash, verify off): leave it be
                elif own.tokens != toks or own.extra_keys != extra:
                    raise InvalidRequestError(
                        f"block {b} is cached for other tokens or keys than block {i} of this "
                        f"sequence; pass the sequence's own tokens, block table and salt"
                    )
                own.parent_uid = parent_uid  # re-link, in case its old parent was evicted
                own.last_access = self._clock
                parent, parent_uid, key = own.block_hash, own.uid, own.ghost_key
                continue
            h = self._hash(encode_block(parent, toks, extra))
            other = self._by_hash.get(h)
            if other is not None:
                if self.verify and not other.holds(parent_uid, toks, extra):
                    self._collisions += 1
                    break
                other.last_access = self._clock  # (an evictable one's heap entry goes stale)
                parent, parent_uid, key = h, other.uid, other.ghost_key  # duplicate: b stays uncached
                continue
            key = hash((key, toks))
            entry = self._take_over(h, parent_uid, toks, extra)  # the tier's copy, if it has one
            if entry is not None:
                entry.block_id, entry.parent_uid, entry.last_access = b, parent_uid, self._clock
            else:
                entry = _Entry(b, h, toks, extra, parent_uid, next(self._uids), key, salt, (i + 1) * bs,
                               self._clock)  # fmt: skip
            self._by_hash[h] = entry
            self._by_block[b] = entry
            self._live.setdefault(key, []).append(salt)
            newly += 1
            parent, parent_uid = h, entry.uid
        return newly

    def release(self, block_ids: Sequence[int]) -> None:
        """Drop one ref on each block, walking the list *tail first*.

        Blocks reaching ref 0 join the tail of the free queue, so a finished
        sequence's last blocks (longest prefixes, least likely to be shared)
        are evicted before its first ones. Cached blocks keep their hash there.
        Validates everything first: an unknown, unheld or repeated id raises
        :class:`BlockAllocatorError` and releases nothing.
        """
        for b in self._ledger.release(block_ids):
            entry = self._by_block.get(b)
            if entry is not None:
                self._num_evictable += 1
                if not self._queue_lru:  # evictable blocks wait in the policy's heap
                    self._push(entry)
                    continue
            self._ledger.free(b)

    def evict(self, n: int) -> int:
        """Forget the hashes of up to ``n`` evictable blocks, least recently used first.

        The blocks stay where they are in the free queue, now as plain free
        blocks. (Under another policy: in the policy's order, to the free queue's tail.)
        """
        if not self._queue_lru:
            done = self._evict_by_policy(min(max(n, 0), self._num_evictable))
            self._flush_spill()
            return done
        cached_lru_first = (b for b in self._ledger.iter_free() if b in self._by_block)
        victims = list(itertools.islice(cached_lru_first, max(n, 0)))
        for b in victims:
            self._forget(b)
        self._num_evictable -= len(victims)
        self._evictions += len(victims)
        self._flush_spill()
        return len(victims)

    def reset(self) -> None:
        """Forget every cached block, restore the free queue to ``0 .. n-1`` and zero the counters.

        Raises :class:`PrefixCacheError` (and changes nothing) while any block
        is in use: running requests would otherwise hold blocks the cache no
        longer accounts for. Call it when the engine is idle.
        """
        self._ledger.check_idle()
        self._by_hash.clear()
        self._by_block.clear()
        self._live.clear()
        self._reset_pool_and_counters()

    def _forget(self, block_id: int) -> None:
        entry = self._by_block.pop(block_id)
        del self._by_hash[entry.block_hash]
        salts = self._live[entry.ghost_key]
        salts.remove(entry.salt)
        if not salts:
            del self._live[entry.ghost_key]
        self._ghost.add(entry.ghost_key, entry.salt)
        if self.offload is not None:  # copied out at the end of the allocate or evict under way
            self._spill.append((entry.block_hash, block_id, entry))

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"BlockHashCache(num_blocks={self.num_blocks}, block_size={self.block_size}, "
            f"hash_fn={self.hash_fn_name!r}, used={s.num_used}, evictable={s.num_evictable}, "
            f"free={s.num_free}, hit_rate={s.hit_rate:.1%})"
        )


__all__ = ["BlockHashCache", *block_hashes.__all__]

"""The block hash cache's eviction by policy and its miss reports (a mixin of :class:`~minikv.prefix.BlockHashCache`).

Under ``policy="lru"`` the block cache evicts in its free queue's order and
none of the heap code here runs. Under any other policy evictable blocks wait
in a heap keyed by the policy's priority of each :class:`_Entry` (lazy
deletion: an entry popped with an outdated key goes back with its new one;
one whose block was revived or evicted meanwhile is dropped).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from minikv.prefix.base import as_token_ids
from minikv.prefix.block_hashes import ExtraKey, HashFn, iter_block_hashes
from minikv.prefix.ghost import GhostList, block_keys, check_hit, classify
from minikv.prefix.ledger import BlockLedger
from minikv.prefix.policies import EvictionPolicy
from minikv.prefix.report import MissReport


@dataclass
class _Entry:
    """What the cache knows about one cached block.

    ``uid`` is unique per caching event and never reused; ``parent_uid`` is
    the uid of the cached block holding this block's prefix (0: none, first
    block). Comparing uids instead of parent hashes is what makes verification
    safe when two *different* prefixes share a hash. The price, under
    ``verify`` only: a cached child whose parent entry was evicted and cached
    again (new uid) misses until its own sequence inserts again (re-link).
    """

    block_id: int
    block_hash: bytes
    tokens: tuple[int, ...]
    extra_keys: tuple[ExtraKey, ...]
    parent_uid: int
    uid: int
    ghost_key: int = 0  # salt-free key of the prefix up to this block (minikv.prefix.ghost)
    salt: Hashable = None
    end: int = 0  # prompt position just past the block (what eviction policies call depth)
    last_access: int = 0  # logical time of the last match or insert that used the block
    hit_count: int = 0  # matches that hit it

    @property
    def created(self) -> int:
        """Creation order (the uid): what age-aware eviction policies read."""
        return self.uid

    def holds(
        self, parent_uid: int, tokens: tuple[int, ...], extra_keys: tuple[ExtraKey, ...]
    ) -> bool:
        """True when this block's K/V is exactly that block after that cached prefix."""
        return (
            self.parent_uid == parent_uid
            and self.tokens == tokens
            and self.extra_keys == extra_keys
        )



class HashEvictionMixin:
    """Policy-ordered eviction and ``explain_miss`` over the state :class:`~minikv.prefix.BlockHashCache` sets up."""

    block_size: int
    policy: EvictionPolicy
    _ledger: BlockLedger
    _hash: HashFn
    _by_hash: dict[bytes, _Entry]
    _by_block: dict[int, _Entry]
    _heap: list[tuple[object, int, _Entry]]
    _ghost: GhostList
    _live: dict[int, list[Hashable]]
    _num_evictable: int
    _evictions: int
    _generation: int  # the policy's generation the heap is ordered for

    def _forget(self, block_id: int) -> None:  # defined by the cache
        raise NotImplementedError

    def explain_miss(
        self,
        token_ids: Sequence[int],
        salt: str | None = None,
        num_cached_tokens: int = 0,
        *,
        extra_keys: Sequence[ExtraKey] = (),
    ) -> MissReport:
        """Why the prompt missed where it did (:class:`~minikv.prefix.report.MissReport`).

        ``num_cached_tokens``: what ``match`` gave it. A block past the
        longest cached chain is ``evicted`` if the ghost list remembers it
        under this salt or it is still cached but cut off from the chain (a
        parent was evicted); ``other_salt`` if it is cached or remembered
        under another salt (same extra keys); ``never_seen`` otherwise. Takes
        no references and changes no statistics or eviction order.
        """
        tokens = as_token_ids(token_ids)
        n, bs = len(tokens), self.block_size
        hit = check_hit(n, num_cached_tokens)
        full = n // bs
        hashes = [h for h, _, _ in iter_block_hashes(tokens, bs, salt, extra_keys, self._hash, full)]
        held = 0
        while held < full and hashes[held] in self._by_hash:
            held += 1
        keys = block_keys(tokens, bs, full, extra_keys)

        def status(i: int) -> str:
            if hashes[i] in self._by_hash or self._ghost.has(keys[i], salt):
                return "evicted"
            if self._ghost.other_salt(keys[i], salt) or any(s != salt for s in self._live.get(keys[i], ())):
                return "other_salt"
            return "never_seen"

        return classify(n, hit, held * bs, bs, bs, status)

    def _push(self, entry: _Entry) -> None:
        """Queue an evictable block in the policy's heap (dropping stale entries now and then)."""
        if len(self._heap) > 2 * len(self._by_block) + 64 or self._generation != getattr(self.policy, "generation", 0):
            self._generation = getattr(self.policy, "generation", 0)
            self._heap = [(self.policy.priority(e), e.uid, e) for e in self._by_block.values()
                          if self._ledger.ref_count(e.block_id) == 0]  # fmt: skip
            heapq.heapify(self._heap)
        heapq.heappush(self._heap, (self.policy.priority(entry), entry.uid, entry))

    def _evict_by_policy(self, n: int) -> int:
        """Forget ``n`` evictable blocks (``n <= num_evictable``) in policy order; they join the free queue."""
        if self._generation != getattr(self.policy, "generation", 0):  # the policy changed its order
            self._generation = getattr(self.policy, "generation", 0)
            self._heap = [(self.policy.priority(e), e.uid, e) for e in self._by_block.values()
                          if self._ledger.ref_count(e.block_id) == 0]  # fmt: skip
            heapq.heapify(self._heap)
        for _ in range(n):
            while True:
                prio, _, entry = heapq.heappop(self._heap)
                b = entry.block_id
                if self._by_block.get(b) is not entry or self._ledger.ref_count(b):
                    continue  # evicted already, or revived by a hit
                now = self.policy.priority(entry)
                if now != prio:  # used since it was queued: its place moved back
                    heapq.heappush(self._heap, (now, entry.uid, entry))
                    continue
                break
            self._forget(b)
            self._ledger.free(b)
        self._num_evictable -= n
        self._evictions += n
        return n



__all__ = ["HashEvictionMixin"]

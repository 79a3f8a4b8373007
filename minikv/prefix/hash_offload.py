"""The block hash cache's second level (a mixin of :class:`~minikv.prefix.BlockHashCache`): walk, load, spill.

With ``offload=`` an :class:`~minikv.prefix.offload.OffloadTier`, the cache
keeps its one ledger and its rules, and the tier only holds what the pool
evicted:

- **spill**: every block the cache forgets (evicts) is queued with its entry
  and copied to the tier at the end of the ``allocate`` or ``evict`` that
  evicted it, before anybody can write the block again;
- **walk**: ``match`` and ``peek`` follow the hash chain through the pool
  *and* the tier, stopping at the first block in neither. A tier block
  needs a fresh pool block to come back into, so the walk also stops when
  no more blocks could be had (``budget``; reviving an evictable pool block
  takes one from that budget too);
- **load**: ``match`` checks the tier's blocks out, allocates pool blocks
  for them (which may evict others into the tier, never the checked-out
  ones), copies them back and indexes them under their old entries: same
  hash, same uid, so cached children in either level still chain on them
  under ``verify``. The caller holds them like any other hit.
- **exclusive**: when ``insert`` caches a hash the tier holds, the tier's
  copy is discarded and the new entry takes over its uid.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

from minikv.prefix.block_hashes import ExtraKey, block_extra_keys
from minikv.prefix.hash_policy import _Entry
from minikv.prefix.ledger import BlockLedger
from minikv.prefix.offload import OffloadTier, offload_fields


class HashOffloadMixin:
    """Tier-aware chain walk, copy-back and spill over the state :class:`~minikv.prefix.BlockHashCache` sets up."""

    block_size: int
    verify: bool
    offload: OffloadTier | None
    _ledger: BlockLedger
    _by_hash: dict[bytes, _Entry]
    _by_block: dict[int, _Entry]
    _live: dict[int, list[Hashable]]
    _spill: list[tuple[bytes, int, _Entry]]
    _clock: int
    _collisions: int
    _offload_hit_tokens: int

    num_allocatable: int

    def allocate(self, n: int) -> list[int]:  # defined by the cache
        raise NotImplementedError

    def release(self, block_ids: Sequence[int]) -> None:  # defined by the cache
        raise NotImplementedError

    def _walk_chain(
        self,
        hashes: Iterable[bytes],
        tokens: list[int],
        salt: str | None,
        extra_keys: Sequence[ExtraKey],
        count: bool,
    ) -> list[tuple[_Entry, bool]]:
        """The hit chain: ``(entry, in_tier)`` per block from the first, up to the first miss.

        ``count``: a detected collision (under ``verify``) counts in the stats
        (``match``); ``peek`` changes nothing. Reads only.
        """
        tier, bs = self.offload, self.block_size
        budget = self.num_allocatable if tier is not None else 0
        out: list[tuple[_Entry, bool]] = []
        seen: set[int] = set()
        parent_uid = 0
        for i, h in enumerate(hashes):
            entry, in_tier = self._by_hash.get(h), False
            if entry is None and tier is not None:
                in_tier, entry = tier.get(h)
            if entry is None:
                break
            if id(entry) in seen:  # the chain came back to a block it already hit: a hash collision (one block
                if count:          # cannot hold two positions); stop, or the hit would hold that block twice
                    self._collisions += 1
                break
            seen.add(id(entry))
            if self.verify:
                toks = tuple(tokens[i * bs : (i + 1) * bs])
                if not entry.holds(parent_uid, toks, block_extra_keys(i, salt, extra_keys)):
                    if count:
                        self._collisions += 1
                    break
            if tier is not None and (in_tier or self._ledger.ref_count(entry.block_id) == 0):
                if budget < 1:  # no pool block left to copy it into (or to revive it in)
                    break
                budget -= 1
            out.append((entry, in_tier))
            parent_uid = entry.uid
        return out

    def _load_from_tier(self, entries: list[_Entry], held: list[int]) -> None:
        """Copy the tier's ``entries`` back into fresh pool blocks and cache them there again (held, ref 1).

        ``held``: the pool hits this match already holds, given back if the
        allocation fails (it cannot when the walk's budget was right).
        """
        tier = self.offload
        assert tier is not None
        out = tier.checkout([e.block_hash for e in entries])
        try:
            fresh = self.allocate(len(entries))
        except BaseException:
            tier.checkin(out)
            if held:
                self.release(held)
            raise
        tier.load(out, fresh)
        for e, b in zip(entries, fresh):
            e.block_id = b
            e.last_access = self._clock
            e.hit_count += 1
            self._by_hash[e.block_hash] = e
            self._by_block[b] = e
            self._live.setdefault(e.ghost_key, []).append(e.salt)
        self._offload_hit_tokens += len(entries) * self.block_size

    def _offload_fields(self) -> dict[str, int]:
        return offload_fields(self.offload, self._offload_hit_tokens)

    def _flush_spill(self) -> None:
        """Copy the blocks evicted since the last flush to the tier (the most recently evicted last)."""
        if self._spill:
            spill, self._spill = self._spill, []
            assert self.offload is not None
            self.offload.store(spill)

    def _take_over(self, h: bytes, parent_uid: int, toks: tuple[int, ...], extra: tuple[ExtraKey, ...]) -> _Entry | None:
        """``insert`` caches ``h`` in the pool: drop the tier's copy, and return its entry to reuse if it holds this block.

        Reusing the entry (same uid) keeps the tier's cached children of it
        chained under ``verify``. A tier entry for other tokens under the same
        hash is a collision: counted, and the pool's fresh block wins.
        """
        if self.offload is None:
            return None
        found, old = self.offload.discard(h)
        if not found:
            return None
        if not self.verify or old.holds(parent_uid, toks, extra):
            return old
        if old.tokens != toks or old.extra_keys != extra:
            self._collisions += 1
        return None


__all__ = ["HashOffloadMixin"]

"""A second cache level in host memory: blocks evicted from the KV pool wait there, and a hit copies them back.

When the working set outgrows the KV pool, a prefix cache evicts blocks that
are wanted again soon (the interleaved multi-turn chat is the classic case:
every conversation comes back after the others pushed it out). Host memory
is far larger than the pool and copying a block back is far cheaper than
recomputing it, so production engines keep evicted blocks there: vLLM's
CPU offloading connector (``kv_offloading_size``, LRU over a pool of CPU
blocks, transfers on their own CUDA streams) and SGLang's HiCache (host
memory as the L2 of the radix tree's L1; its ``write_back`` policy writes a
block to the host when the device evicts it, as here).

:class:`OffloadTier` is that level, and only the store: fixed host slots
(:meth:`~minikv.kv.KVPool.host_buffer`, pinned on CUDA), an LRU index from
a cache's block key to a slot, its own capacity, and the copies, which go
through the :class:`~minikv.kv.KVPool` (on a side stream on CUDA). The
prefix caches keep every rule of *when*:

- a block the cache evicts is :meth:`store` d (copied out) under its key;
  when the tier is full, its least recently stored or hit block is dropped;
- ``match`` continues its walk into the tier past the pool's last hit; the
  tier blocks it hits are :meth:`checkout` ed (so nothing evicted meanwhile
  can push them out), fresh pool blocks are allocated for them, then
  :meth:`load` copies them back and frees their slots; the cache indexes
  them again, exactly as if it had computed them;
- a key the pool caches again is :meth:`discard` ed: a block lives in one
  level at a time (an *exclusive* hierarchy, like a victim cache), so the
  tier's capacity holds only blocks the pool lacks.

The keys are the caches' own: the block hash for
:class:`~minikv.prefix.BlockHashCache`, and for
:class:`~minikv.prefix.RadixCache` the same sha256 chain over its path's
full blocks (salt and extra keys included), so a radix tree keeps no
evicted nodes. ``meta`` is whatever the cache wants back on a hit (the hash
cache's entry).

>>> from minikv.kv import KVPool
>>> pool = KVPool(1, 1, 2, block_size=2, num_blocks=4)
>>> tier = OffloadTier(pool, num_blocks=2)
>>> pool.kv[:, :, 3] = 7.0
>>> tier.store([(b"a", 3, None)])
>>> b"a" in tier, tier.stats().num_cached
(True, 1)
>>> slots = tier.checkout([b"a"]); tier.load(slots, [0]); float(pool.kv[0, 0, 0, 1, 0, 1])
7.0
>>> b"a" in tier, tier.stats()
(False, OffloadStats(num_blocks=2, num_cached=0, stored=1, loaded=1, dropped=0))
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from minikv.errors import InvalidRequestError
from minikv.prefix.ledger import PrefixCacheError, whole_number


@dataclass(frozen=True)
class OffloadStats:
    """The tier's state and counters (blocks).

    ``stored``: blocks copied out of the pool; ``loaded``: copied back on a
    hit; ``dropped``: pushed out of the tier by its LRU (or too many at once
    to keep). The pool's hits on the tier are the cache's
    ``CacheStats.offload_hit_tokens``.
    """

    num_blocks: int
    num_cached: int
    stored: int = 0
    loaded: int = 0
    dropped: int = 0


@dataclass
class CheckedOut:
    """Tier blocks a ``match`` is about to copy back: their slots stay reserved until ``load`` or ``checkin``."""

    keys: list[Hashable]
    slots: list[int]
    metas: list[Any]


class OffloadTier:
    """``num_blocks`` host slots holding evicted KV blocks of ``pool``, looked up by key, LRU.

    ``pool``: the :class:`~minikv.kv.KVPool` whose blocks it stores (its
    ``host_buffer``, ``save_blocks`` and ``load_blocks`` do the copies;
    for a simulation without a model a one-layer, one-head, ``head_dim=1``
    pool costs almost nothing). Give it to a cache as ``offload=``.
    """

    def __init__(self, pool: Any, num_blocks: int) -> None:
        self.num_blocks = whole_number("cpu_offload_blocks", num_blocks, 1, "4096")
        for name in ("host_buffer", "save_blocks", "load_blocks", "block_size", "bytes_per_block"):
            if not hasattr(pool, name):
                raise InvalidRequestError(
                    f"an OffloadTier copies blocks through a minikv.kv.KVPool, which has {name!r}; "
                    f"got {type(pool).__name__}"
                )
        self.pool = pool
        self.block_size: int = pool.block_size
        self.host = pool.host_buffer(self.num_blocks)  # [num_blocks, 2, L, bs, H, D]
        self._index: OrderedDict[Hashable, tuple[int, Any]] = OrderedDict()  # key -> (slot, meta), LRU first
        self._free: list[int] = []
        self._out = 0  # slots reserved by a checkout, not yet loaded
        self.reset()

    # ----------------------------------------------------------------- queries

    @property
    def memory_bytes(self) -> int:
        """Host bytes the tier's slots take."""
        return self.num_blocks * self.pool.bytes_per_block

    def __contains__(self, key: Hashable) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: Hashable) -> tuple[bool, Any]:
        """``(True, meta)`` when ``key`` is in the tier, else ``(False, None)``; changes nothing (no LRU move)."""
        hit = self._index.get(key)
        return (False, None) if hit is None else (True, hit[1])

    def keys(self) -> list[Hashable]:
        """The keys, least recently stored or hit first (the next dropped first)."""
        return list(self._index)

    def stats(self) -> OffloadStats:
        return OffloadStats(self.num_blocks, len(self._index), self._stored, self._loaded, self._dropped)

    # ------------------------------------------------------------- operations

    def store(self, items: Sequence[tuple[Hashable, int, Any]]) -> None:
        """Copy pool blocks out: each ``(key, block_id, meta)`` becomes the most recent entry.

        Call it before the blocks are written again (the caches call it in
        the ``allocate`` or ``evict`` that evicts them). A full tier drops its
        least recent entries; when more blocks come than the tier has slots
        left, only the last ones are kept (the first would be dropped at once).
        A key already there is replaced; a key given twice keeps its last block.
        """
        last = {key: i for i, (key, _, _) in enumerate(items)}  # a key given twice: its last block counts
        items = [item for i, item in enumerate(items) if last[item[0]] == i]
        for key, _, _ in items:
            old = self._index.pop(key, None)
            if old is not None:
                self._free.append(old[0])
        room = self.num_blocks - self._out
        keep = list(items[len(items) - room :]) if len(items) > room else list(items)
        self._dropped += len(items) - len(keep)
        slots = []
        for key, _, meta in keep:
            if not self._free:
                _, (slot, _) = self._index.popitem(last=False)
                self._free.append(slot)
                self._dropped += 1
            slot = self._free.pop()
            self._index[key] = (slot, meta)
            slots.append(slot)
        self.pool.save_blocks([b for _, b, _ in keep], self.host, slots)
        self._stored += len(keep)

    def checkout(self, keys: Sequence[Hashable]) -> CheckedOut:
        """Take ``keys`` out of the index for a copy back, keeping their slots until :meth:`load`.

        Every key must be in the tier (``get`` it first); a missing one raises
        :class:`~minikv.prefix.PrefixCacheError` and nothing changes.
        """
        missing = [k for k in keys if k not in self._index]
        if missing:
            raise PrefixCacheError(f"{len(missing)} keys are not in the offload tier; check with get() first")
        slots, metas = [], []
        for k in keys:
            slot, meta = self._index.pop(k)
            slots.append(slot)
            metas.append(meta)
        self._out += len(keys)
        return CheckedOut(list(keys), slots, metas)

    def load(self, out: CheckedOut, block_ids: Sequence[int]) -> None:
        """Copy checked-out blocks into pool blocks ``block_ids`` (one each, in order) and free their slots."""
        if len(block_ids) != len(out.slots):
            raise InvalidRequestError(f"{len(out.slots)} blocks are checked out but {len(block_ids)} pool blocks given")
        self.pool.load_blocks(self.host, out.slots, list(block_ids))
        self._loaded += len(out.slots)
        self._release(out)

    def checkin(self, out: CheckedOut) -> None:
        """Put checked-out blocks back, most recent (the copy back did not happen)."""
        self._out -= len(out.slots)
        for k, slot, meta in zip(out.keys, out.slots, out.metas):
            self._index[k] = (slot, meta)
        out.slots, out.keys, out.metas = [], [], []

    def discard(self, key: Hashable) -> tuple[bool, Any]:
        """Forget ``key`` (the pool caches it again); returns what :meth:`get` would have."""
        hit = self._index.pop(key, None)
        if hit is None:
            return False, None
        self._free.append(hit[0])
        return True, hit[1]

    def reset(self) -> None:
        """Forget every block and zero the counters; :class:`PrefixCacheError` while a copy back is pending."""
        if self._out:
            raise PrefixCacheError(f"cannot reset the offload tier while {self._out} blocks are checked out")
        self._index.clear()
        self._free = list(range(self.num_blocks - 1, -1, -1))  # slot 0 taken first
        self._stored = self._loaded = self._dropped = 0

    def _release(self, out: CheckedOut) -> None:
        self._out -= len(out.slots)
        self._free.extend(out.slots)
        out.slots, out.keys, out.metas = [], [], []

    def check_invariants(self) -> None:
        """Every slot is free, indexed or checked out, exactly once; AssertionError otherwise (for tests)."""
        used = [slot for slot, _ in self._index.values()]
        if len(set(used) | set(self._free)) != len(used) + len(self._free):
            raise AssertionError("a host slot is both free and indexed, or indexed twice")
        if len(used) + len(self._free) + self._out != self.num_blocks:
            raise AssertionError(
                f"{len(used)} indexed + {len(self._free)} free + {self._out} checked out != {self.num_blocks} slots"
            )

    @property
    def num_checked_out(self) -> int:
        """Slots reserved by a pending copy back (0 whenever no ``match`` is running)."""
        return self._out

    def __repr__(self) -> str:
        return f"OffloadTier(num_blocks={self.num_blocks}, cached={len(self._index)}, block_size={self.block_size})"


TIER_METHODS = ("get", "store", "checkout", "load", "checkin", "discard", "reset", "stats", "__contains__", "__len__")
"""What the prefix caches call on a tier (with its ``block_size``); :class:`OffloadTier` has them all."""


def tier_lacks(tier: object) -> list[str]:
    """The names of :data:`TIER_METHODS` and ``block_size`` that ``tier`` (an object or a class) lacks."""
    missing = [m for m in TIER_METHODS if not callable(getattr(tier, m, None))]
    if isinstance(tier, type):
        return missing
    return missing + ([] if isinstance(getattr(tier, "block_size", None), int) else ["block_size"])


def check_offload(offload: object, block_size: int) -> OffloadTier | None:
    """A cache's ``offload=`` argument: None, or a tier over blocks of ``block_size``.

    A tier is an :class:`OffloadTier` (a subclass of it, say) or any object with its methods
    (:data:`TIER_METHODS`) and ``block_size``; what it lacks is named.
    """
    if offload is None:
        return None
    missing = [] if isinstance(offload, OffloadTier) else tier_lacks(offload)
    if missing:
        raise InvalidRequestError(
            f"offload must be an OffloadTier (minikv.prefix.offload), a subclass, or an object with its methods, "
            f"or None; {type(offload).__name__} lacks {', '.join(map(repr, missing))}; "
            f"with LLM, give cpu_offload_blocks= or cpu_offload_gb= (and cpu_offload_cls= for your own tier class)"
        )
    if offload.block_size != block_size:  # type: ignore[attr-defined]
        raise InvalidRequestError(
            f"the offload tier stores blocks of {offload.block_size} tokens but the cache's are {block_size}; "  # type: ignore[attr-defined]
            f"build the tier over the pool the cache indexes"
        )
    return offload  # type: ignore[return-value]


def offload_fields(tier: OffloadTier | None, hit_tokens: int) -> dict[str, int]:
    """The tier's fields of :class:`~minikv.prefix.CacheStats` (all 0 without a tier)."""
    if tier is None:
        return {}
    s = tier.stats()
    return {"offload_hit_tokens": hit_tokens, "offload_num_blocks": s.num_blocks, "offload_num_cached": s.num_cached}


def blocks_for_gb(gb: float, bytes_per_block: int) -> int:
    """How many blocks of ``bytes_per_block`` fit in ``gb`` GiB (``cpu_offload_gb``).

    >>> blocks_for_gb(1, 1 << 20)
    1024
    """
    return int(gb * (1 << 30)) // bytes_per_block


__all__ = [
    "TIER_METHODS", "CheckedOut", "OffloadStats", "OffloadTier", "blocks_for_gb", "check_offload", "offload_fields",
    "tier_lacks",
]

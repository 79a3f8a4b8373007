"""The block ledger: who holds which KV block, and which blocks ``allocate`` may take.

Every prefix cache (:class:`~minikv.prefix.NoPrefixCache`,
:class:`~minikv.prefix.BlockHashCache`, :class:`~minikv.prefix.RadixCache`)
owns the blocks ``0 .. num_blocks - 1`` of the KV pool. What they all need to
know about those blocks is kept here, once:

- a **reference count** per block: how many running requests hold it
  (``match`` and ``allocate`` add one, ``release`` drops one);
- a **free queue**: the blocks ``allocate`` takes, head first, and the tail
  that released blocks join. *What* may wait in it is the cache's choice:
  the hash cache keeps its evictable cached blocks there too (the queue is
  its LRU order, so taking the head may evict a cached block), the radix
  cache only blocks that are in no tree (its evictable ones wait in the tree);
- **validation before any change**: releasing an unknown, unheld or repeated
  id, or inserting a block nobody holds, raises
  :class:`~minikv.errors.BlockAllocatorError` and changes nothing;
- the **messages** of :class:`~minikv.errors.KVCacheFull` and of a refused
  reset, so every cache explains a full pool the same way.

The ledger knows nothing of hashes or trees: each cache decides how many
blocks it could hand out (``available``) and which zero-reference blocks go
back to the free queue.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Iterable, Iterator

from minikv.errors import BlockAllocatorError, InvalidRequestError, KVCacheFull, MinikvError
from minikv.kv.allocator import check_given_back
from minikv.validation import is_int


class PrefixCacheError(MinikvError):
    """The prefix cache was used out of order (e.g. reset while blocks are in use)."""


def whole_number(name: str, value: object, minimum: int, example: str) -> int:
    """``value`` as an int ``>= minimum``, else :class:`InvalidRequestError` saying what to give.

    Bools are refused although Python counts them as ints: ``num_blocks=True``
    is a slip, not one block.

    >>> whole_number("block_size", 16, 1, "16")
    16
    """
    expect = f"{name} must be a whole number >= {minimum} (e.g. {example})"
    if not is_int(value):  # the int test every user-facing option uses (bools refused)
        kind = "" if isinstance(value, bool) else f" of type {type(value).__name__}"
        raise InvalidRequestError(f"{expect}, got {value!r}{kind}")
    if value < minimum:
        raise InvalidRequestError(f"{expect}, got {value}")
    return int(value)


def check_sizes(num_blocks: object, block_size: object) -> tuple[int, int]:
    """A cache's ``(num_blocks, block_size)`` as ints, or :class:`InvalidRequestError`."""
    return (
        whole_number("num_blocks", num_blocks, 0, "64"),
        whole_number("block_size", block_size, 1, "16"),
    )


def as_ints(values: Iterable[int], what: str, error: type[MinikvError]) -> list[int]:
    """``values`` as plain ints; ``error`` naming ``what`` for anything that is not an integer."""
    try:
        return list(map(operator.index, values))
    except TypeError as e:
        raise error(f"{what} must be integers: {e}") from None


def as_block_ids(block_ids: Iterable[int]) -> list[int]:
    """The ids as plain ints; ``BlockAllocatorError`` for anything that is not an integer."""
    return as_ints(block_ids, "block ids", BlockAllocatorError)


class BlockLedger:
    """Reference counts and the free queue of blocks ``0 .. num_blocks - 1``.

    Starts with every block free, in id order. ``num_held`` counts blocks
    with a reference; a block in the free queue never has one.

    >>> led = BlockLedger(4, block_size=16)
    >>> led.take(2), led.num_held, led.release([0, 1]), led.num_free
    ([0, 1], 2, [1, 0], 2)
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks, self.block_size = check_sizes(num_blocks, block_size)
        self._refs: list[int] = []
        self._free: OrderedDict[int, None] = OrderedDict()
        self._num_held = 0
        self.reset()

    # ----------------------------------------------------------------- queries

    @property
    def num_free(self) -> int:
        """Blocks waiting in the free queue."""
        return len(self._free)

    @property
    def num_held(self) -> int:
        """Blocks with at least one reference."""
        return self._num_held

    def ref_count(self, block_id: int) -> int:
        return self._refs[block_id]

    def is_free(self, block_id: int) -> bool:
        """True when ``block_id`` waits in the free queue."""
        return block_id in self._free

    def free_ids(self) -> list[int]:
        """The free queue, head (next taken) first. O(n): for tests and teaching."""
        return list(self._free)

    def iter_free(self) -> Iterator[int]:
        """The free queue, head first, lazily (do not change the queue meanwhile)."""
        return iter(self._free)

    # -------------------------------------------------------------- validation

    def require(self, n: int, available: int, holders: str = "running requests", *, evictable: bool = True) -> int:
        """Check that ``n`` blocks can be handed out; returns ``n`` as an int.

        ``available``: how many the cache could give (free, plus evictable
        where it has such). A count that is not a whole number ``>= 0``
        raises :class:`InvalidRequestError`; more than ``available``
        raises :class:`KVCacheFull` with a message naming the remedy.
        ``holders`` says in the message who holds the other blocks.
        """
        if isinstance(n, bool) or not isinstance(n, int):
            n = whole_number("the number of blocks to allocate", n, 0, "2")
        if n < 0:
            raise InvalidRequestError(f"cannot allocate a negative number of blocks ({n})")
        if n > available:
            kind = "free or evictable" if evictable else "free"
            raise KVCacheFull(
                f"the KV pool has {available} {kind} blocks of {self.block_size} tokens but {n} are "
                f"needed ({self.num_blocks - available} of {self.num_blocks} blocks are held by "
                f"{holders}); raise num_blocks or kv_cache_memory, or shorten the prompt"
            )
        return n

    def check_held(self, block_ids: Iterable[int]) -> None:
        """Raise :class:`BlockAllocatorError` unless every block is held (for ``insert``)."""
        for b in block_ids:
            if not 0 <= b < self.num_blocks or self._refs[b] == 0:
                raise BlockAllocatorError(
                    f"block {b} is not held by anyone; insert only blocks that match() or "
                    f"allocate() gave the sequence and that it has not released"
                )

    def check_release(self, block_ids: Iterable[int]) -> list[int]:
        """The ids as ints, after checking each exists, is held and appears once.

        Raises :class:`BlockAllocatorError` on the first bad id; nothing changes.
        """
        return check_given_back(
            block_ids, self.num_blocks, lambda b: self._refs[b] > 0, action="release",
            source="match() or allocate()",
            unheld="block {b} is not held (already free: released twice, or never handed out); "
                   "release each block of a sequence once")

    def check_idle(self) -> None:
        """Raise :class:`PrefixCacheError` while any block is held (before a reset)."""
        if self._num_held:
            raise PrefixCacheError(
                f"cannot reset the prefix cache while {self._num_held} blocks are in use; finish "
                f"or abort the running requests first"
            )

    # ----------------------------------------------------------------- changes

    def take(self, n: int) -> list[int]:
        """Pop ``n`` blocks from the head of the free queue, reference 1 each.

        The caller has checked with :meth:`require` (and made room, e.g. by
        evicting); taking more than the queue holds is a bug in the cache.
        """
        if n > len(self._free):
            raise AssertionError(f"take({n}) with only {len(self._free)} blocks in the free queue")
        out = [self._free.popitem(last=False)[0] for _ in range(n)]
        for b in out:
            self._refs[b] = 1
        self._num_held += n
        return out

    def hold(self, block_ids: Iterable[int]) -> None:
        """One more reference on each block; none of them may be in the free queue."""
        for b in block_ids:
            if b in self._free:
                raise AssertionError(f"block {b} is held while it waits in the free queue")
            if self._refs[b] == 0:
                self._num_held += 1
            self._refs[b] += 1

    def drop(self, ids: list[int]) -> list[int]:
        """One reference less on each of ``ids`` (checked by :meth:`check_release`).

        Returns the blocks nobody holds any more, *last first*: the order in
        which a cache that frees them puts them at the tail of the queue, so
        a sequence's first blocks (its most shareable prefix) are reused last.
        """
        zeroed = []
        for b in reversed(ids):
            self._refs[b] -= 1
            if self._refs[b] == 0:
                zeroed.append(b)
        self._num_held -= len(zeroed)
        return zeroed

    def release(self, block_ids: Iterable[int]) -> list[int]:
        """:meth:`check_release` then :meth:`drop`: the blocks whose last reference went, last first."""
        return self.drop(self.check_release(block_ids))

    def free(self, block_id: int) -> None:
        """Put an unreferenced block at the tail of the free queue (taken last)."""
        if self._refs[block_id] or block_id in self._free:
            raise AssertionError(f"block {block_id} is held or already free")
        self._free[block_id] = None

    def unfree(self, block_id: int) -> None:
        """Take a block out of the middle of the free queue (a hit revives a cached block)."""
        del self._free[block_id]

    def reset(self) -> None:
        """Every block free, in id order, no references (call :meth:`check_idle` first)."""
        self._refs = [0] * self.num_blocks
        self._free = OrderedDict.fromkeys(range(self.num_blocks))
        self._num_held = 0

    def check_invariants(self) -> None:
        """Recount from scratch; AssertionError on a mismatch (for tests)."""
        if any(r < 0 for r in self._refs):
            raise AssertionError("a negative ref count")
        if any(self._refs[b] for b in self._free):
            raise AssertionError("a held block waits in the free queue")
        if self._num_held != sum(1 for r in self._refs if r):
            raise AssertionError(f"num_held is {self._num_held}, should be {sum(1 for r in self._refs if r)}")

    def __repr__(self) -> str:
        return (
            f"BlockLedger(num_blocks={self.num_blocks}, block_size={self.block_size}, "
            f"held={self._num_held}, free={len(self._free)})"
        )

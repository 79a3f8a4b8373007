"""A free list of fixed-size KV blocks.

The paged KV pool is cut into ``num_blocks`` blocks of ``block_size`` token
slots each. :class:`BlockAllocator` only hands out block *ids*; it never
touches tensors. It keeps the free ids in a FIFO queue: ``allocate`` takes
from the head, ``free`` appends to the tail, so a block that was just freed
is the last one to be reused (the order a prefix cache later turns into LRU
eviction). Every operation is O(1) per block.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Iterable

from minikv.errors import BlockAllocatorError, KVCacheFull


def check_given_back(block_ids: Iterable[int], num_blocks: int, is_held: Callable[[int], bool], *,
                     action: str, source: str, unheld: str) -> list[int]:
    """Validate ids handed back (``free`` here, a prefix cache's ``release``) before anything changes.

    Returns them as ints. Raises :class:`BlockAllocatorError` for a non-integer,
    an id outside ``0 .. num_blocks - 1``, one that ``is_held`` says is not
    handed out, or one given twice; ``unheld`` is that message, with ``{b}``
    for the id. The one copy of this check, shared by every block ledger.
    """
    try:
        ids = [operator.index(b) for b in block_ids]
    except TypeError as e:
        raise BlockAllocatorError(f"block ids must be integers: {e}") from None
    seen: set[int] = set()
    for b in ids:
        if not 0 <= b < num_blocks:
            raise BlockAllocatorError(f"block {b} does not exist: the pool has blocks 0..{num_blocks - 1}; "
                                      f"{action} only ids that {source} returned")
        if not is_held(b) or b in seen:
            raise BlockAllocatorError(unheld.format(b=b))
        seen.add(b)
    return ids


class BlockAllocator:
    """Hands out and takes back block ids ``0 .. num_blocks - 1``.

    - ``allocate(n)`` is all-or-nothing: when fewer than ``n`` blocks are free
      it raises :class:`KVCacheFull` and hands out nothing.
    - ``free(ids)`` validates every id first (in range, currently allocated,
      not repeated); on a bad id it raises :class:`BlockAllocatorError` and
      frees nothing.

    ``block_size`` is optional and only used to make error messages speak in
    tokens.
    """

    def __init__(self, num_blocks: int, block_size: int | None = None) -> None:
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        self._num_blocks = int(num_blocks)
        self.block_size = block_size
        self._free_queue: deque[int] = deque(range(self._num_blocks))
        self._allocated: list[bool] = [False] * self._num_blocks

    @property
    def num_blocks(self) -> int:
        """Total number of blocks, free or not."""
        return self._num_blocks

    @property
    def num_free(self) -> int:
        return len(self._free_queue)

    @property
    def num_used(self) -> int:
        return self._num_blocks - len(self._free_queue)

    def is_allocated(self, block_id: int) -> bool:
        """True when ``block_id`` is currently handed out."""
        return 0 <= block_id < self._num_blocks and self._allocated[block_id]

    def allocate(self, n: int = 1) -> list[int]:
        """Take ``n`` free blocks from the head of the queue (oldest freed first)."""
        if n < 0:
            raise ValueError(f"cannot allocate a negative number of blocks ({n})")
        if n > len(self._free_queue):
            of_tokens = f" of {self.block_size} tokens" if self.block_size else ""
            raise KVCacheFull(
                f"the KV pool has {len(self._free_queue)} free blocks{of_tokens} "
                f"but {n} are needed; raise num_blocks or kv_cache_memory, "
                f"or shorten the prompt"
            )
        ids = [self._free_queue.popleft() for _ in range(n)]
        for b in ids:
            self._allocated[b] = True
        return ids

    def free(self, block_ids: Iterable[int]) -> None:
        """Return blocks to the tail of the free queue, in the order given.

        Raises :class:`BlockAllocatorError` (and frees nothing) if an id is out
        of range, is not currently allocated (double free, or never handed
        out), or appears twice in ``block_ids``.
        """
        ids = check_given_back(
            block_ids, self._num_blocks, lambda b: self._allocated[b], action="free", source="allocate()",
            unheld="block {b} is already free (double free, or it was never allocated); "
                   "free each allocated block exactly once")
        for b in ids:
            self._allocated[b] = False
            self._free_queue.append(b)

    def __repr__(self) -> str:
        return (
            f"BlockAllocator(num_blocks={self._num_blocks}, free={self.num_free}, "
            f"used={self.num_used})"
        )

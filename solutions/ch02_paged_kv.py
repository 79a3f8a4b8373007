"""Chapter 02: paged KV blocks (see chapters/02_paged_kv.ipynb).

Exercises 2.1-2.4: a block allocator, slot mapping through a block table, a
block table that grows as a sequence decodes, and decode attention that reads
the KV cache through block tables. Check your work with
``minikv grade --chapter 2``, or ``minikv.grade.check("2.1")`` in the notebook.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from minikv.errors import BlockAllocatorError, KVCacheFull


class BlockAllocator:
    """Exercise 2.1: block allocator.

    The KV pool is cut into ``num_blocks`` blocks, numbered ``0 .. num_blocks - 1``.
    The allocator only hands out and takes back block *ids*; it never touches tensors.

    * ``allocate(n)`` returns ``n`` distinct free block ids (a ``list[int]``)
      and marks them used. It is all-or-nothing: when fewer than ``n`` blocks
      are free, raise ``KVCacheFull`` and hand out nothing.
    * ``free(block_ids)`` gives blocks back. If any id is not a block of this
      pool, is not currently allocated (a double free, or never handed out),
      or appears twice in ``block_ids``, raise ``BlockAllocatorError`` and
      free nothing.
    * ``num_free`` is the number of free blocks.

    Which free block you hand out first is up to you (a list used as a stack
    or a ``collections.deque`` used as a queue both work).

    >>> alloc = BlockAllocator(num_blocks=4)
    >>> a = alloc.allocate(3)
    >>> alloc.num_free, len(set(a))
    (1, 3)
    >>> alloc.free(a[:1]); alloc.num_free
    2
    """

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        ### BEGIN SOLUTION
        self.free_ids = list(range(num_blocks - 1, -1, -1))  # a stack: pop() hands out 0, 1, 2, ... first
        self.used = [False] * num_blocks
        ### END SOLUTION

    @property
    def num_free(self) -> int:
        """How many blocks are free."""
        ### BEGIN SOLUTION
        return len(self.free_ids)
        ### END SOLUTION

    def allocate(self, n: int) -> list[int]:
        """``n`` free block ids, now marked used; ``KVCacheFull`` (handing out nothing) if fewer are free."""
        ### BEGIN SOLUTION
        if n > len(self.free_ids):
            raise KVCacheFull(f"{n} blocks needed but only {len(self.free_ids)} of {self.num_blocks} are free")
        ids = [self.free_ids.pop() for _ in range(n)]
        for b in ids:
            self.used[b] = True
        return ids
        ### END SOLUTION

    def free(self, block_ids: Iterable[int]) -> None:
        """Give ``block_ids`` back; ``BlockAllocatorError`` (freeing nothing) on a bad or repeated id."""
        ### BEGIN SOLUTION
        ids = list(block_ids)
        for i, b in enumerate(ids):
            if not 0 <= b < self.num_blocks:
                raise BlockAllocatorError(f"block {b} is not a block of this pool (0..{self.num_blocks - 1})")
            if not self.used[b] or b in ids[:i]:
                raise BlockAllocatorError(f"block {b} is already free (double free?)")
        for b in ids:  # every id checked: now it is safe to change the state
            self.used[b] = False
            self.free_ids.append(b)
        ### END SOLUTION


def slot_mapping(block_table: Sequence[int], positions: Iterable[int], block_size: int) -> list[int]:
    """Exercise 2.2: slot mapping.

    A sequence's block table lists the blocks it owns, in token order. Token
    ``pos`` lives in the ``pos // block_size``-th of them, at offset
    ``pos % block_size`` inside it. Its *slot*, the row of the pool seen as
    one long array of ``num_blocks * block_size`` token slots, is::

        block_table[pos // block_size] * block_size + pos % block_size

    Return the slot of each position, in order. Raise ``IndexError`` for a
    position that is negative or past the blocks in the table (careful: a
    negative Python index would silently read the table from its end).

    >>> slot_mapping([7, 2], positions=[0, 1, 4, 5], block_size=4)  # tokens 0-3 in block 7, 4-7 in block 2
    [28, 29, 8, 9]
    """
    ### BEGIN SOLUTION
    slots = []
    for pos in positions:
        index = pos // block_size
        if pos < 0 or index >= len(block_table):
            raise IndexError(f"position {pos} is outside {len(block_table)} blocks of {block_size} tokens")
        slots.append(block_table[index] * block_size + pos % block_size)
    return slots
    ### END SOLUTION


class BlockTable:
    """Exercise 2.3: block table growth.

    The blocks of one sequence (``blocks``, a list in token order) and how
    many of its tokens are stored (``num_tokens``). The last block may have
    free slots left; new tokens fill those before any new block is taken.

    * ``blocks_needed(n_new)``: how many *new* blocks appending ``n_new``
      tokens needs (0 while they fit in the slots already owned).
    * ``append_tokens(n_new, allocator)``: take those blocks from
      ``allocator`` (anything with ``allocate(n) -> list[int]``, such as your
      ``BlockAllocator``), add them to ``blocks``, count the new tokens in
      ``num_tokens``, and return the new tokens' slots (positions
      ``num_tokens .. num_tokens + n_new - 1`` before the call), in order.
      If the allocator raises ``KVCacheFull``, the table must stay as it was.

    >>> table = BlockTable(block_size=4, blocks=[9], num_tokens=3)   # one free slot left in block 9
    >>> table.blocks_needed(1), table.blocks_needed(2), table.blocks_needed(6)
    (0, 1, 2)
    """

    def __init__(self, block_size: int, blocks: Sequence[int] = (), num_tokens: int = 0) -> None:
        """Keep ``block_size``, ``blocks`` as a list of the table's own, and ``num_tokens``."""
        ### BEGIN SOLUTION
        self.block_size = block_size
        self.blocks: list[int] = list(blocks)  # a copy: appending must not change the caller's list
        self.num_tokens = num_tokens
        ### END SOLUTION

    def blocks_needed(self, n_new: int) -> int:
        """New blocks that appending ``n_new`` tokens takes."""
        ### BEGIN SOLUTION
        total = self.num_tokens + n_new
        blocks_for_total = (total + self.block_size - 1) // self.block_size  # ceiling division
        return max(0, blocks_for_total - len(self.blocks))
        ### END SOLUTION

    def append_tokens(self, n_new: int, allocator: BlockAllocator) -> list[int]:
        """Make room for ``n_new`` tokens (all-or-nothing); return their slots."""
        ### BEGIN SOLUTION
        new_blocks = allocator.allocate(self.blocks_needed(n_new))  # may raise KVCacheFull: nothing changed yet
        self.blocks.extend(new_blocks)
        start = self.num_tokens
        self.num_tokens += n_new
        return slot_mapping(self.blocks, range(start, start + n_new), self.block_size)
        ### END SOLUTION


def paged_decode_attention(
    q: torch.Tensor,  # [batch, num_heads, head_dim]: one new token per sequence
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables: torch.Tensor,  # [batch, max_blocks] long
    context_lens: torch.Tensor | Sequence[int],  # [batch]
    scale: float | None = None,
) -> torch.Tensor:  # [batch, num_heads, head_dim]
    """Exercise 2.4: paged decode attention.

    One decoding step for a batch: sequence ``b``'s new token (``q[b]``,
    whose own K/V is already written to the pool) attends to the first
    ``context_lens[b]`` tokens of that sequence. Token ``pos`` of sequence
    ``b`` sits in block ``block_tables[b, pos // block_size]`` at offset
    ``pos % block_size`` of ``k_cache`` / ``v_cache``.

    Row ``b`` of ``block_tables`` is padded past that sequence's blocks with
    an arbitrary value, and its last block may be only partly filled: read
    exactly ``context_lens[b]`` tokens, never more.

    As in exercise 1.3: query head ``h`` reads KV head ``h // (num_heads // num_kv_heads)``,
    ``out[b, h] = softmax(scale * K @ q[b, h]) @ V``. ``scale`` defaults to
    ``1 / sqrt(head_dim)``. Return a tensor of ``q``'s shape and dtype.

    >>> k_cache = v_cache = torch.ones(8, 4, 2, 16)          # 8 blocks of 4 slots, 2 KV heads
    >>> tables = torch.tensor([[3, 5, -1], [0, 1, 2]])       # sequence 0 owns blocks 3 and 5
    >>> paged_decode_attention(torch.ones(2, 6, 16), k_cache, v_cache, tables, [7, 12]).shape
    torch.Size([2, 6, 16])
    """
    ### BEGIN SOLUTION
    batch, num_heads, head_dim = q.shape
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_heads // num_kv_heads
    scale = 1 / math.sqrt(head_dim) if scale is None else scale
    lens = torch.as_tensor(context_lens).tolist()
    out = torch.empty_like(q)
    for b in range(batch):
        n = lens[b]
        blocks = block_tables[b, : (n + block_size - 1) // block_size]  # only the blocks this sequence owns
        keys = k_cache[blocks].flatten(0, 1)[:n].float()  # [n, num_kv_heads, head_dim], token order
        values = v_cache[blocks].flatten(0, 1)[:n].float()
        keys = keys.repeat_interleave(group, dim=1)  # [n, num_heads, head_dim]: head h reads KV head h // group
        values = values.repeat_interleave(group, dim=1)
        scores = torch.einsum("hd,nhd->hn", q[b].float(), keys) * scale  # [num_heads, n]
        out[b] = torch.einsum("hn,nhd->hd", scores.softmax(dim=-1), values).to(q.dtype)
    return out
    ### END SOLUTION

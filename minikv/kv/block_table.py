"""Block tables and slot mapping: where each token of a sequence lives in the pool.

A sequence's *block table* is the list of block ids it owns, in token order:
token ``pos`` lives in block ``blocks[pos // block_size]`` at offset
``pos % block_size``, i.e. in the flat *slot*
``blocks[pos // block_size] * block_size + pos % block_size``.
Attention kernels read through the block table; ``write_kv`` writes at slots.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from minikv.kv.allocator import BlockAllocator


def cdiv(a: int, b: int) -> int:
    """Ceiling division for non-negative ints."""
    return -(-a // b)


def slot_mapping(block_table: Sequence[int], positions: Iterable[int], block_size: int) -> list[int]:
    """Physical slot of each token position, through ``block_table``.

    Raises ``IndexError`` for a position that is negative or past the blocks owned.
    """
    slots = []
    for pos in positions:
        i = pos // block_size
        if pos < 0 or i >= len(block_table):
            raise IndexError(
                f"position {pos} is outside a block table of {len(block_table)} blocks "
                f"of {block_size} tokens"
            )
        slots.append(block_table[i] * block_size + pos % block_size)
    return slots


def make_block_table_tensor(
    tables: Sequence[Sequence[int]],
    pad: int = -1,
    max_blocks: int | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Stack ragged block tables into one ``torch.long`` tensor, right-padded with ``pad``.

    ``max_blocks`` fixes the width (at least the longest table); by default the
    width is the longest table. Returns # [batch, max_blocks]
    """
    width = max((len(t) for t in tables), default=0)
    if max_blocks is not None:
        if max_blocks < width:
            raise ValueError(f"max_blocks={max_blocks} is shorter than the longest table ({width})")
        width = max_blocks
    out = torch.full((len(tables), width), pad, dtype=torch.long)
    for row, table in enumerate(tables):
        if len(table):
            out[row, : len(table)] = torch.as_tensor(list(table), dtype=torch.long)
    return out if device is None else out.to(device)


class BlockTable:
    """The blocks of one sequence and how many of its tokens are in the cache.

    ``blocks`` may start non-empty (e.g. blocks found in a prefix cache) with
    ``num_tokens`` tokens already in them. The table may own more slots than
    ``num_tokens`` (``capacity``); new tokens fill those before new blocks are
    allocated.
    """

    def __init__(self, block_size: int, blocks: Sequence[int] = (), num_tokens: int = 0) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if not 0 <= num_tokens <= len(blocks) * block_size:
            raise ValueError(
                f"{num_tokens} tokens do not fit {len(blocks)} blocks of {block_size} tokens"
            )
        self.block_size = block_size
        self.blocks: list[int] = list(blocks)
        self.num_tokens = num_tokens

    @property
    def capacity(self) -> int:
        """Token slots owned: ``len(blocks) * block_size``."""
        return len(self.blocks) * self.block_size

    def blocks_needed(self, n_new: int) -> int:
        """How many new blocks appending ``n_new`` tokens would allocate."""
        if n_new < 0:
            raise ValueError(f"n_new must be >= 0, got {n_new}")
        return max(0, cdiv(self.num_tokens + n_new, self.block_size) - len(self.blocks))

    def append_tokens(self, n_new: int, allocator: BlockAllocator) -> list[int]:
        """Make room for ``n_new`` more tokens; return their slots, in order.

        All-or-nothing: if the allocator is short it raises ``KVCacheFull``
        and the table is unchanged.
        """
        new_blocks = allocator.allocate(self.blocks_needed(n_new))
        self.blocks.extend(new_blocks)
        start = self.num_tokens
        self.num_tokens += n_new
        return slot_mapping(self.blocks, range(start, start + n_new), self.block_size)

    def slot(self, position: int) -> int:
        """Physical slot of token ``position`` (``0 <= position < num_tokens``)."""
        if not 0 <= position < self.num_tokens:
            raise IndexError(f"position {position} is outside 0..{self.num_tokens - 1}")
        return self.blocks[position // self.block_size] * self.block_size + position % self.block_size

    def free(self, allocator: BlockAllocator) -> None:
        """Give every block back (last block first) and reset to an empty table.

        Tail-first order puts the sequence's first blocks, the ones most likely
        shared as a prefix, last in the free queue, so they are reused last.
        """
        allocator.free(reversed(self.blocks))
        self.blocks = []
        self.num_tokens = 0

    def __repr__(self) -> str:
        return (
            f"BlockTable(block_size={self.block_size}, num_tokens={self.num_tokens}, "
            f"blocks={self.blocks})"
        )

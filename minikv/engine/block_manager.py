"""BlockManager: gives each admitted sequence its blocks and takes them back when it finishes.

For now a sequence reserves every block it may ever need when it is admitted
(prompt + ``max_tokens``, capped at the model's context), so a running
sequence never runs out of room and nothing has to be preempted. Chapter 05's
scheduler replaces this with growing tables and preemption.

The same manager serves the batched contiguous layout: there a "block" is a
whole row of the padded cache (``block_size = row_len``), one per sequence.
"""

from __future__ import annotations

from minikv.engine.sequence import Sequence
from minikv.errors import KVCacheFull
from minikv.kv.allocator import BlockAllocator
from minikv.kv.block_table import BlockTable, cdiv


class BlockManager:
    """Block tables of the admitted sequences over ``allocator``'s blocks of ``block_size`` tokens."""

    def __init__(self, allocator: BlockAllocator, block_size: int, max_model_len: int,
                 bytes_per_block: int | None = None) -> None:
        self.allocator, self.block_size, self.max_model_len = allocator, block_size, max_model_len
        self.bytes_per_block = bytes_per_block  # only to speak in bytes in error messages

    def tokens_needed(self, seq: Sequence) -> int:
        """Cache slots reserved for ``seq``: prompt + max_tokens, at most the model's context."""
        return seq.max_length(self.max_model_len)

    def blocks_needed(self, seq: Sequence) -> int:
        return cdiv(self.tokens_needed(seq), self.block_size)

    def check_fits(self, seq: Sequence, what: str = "the request") -> None:
        """Raise :class:`KVCacheFull` if ``seq`` would not fit even in an empty pool."""
        need = self.blocks_needed(seq)
        total = self.allocator.num_blocks
        if need > total:
            memory = f" (kv_cache_memory >= {need * self.bytes_per_block} bytes)" if self.bytes_per_block else ""
            raise KVCacheFull(
                f"{what} needs {self.tokens_needed(seq)} KV-cache tokens ({len(seq.prompt_token_ids)} prompt + "
                f"up to {seq.params.max_tokens} new) = {need} blocks of {self.block_size}, but the whole KV pool "
                f"holds {total * self.block_size} tokens ({total} blocks); raise num_blocks to at least {need}"
                f"{memory}, or lower max_tokens, or shorten the prompt"
            )

    def can_allocate(self, seq: Sequence) -> bool:
        return self.blocks_needed(seq) <= self.allocator.num_free

    def allocate(self, seq: Sequence) -> None:
        """Reserve all of ``seq``'s blocks (raises :class:`KVCacheFull`, taking nothing, if short)."""
        assert seq.block_table is None, f"sequence {seq.request_id} already holds blocks"
        seq.block_table = BlockTable(self.block_size, self.allocator.allocate(self.blocks_needed(seq)))

    def make_room(self, seq: Sequence) -> None:
        """Give the tokens that the next forward writes (``num_computed_tokens..len(seq)``) their slots."""
        table = seq.block_table
        assert table is not None and table.num_tokens == seq.num_computed_tokens
        table.append_tokens(len(seq) - table.num_tokens, self.allocator)  # within the reservation: no new block

    def free(self, seq: Sequence) -> None:
        """Return ``seq``'s blocks to the pool (no-op if it holds none)."""
        if seq.block_table is not None:
            seq.block_table.free(self.allocator)
            seq.block_table = None

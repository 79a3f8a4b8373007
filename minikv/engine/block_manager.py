"""BlockManager: gives each admitted sequence its blocks, reusing cached prefixes, and takes them back.

It talks to a :class:`~minikv.prefix.PrefixCache`, which owns every block of
the KV store (``NoPrefixCache`` when caching is off, so there is one road):

1. ``allocate``: ``match`` the prompt (the hit's blocks are shared by
   pointer and their tokens are not computed again), then reserve the rest of
   the blocks the sequence may ever need (prompt + ``max_tokens``, capped at
   the model's context), so a running sequence never runs out of room and
   nothing has to be preempted (chapter 05's scheduler changes that);
2. ``cache_computed``: after a forward, register the blocks whose K/V are now
   written, so later requests (even in the same batch) can hit them;
3. ``free``: register what was computed, then ``release`` every block (tail
   first): cached ones stay reusable until evicted, the others are free.

The same manager serves the batched contiguous layout: there a "block" is a
whole row of the padded cache (``block_size = row_len``), one per sequence.
"""

from __future__ import annotations

from collections.abc import Callable

from minikv.engine.sequence import Sequence
from minikv.errors import KVCacheFull
from minikv.kv.block_table import BlockTable, cdiv
from minikv.prefix.base import PrefixCache

# (src block, dst block, number of leading tokens): copy K/V between blocks of the pool, every layer
CopyFn = Callable[[int, int, int], None]


class BlockManager:
    """Block tables of the admitted sequences over the blocks owned by ``cache``."""

    def __init__(self, cache: PrefixCache, block_size: int, max_model_len: int,
                 bytes_per_block: int | None = None, copy_blocks: CopyFn | None = None) -> None:
        self.cache, self.block_size, self.max_model_len = cache, block_size, max_model_len
        self.bytes_per_block = bytes_per_block  # only to speak in bytes in error messages
        self.copy_blocks = copy_blocks

    def tokens_needed(self, seq: Sequence) -> int:
        """Cache slots reserved for ``seq``: prompt + max_tokens, at most the model's context."""
        return seq.max_length(self.max_model_len)

    def blocks_needed(self, seq: Sequence) -> int:
        return cdiv(self.tokens_needed(seq), self.block_size)

    def check_fits(self, seq: Sequence, what: str = "the request") -> None:
        """Raise :class:`KVCacheFull` if ``seq`` would not fit even in an empty pool."""
        need = self.blocks_needed(seq)
        total = self.cache.num_blocks
        if need > total:
            memory = f" (kv_cache_memory >= {need * self.bytes_per_block} bytes)" if self.bytes_per_block else ""
            raise KVCacheFull(
                f"{what} needs {self.tokens_needed(seq)} KV-cache tokens ({len(seq.prompt_token_ids)} prompt + "
                f"up to {seq.params.max_tokens} new) = {need} blocks of {self.block_size}, but the whole KV pool "
                f"holds {total * self.block_size} tokens ({total} blocks); raise num_blocks to at least {need}"
                f"{memory}, or lower max_tokens, or shorten the prompt"
            )

    def can_allocate(self, seq: Sequence) -> bool:
        """Whether ``allocate`` will succeed. Conservative: counts the whole need, as if nothing hit.

        (A hit on a block another sequence holds needs fewer new blocks, but
        asking would take references; the sequence is admitted a bit later instead.)
        """
        return self.blocks_needed(seq) <= self.cache.num_allocatable

    def allocate(self, seq: Sequence) -> None:
        """Match ``seq``'s prompt in the cache and reserve the rest of its blocks (all-or-nothing)."""
        assert seq.block_table is None, f"sequence {seq.request_id} already holds blocks"
        hit = self.cache.match(seq.prompt_token_ids, seq.params.cache_salt)
        blocks = list(hit.block_ids)
        try:
            blocks += self.cache.allocate(max(0, self.blocks_needed(seq) - len(blocks)))
        except KVCacheFull:
            self.cache.release(hit.block_ids)
            raise
        if hit.copy_from_block is not None:  # a partly shared block: copy its K/V into our own (copy-on-write)
            assert self.copy_blocks is not None, "this KV store cannot copy blocks"
            self.copy_blocks(hit.copy_from_block, hit.block_ids[-1], hit.copy_tokens)
        seq.block_table = BlockTable(self.block_size, blocks, hit.num_cached_tokens)
        seq.num_computed_tokens = seq.num_cached_tokens = hit.num_cached_tokens

    def make_room(self, seq: Sequence) -> None:
        """Give the tokens that the next forward writes (``num_computed_tokens..len(seq)``) their slots."""
        table = seq.block_table
        assert table is not None and table.num_tokens == seq.num_computed_tokens
        assert table.blocks_needed(len(seq) - table.num_tokens) == 0, "beyond the sequence's reservation"
        table.num_tokens = len(seq)

    def cache_computed(self, seq: Sequence) -> None:
        """Offer the blocks whose K/V are written (``token_ids[:num_computed_tokens]``) to the prefix cache."""
        if seq.block_table is not None and seq.num_computed_tokens:
            self.cache.insert(seq.token_ids[:seq.num_computed_tokens], seq.block_table.blocks, seq.params.cache_salt)

    def free(self, seq: Sequence, keep: bool = True) -> None:
        """Release ``seq``'s blocks (``keep``: first let the cache keep what was computed)."""
        if seq.block_table is not None:
            if keep:
                self.cache_computed(seq)
            self.cache.release(seq.block_table.blocks)
            seq.block_table = None

"""BlockManager: gives each admitted sequence its blocks of the paged pool, reusing cached prefixes, and takes them back.

It keeps no count of its own: the :class:`~minikv.prefix.PrefixCache`
(``NoPrefixCache`` when caching is off) owns every block of the
:class:`~minikv.kv.KVPool` and is the one ledger of used, evictable and free
blocks (``cache.stats()``). The manager only knows which sequences hold
blocks (their :class:`~minikv.kv.BlockTable` s), so it can always give them
all back:

1. admission: ``match`` the sequence's tokens (the hit's blocks are shared
   by pointer and their tokens are not computed again), copy a partly shared
   block on the pool if the hit ends inside one (copy-on-write), then take
   blocks for the tokens to compute. The continuous scheduler (``admit``)
   takes only what this step's chunk needs; each later step ``grow`` s the
   table when its last block fills, and a sequence that cannot grow is
   preempted by the scheduler. The waves baseline (``allocate``) reserves
   everything the sequence may ever need (prompt + ``max_tokens``, capped at
   the model's context) so nothing is ever preempted.
   All or nothing: if anything raises, every block taken is released first.
2. ``cache_computed``: after a forward, register the blocks whose K/V are now
   written, so later requests (even in the same batch) can hit them;
3. ``free``: register what was computed, then ``release`` every block (tail
   first): cached ones stay reusable until evicted, the others are free.
   ``free_all`` does that for every sequence still holding blocks (after an
   error or an interrupt).

The contiguous layout has its own :class:`~minikv.engine.row_manager.RowManager`.
"""

from __future__ import annotations

from minikv.engine.sequence import Sequence
from minikv.errors import KVCacheFull
from minikv.kv.block_table import BlockTable, cdiv
from minikv.kv.pool import KVPool
from minikv.prefix.base import PrefixCache


class BlockManager:
    """Block tables of the admitted sequences over the blocks of ``pool``, owned by ``cache``."""

    def __init__(self, cache: PrefixCache, pool: KVPool, max_model_len: int) -> None:
        self.cache, self.pool, self.max_model_len = cache, pool, max_model_len
        self.block_size = pool.block_size
        self.holders: dict[int, Sequence] = {}  # request id -> a sequence holding blocks, from allocate to free

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
            raise KVCacheFull(
                f"{what} needs {self.tokens_needed(seq)} KV-cache tokens ({len(seq.prompt_token_ids)} prompt + "
                f"up to {seq.params.max_tokens} new) = {need} blocks of {self.block_size}, but the whole KV pool "
                f"holds {total * self.block_size} tokens ({total} blocks); raise num_blocks to at least {need}"
                f" (kv_cache_memory >= {need * self.pool.bytes_per_block} bytes), or lower max_tokens, "
                "or shorten the prompt"
            )

    def can_allocate(self, seq: Sequence) -> bool:
        """Whether ``allocate`` should succeed. Conservative: counts the whole need, as if nothing hit.

        (A hit on a block another sequence holds needs fewer new blocks, but
        asking would take references; the sequence is admitted a bit later instead.)
        One case it misses: a partial hit pins its source block on top of the
        need (copy-on-write), so ``allocate`` may still raise :class:`KVCacheFull`.
        """
        return self.blocks_needed(seq) <= self.cache.num_allocatable

    def allocate(self, seq: Sequence) -> None:
        """Match ``seq``'s prompt in the cache and reserve the rest of its blocks (all-or-nothing).

        Raises :class:`KVCacheFull` (holding nothing) when the blocks are not to
        be had now. When no other sequence holds blocks, it first drops every
        evictable cached prefix and tries once more, so a sequence that fits the
        empty pool (``check_fits``) is always admitted in the end.
        """
        assert seq.block_table is None, f"sequence {seq.request_id} already holds blocks"
        assert seq.request_id not in self.holders, f"request id {seq.request_id} already holds blocks"
        try:
            self._take_blocks(seq)
        except KVCacheFull:
            if self.holders or not self.cache.evict(self.cache.num_blocks):
                raise
            self._take_blocks(seq)  # a pool of free blocks: the whole need fits, whatever the match

    def admit(self, seq: Sequence, max_new_tokens: int) -> int:
        """Match ``seq`` and take blocks for its hit plus up to ``max_new_tokens`` tokens to compute now.

        Returns how many tokens it will compute this step (``len(seq)`` minus
        the hit, at most ``max_new_tokens``), or 0 holding nothing when the
        blocks are not to be had now. Alone (no other sequence holds blocks) it
        first drops every evictable cached prefix and tries once more.
        """
        assert seq.block_table is None, f"sequence {seq.request_id} already holds blocks"
        assert max_new_tokens >= 1

        def need(hit_tokens: int) -> int:
            return hit_tokens + min(len(seq) - hit_tokens, max_new_tokens)

        try:
            self._take_blocks(seq, need)
        except KVCacheFull:
            if self.holders or not self.cache.evict(self.cache.num_blocks):
                return 0
            try:
                self._take_blocks(seq, need)
            except KVCacheFull:
                return 0
        return min(len(seq) - seq.num_computed_tokens, max_new_tokens)

    def grow(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Take the blocks ``seq`` needs to compute ``num_new_tokens`` more tokens; False (taking none) if short."""
        table = seq.block_table
        assert table is not None and table.num_tokens == seq.num_computed_tokens
        missing = table.blocks_needed(num_new_tokens)
        if missing:
            if missing > self.cache.num_allocatable:
                return False
            try:
                table.blocks += self.cache.allocate(missing)
            except KVCacheFull:
                return False
        return True

    def _take_blocks(self, seq: Sequence, need=None) -> None:
        """Match, copy a partly shared block, and take blocks for ``need(hit)`` tokens (default: the reservation)."""
        taken: list[int] = []
        try:
            hit = self.cache.match(seq.token_ids, seq.params.cache_salt)
            taken = list(hit.block_ids)
            tokens = self.tokens_needed(seq) if need is None else need(hit.num_cached_tokens)
            taken += self.cache.allocate(max(0, cdiv(tokens, self.block_size) - len(taken)))
            if hit.copy_from_block is not None:  # a partly shared block: copy its K/V into our own
                self.pool.copy_block(hit.copy_from_block, hit.block_ids[-1], hit.copy_tokens)
        except BaseException:  # an interrupt too: give back what was taken, then let it through
            if taken:
                self.cache.release(taken)
            raise
        seq.block_table = BlockTable(self.block_size, taken, hit.num_cached_tokens)
        seq.num_computed_tokens = hit.num_cached_tokens
        if not seq.admitted:  # the first admission's hit is the request's; a resumed one hits its own blocks
            seq.num_cached_tokens = hit.num_cached_tokens
            explain = getattr(self.cache, "explain_miss", None)
            if explain is not None:
                seq.miss = explain(seq.prompt_token_ids, seq.params.cache_salt, hit.num_cached_tokens)
            seq.admitted = True
        self.holders[seq.request_id] = seq

    def make_room(self, seq: Sequence, num_new_tokens: int | None = None) -> None:
        """Give the tokens that the next forward writes their slots (default: ``num_computed_tokens..len(seq)``).

        The blocks must be there already (reserved by ``allocate``, or taken by ``admit`` / ``grow``).
        """
        table = seq.block_table
        n = len(seq) - seq.num_computed_tokens if num_new_tokens is None else num_new_tokens
        assert table is not None and table.num_tokens == seq.num_computed_tokens
        assert table.blocks_needed(n) == 0, "beyond the sequence's blocks"
        table.num_tokens = seq.num_computed_tokens + n

    def cache_computed(self, seq: Sequence) -> None:
        """Offer the blocks whose K/V are written (``token_ids[:num_computed_tokens]``) to the prefix cache."""
        if seq.block_table is not None and seq.num_computed_tokens:
            self.cache.insert(seq.token_ids[:seq.num_computed_tokens], seq.block_table.blocks, seq.params.cache_salt)

    def free(self, seq: Sequence, keep: bool = True) -> None:
        """Release ``seq``'s blocks (``keep``: first let the cache keep what was computed).

        The blocks are released even if ``insert`` raises. If ``release``
        itself raises, ``seq`` still counts as holding them, so ``free_all``
        tries again.
        """
        table = seq.block_table
        if table is None:
            return
        try:
            if keep:
                self.cache_computed(seq)
        finally:
            self.cache.release(table.blocks)
            seq.block_table = None
            self.holders.pop(seq.request_id, None)

    def free_all(self) -> None:
        """Release the blocks of every sequence still holding some (after an error or an interrupt).

        Keeps going past a failing ``release``; raises the first error once all were tried.
        """
        error: BaseException | None = None
        for seq in list(self.holders.values()):
            try:
                self.free(seq, keep=False)
            except BaseException as e:  # noqa: BLE001 - re-raised below, after the others are freed
                error = error or e
        if error is not None:
            raise error

    def held_blocks(self) -> set[int]:
        """Blocks the sequences hold right now (reserved ones included): what the engine has in use."""
        return {b for seq in self.holders.values() if seq.block_table is not None for b in seq.block_table.blocks}

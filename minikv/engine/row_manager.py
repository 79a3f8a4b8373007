"""RowManager: hands out the rows of the batched contiguous baseline's :class:`~minikv.kv.padded.PaddedKVCache`.

The contiguous layout sizes one batch's cache for its longest sequence:
``num_rows`` rows of ``row_len`` token slots. Each admitted sequence takes one
whole row (``seq.kv_row``) until it finishes; nothing is shared or cached.
It has the same methods as :class:`~minikv.engine.block_manager.BlockManager`
so the :class:`~minikv.engine.waves.WavesScheduler` drives both alike.
"""

from __future__ import annotations

from minikv.engine.sequence import Sequence


class RowManager:
    """Rows ``0 .. num_rows - 1`` of a padded cache, one per running sequence (lowest free row first)."""

    def __init__(self, num_rows: int, row_len: int, max_model_len: int) -> None:
        self.num_rows, self.row_len, self.max_model_len = num_rows, row_len, max_model_len
        self._free = list(range(num_rows - 1, -1, -1))  # a stack: pop() gives the lowest row
        self.holders: dict[int, Sequence] = {}  # request id -> the sequence holding a row

    @property
    def num_free(self) -> int:
        return len(self._free)

    def can_allocate(self, seq: Sequence) -> bool:
        return bool(self._free)

    def allocate(self, seq: Sequence) -> None:
        """Give ``seq`` a free row; nothing of it is computed yet."""
        assert seq.kv_row is None and seq.request_id not in self.holders, f"sequence {seq.request_id} holds a row"
        assert seq.max_length(self.max_model_len) <= self.row_len, f"sequence {seq.request_id} is longer than a row"
        seq.kv_row = self._free.pop()
        seq.num_computed_tokens = seq.num_cached_tokens = 0
        self.holders[seq.request_id] = seq

    def make_room(self, seq: Sequence) -> None:
        assert seq.kv_row is not None and len(seq) <= self.row_len, "beyond the sequence's row"

    def cache_computed(self, seq: Sequence) -> None:
        """Nothing to offer: rows are never shared."""

    def free(self, seq: Sequence, keep: bool = True) -> None:
        if seq.kv_row is not None:
            self._free.append(seq.kv_row)
            self._free.sort(reverse=True)
            seq.kv_row = None
            self.holders.pop(seq.request_id, None)

    def free_all(self) -> None:
        for seq in list(self.holders.values()):
            self.free(seq)

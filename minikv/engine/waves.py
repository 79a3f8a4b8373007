"""WavesScheduler: the closed-batch baseline (chapters 01 to 04), kept beside chapter 05's continuous scheduler.

Sequences wait in arrival order. Each step either admits waiting sequences
(as many as their reserved blocks fit, oldest first) and prefills them
together, or, when none can be admitted, runs one decode step for every
running sequence. A finished sequence frees its blocks at once, so the next
waiting ones are admitted as earlier ones finish ("waves"). Chapter 05's
:class:`~minikv.engine.scheduler.Scheduler` replaces this with continuous
batching, chunked prefill, preemption and cache-aware order; this one stays
as the baseline (``scheduler="waves"``) and runs the contiguous layout.

KV space comes from a :class:`KVSpace`: the paged pool's
:class:`~minikv.engine.block_manager.BlockManager` or the contiguous
layout's :class:`~minikv.engine.row_manager.RowManager`. Admission is
all-or-nothing per sequence, and a sequence moves from ``waiting`` to
``running`` the moment it holds KV space; the manager itself also tracks it
from then on, so :meth:`Scheduler.abort_all` gives everything back whatever
raised (the model, sampling, the prefix cache, an interrupt) and wherever.

In-batch prefix sharing: with a prefix cache on, a waiting sequence that
shares a not-yet-cached full block with one admitted in the same step waits
one step, so the shared prefix is computed once (by the first) and then hit
(by the others), as SGLang does for prompts that arrive together.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from minikv.engine.scheduler import RequestQueues, SchedulerOutput, shares_uncached_block
from minikv.engine.sequence import Sequence
from minikv.errors import KVCacheFull


class KVSpace(Protocol):
    """What the scheduler asks of a KV manager (blocks of a pool, or rows of a padded cache)."""

    def can_allocate(self, seq: Sequence) -> bool: ...

    def allocate(self, seq: Sequence) -> None:
        """Give ``seq`` its KV space, all or nothing; sets ``seq.num_computed_tokens`` (its cache hit)."""

    def make_room(self, seq: Sequence) -> None:
        """Slots for the tokens the next forward writes."""

    def cache_computed(self, seq: Sequence) -> None:
        """Offer what is computed to the prefix cache (a no-op without one)."""

    def free(self, seq: Sequence, keep: bool = True) -> None: ...

    def free_all(self) -> None:
        """Free every sequence still holding KV space."""


class WavesScheduler(RequestQueues):
    """Waiting and running lists over one :class:`KVSpace`.

    ``max_num_seqs`` caps the running batch; ``max_num_batched_tokens`` caps
    the new tokens of one prefill (a longer single prompt is still admitted alone).
    ``block_size`` (with ``share_in_batch``) is the granularity of in-batch sharing.
    """

    def __init__(self, kv: KVSpace, eos_ids: set[int], max_model_len: int,
                 max_num_seqs: int = 256, max_num_batched_tokens: int = 16384, share_in_batch: bool = False,
                 block_size: int = 1) -> None:
        self.share_in_batch, self.block_size = share_in_batch, block_size
        self.kv, self.eos_ids, self.max_model_len = kv, eos_ids, max_model_len
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0  # never: every sequence reserves all it may need

    def schedule(self) -> SchedulerOutput:
        """The next forward: a prefill of newly admitted sequences, or else one decode step of all running."""
        batch, _ = self.schedule_batch()
        return SchedulerOutput([(s, len(s) - s.num_computed_tokens) for s in batch])

    def schedule_batch(self) -> tuple[list[Sequence], bool]:
        """The sequences of the next forward and whether it is a prefill (else a decode step)."""
        admitted: list[Sequence] = []
        num_tokens = 0
        while self.waiting and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            new_tokens = len(seq) - seq.num_computed_tokens
            if admitted and num_tokens + new_tokens > self.max_num_batched_tokens:
                break
            if not self.kv.can_allocate(seq):
                break
            if self.share_in_batch and shares_uncached_block(seq, admitted, self.block_size):
                break
            try:
                self.kv.allocate(seq)  # all or nothing; from here on the manager tracks it
            except KVCacheFull:
                if not self.running:
                    raise
                break  # (a partial prefix hit pins one block more than can_allocate counts) wait for room
            self.running.append(self.waiting.popleft())
            admitted.append(seq)
            num_tokens += new_tokens
        if admitted:
            batch, is_prefill = admitted, True
        else:
            assert self.running, "a waiting sequence fits no empty pool; check_fits should have refused it"
            batch, is_prefill = list(self.running), False
        for seq in batch:
            self.kv.make_room(seq)
        return batch, is_prefill

"""Scheduler: vLLM v1's unified, token-budget scheduler (chapter 05).

There is no prefill phase and decode phase: every request has
``num_computed_tokens`` (K/V in the cache) chasing ``len(seq)`` (prompt +
generated so far). Each step has a budget of ``max_num_batched_tokens``
tokens, planned by :func:`~minikv.engine.step_plan.fill_budget` (or the
``schedule_fn`` plugged in its place):

1. running requests first, oldest admitted first: one token each for a
   decode, or the next chunk of an unfinished prefill;
2. then waiting requests in the scheduling policy's order
   (:mod:`minikv.engine.policies`; FCFS by default), each from its prefix-cache hit.

Carrying the plan out, blocks are taken on demand. A running request whose
last block is full asks the :class:`~minikv.engine.block_manager.BlockManager`
to ``grow``; if no block can be had, the last running request (the newest;
:func:`~minikv.engine.step_plan.choose_victim`) is preempted by recompute:
its computed blocks go to the prefix cache (cached, evictable), it is reset
to zero computed tokens and put back at the front of the waiting queue, where
it usually hits its own blocks when it resumes. A step that preempted admits
nobody. A waiting request is admitted with its hit plus the blocks of its
planned chunk; the first one that cannot get them stops admission this step.

In-batch prefix sharing (``share_in_batch``, on with a prefix cache): a
waiting request that shares a full block not yet cached with a request
admitted this step or still prefilling waits, so the shared part is computed
once and then hit.

Invariant: a sequence is in ``running`` exactly while it holds blocks (the
block manager's ``holders``), so :meth:`Scheduler.abort_all` frees everything.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from typing import Any

from minikv.engine.block_manager import BlockManager
from minikv.engine.policies import make_policy
from minikv.engine.sequence import Sequence
from minikv.engine.step_plan import RequestView, ScheduleFn, choose_victim, fill_budget
from minikv.errors import InvalidRequestError


@dataclass
class SchedulerOutput:
    """One step's work: ``scheduled`` (sequence, tokens to compute) pairs, running ones first; who was preempted."""

    scheduled: list[tuple[Sequence, int]]
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(n for _, n in self.scheduled)


def shares_uncached_block(seq: Sequence, others: list[Sequence], block_size: int) -> bool:
    """Whether ``seq``'s prompt shares a full block with one of ``others`` beyond what that one has computed."""
    for other in others:
        if other.params.cache_salt != seq.params.cache_salt:
            continue
        common = len(os.path.commonprefix([seq.prompt_token_ids, other.prompt_token_ids]))
        if common // block_size > max(other.num_computed_tokens, other.num_cached_tokens) // block_size:
            return True
    return False


class _Views(SequenceABC):
    """Waiting requests as :class:`RequestView` s, each peeked at the cache only when the planner reaches it.

    The planner stops when the budget is spent, so a long queue costs a few peeks per step, not one per request.
    """

    def __init__(self, seqs: list[Sequence], peek: Any) -> None:
        self.seqs, self.peek = seqs, peek
        self._done: list[RequestView] = []

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        while len(self._done) <= i:
            s = self.seqs[len(self._done)]
            hit = self.peek(s.token_ids, s.params.cache_salt) if self.peek is not None else 0
            self._done.append(RequestView(s.request_id, hit, len(s)))
        return self._done[i]


class RequestQueues:
    """The waiting and running lists and what both schedulers do after a forward (the KV manager is ``kv``).

    Subclasses set ``kv`` (a block or row manager), ``eos_ids``, ``max_model_len``,
    ``waiting``, ``running`` and ``num_preemptions``, and write ``schedule``.
    """

    kv: Any
    eos_ids: set[int]
    max_model_len: int
    waiting: deque[Sequence]
    running: list[Sequence]

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    @property
    def is_finished(self) -> bool:
        return not self.waiting and not self.running

    # ---- after the forward --------------------------------------------------------------------------
    def postprocess(self, out: SchedulerOutput, tokens: dict[int, int]) -> list[Sequence]:
        """Advance each scheduled sequence; append the sampled tokens (``request_id -> token``); free the finished.

        A sequence whose chunk reached its end sampled a token; one still
        prefilling did not. Newly computed prompt blocks are offered to the cache at once.
        """
        done = []
        for seq, n in out.scheduled:
            seq.num_computed_tokens += n
            if seq.num_computed_tokens <= len(seq.prompt_token_ids):
                self.kv.cache_computed(seq)
            token = tokens.get(seq.request_id)
            if token is None:
                continue
            seq.append(token, self.eos_ids, self.max_model_len)
            if seq.finished:
                self.kv.free(seq)
                done.append(seq)
        if done:
            self.running = [s for s in self.running if not s.finished]
        return done

    def abort(self, seq: Sequence) -> None:
        """Drop one sequence, waiting or running, and give its blocks back (what it computed stays cached)."""
        if seq in self.waiting:
            self.waiting.remove(seq)
        elif seq in self.running:
            self.running.remove(seq)
            self.kv.free(seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        """End a running sequence early (a stop string found in its text); its blocks go back as after EOS."""
        seq.finish(reason)
        if seq in self.running:
            self.running.remove(seq)
            self.kv.free(seq)

    def abort_all(self) -> None:
        """Free every unfinished sequence's blocks (after an error or an interrupt); empty both lists."""
        self.running.clear()
        self.waiting.clear()
        self.kv.free_all()


class Scheduler(RequestQueues):
    """Continuous batching over a :class:`BlockManager`: one long-lived scheduler per engine."""

    def __init__(self, blocks: BlockManager, eos_ids: set[int], max_model_len: int, *,
                 max_num_batched_tokens: int = 8192, max_num_seqs: int = 256, enable_chunked_prefill: bool = True,
                 long_prefill_token_threshold: int = 0, policy: Any = None, schedule_fn: ScheduleFn | None = None,
                 share_in_batch: bool = False) -> None:
        self.blocks = self.kv = blocks
        self.eos_ids, self.max_model_len = eos_ids, max_model_len
        self.block_size = blocks.block_size
        self.max_num_batched_tokens, self.max_num_seqs = max_num_batched_tokens, max_num_seqs
        self.enable_chunked_prefill = enable_chunked_prefill
        self.long_prefill_token_threshold = long_prefill_token_threshold
        self.policy = make_policy(policy if policy is not None else "fcfs")
        self.schedule_fn: ScheduleFn = schedule_fn or fill_budget
        self.share_in_batch = share_in_batch
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    # ---- one step -----------------------------------------------------------------------------------
    def _views(self, seqs: list[Sequence]) -> list[RequestView]:
        return [RequestView(s.request_id, s.num_computed_tokens, len(s)) for s in seqs]

    def schedule(self) -> SchedulerOutput:
        """Plan the step's token budget, take blocks for it (preempting if the pool runs dry), admit."""
        ordered = self.policy.order(list(self.waiting), self.blocks.cache) if self.waiting else []
        waiting = _Views(ordered, getattr(self.blocks.cache, "peek", None))
        plan = self.schedule_fn(self._views(self.running), waiting,
                                self.max_num_batched_tokens, self.long_prefill_token_threshold,
                                self.max_num_seqs, self.enable_chunked_prefill)
        self._check_plan(plan, ordered)
        out = SchedulerOutput([])
        self._grow_running(plan, out)
        if not out.preempted:
            self._admit(plan, ordered, out)
        for seq, n in out.scheduled:
            self.blocks.make_room(seq, n)
        return out

    def _check_plan(self, plan: dict[int, int], ordered: list[Sequence]) -> None:
        """A plugged-in ``schedule_fn`` must plan only known requests, >= 1 token each, within the budget."""
        if self.schedule_fn is fill_budget:
            return
        known = {s.request_id: len(s) - s.num_computed_tokens for s in self.running}
        known.update((s.request_id, len(s)) for s in ordered)
        for rid, n in plan.items():
            if rid not in known or not isinstance(n, int) or not 1 <= n <= known[rid]:
                raise InvalidRequestError(f"schedule_fn planned {n!r} tokens for request {rid!r}; a plan maps ids of "
                                          "running or waiting requests to 1 .. the tokens they are behind")
        if sum(plan.values()) > self.max_num_batched_tokens:
            raise InvalidRequestError(f"schedule_fn planned {sum(plan.values())} tokens, over the step's budget of "
                                      f"{self.max_num_batched_tokens}")

    def _grow_running(self, plan: dict[int, int], out: SchedulerOutput) -> None:
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            n = plan.get(seq.request_id, 0)
            if n <= 0:
                i += 1
                continue
            while not self.blocks.grow(seq, n):
                victim = self.running[choose_victim(self._views(self.running))]
                self._preempt(victim, alone=len(self.running) == 1)
                out.preempted.append(victim)
                if victim is seq:
                    break
            else:
                out.scheduled.append((seq, n))
                i += 1

    def _preempt(self, seq: Sequence, alone: bool) -> None:
        """Recompute later: its computed blocks go to the cache, it restarts from 0 at the front of the queue.

        A request that cannot grow even alone gives its blocks back uncached,
        so it does not resume onto a copy-on-write hit that pins one block too many.
        """
        self.running.remove(seq)
        self.blocks.free(seq, keep=not alone)
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def _admit(self, plan: dict[int, int], ordered: list[Sequence], out: SchedulerOutput) -> None:
        admitted: list[Sequence] = []
        prefilling = [s for s in self.running if s.num_computed_tokens < len(s.prompt_token_ids)]
        for seq in ordered:
            n = plan.get(seq.request_id)
            if n is None:
                continue
            if self.share_in_batch and shares_uncached_block(seq, admitted + prefilling, self.block_size):
                continue  # waits one step: the shared blocks are computed once, then hit
            n = self.blocks.admit(seq, n)
            if n == 0:
                break  # no blocks for it now: the rest wait too (head of line)
            self.waiting.remove(seq)
            self.running.append(seq)
            admitted.append(seq)
            out.scheduled.append((seq, n))

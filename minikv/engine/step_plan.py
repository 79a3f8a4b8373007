"""One scheduler step as data in, data out: fill the token budget, pick a preemption victim, roll it back.

These are the two decisions of vLLM v1's unified scheduler, written as pure
functions so chapter 05's exercises can be checked against them and a
learner's version can be plugged into the engine
(``LLMEngine(..., schedule_fn=my_fill_budget)``).

Every request is a :class:`RequestView`: ``num_computed_tokens`` of its
``num_tokens`` (prompt + generated so far) already have K/V in the cache.
There are no prefill and decode phases, only requests whose computed count
chases their length: a request one token behind decodes, one further behind
prefills (a chunk of) what is left.

:func:`fill_budget` plans one step:

1. running requests first, in their order: each gets what it is behind
   (1 for a decode), cut to ``long_prefill_token_threshold`` (when > 0 and
   ``chunked_prefill``) and to what is left of the budget; planning stops when the budget is spent;
2. then waiting requests, in the order given (the scheduling policy's), each
   counted from its prefix-cache hit (``num_computed_tokens``), the same cuts;
   with ``chunked_prefill=False`` a waiting request that does not fit the rest
   of the budget whole stops admission (it waits for a step with room);
   at most ``max_num_seqs`` requests run at once. Admission is head-of-line:
   the first waiting request that cannot be planned stops the others too.

The engine then carries the plan out: it gives each running request room for
its tokens, preempting when the pool runs dry (:func:`choose_victim`), and
admits the planned waiting requests until one does not get its blocks.

:func:`preempt` is the roll-back as data: the victim leaves ``running`` with
its blocks released tail first, reset to 0 computed tokens, at the front of
``waiting`` (:class:`RequestState` adds the block table to the view).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence


@dataclass(frozen=True)
class RequestView:
    """What the budget planner knows of one request."""

    request_id: int
    num_computed_tokens: int  # K/V already in the cache (a waiting request: its prefix-cache hit)
    num_tokens: int  # prompt + tokens generated so far

    @property
    def behind(self) -> int:
        """Tokens still to compute before the request can sample its next token."""
        return self.num_tokens - self.num_computed_tokens


# (running, waiting, token_budget, long_prefill_token_threshold, max_num_seqs, chunked_prefill) -> plan
ScheduleFn = Callable[[Sequence[RequestView], Sequence[RequestView], int, int, int, bool], dict[int, int]]


def fill_budget(
    running: Sequence[RequestView],
    waiting: Sequence[RequestView],
    token_budget: int,
    long_prefill_token_threshold: int = 0,
    max_num_seqs: int = 256,
    chunked_prefill: bool = True,
) -> dict[int, int]:
    """``request_id -> tokens to compute this step`` (insertion order: running, then admitted waiting).

    >>> run = [RequestView(0, 40, 41), RequestView(1, 8, 100)]
    >>> wait = [RequestView(2, 16, 60), RequestView(3, 0, 9)]
    >>> fill_budget(run, wait, token_budget=64)
    {0: 1, 1: 63}
    >>> fill_budget(run, wait, token_budget=64, long_prefill_token_threshold=32)
    {0: 1, 1: 32, 2: 31}
    >>> fill_budget(run, wait, 120, chunked_prefill=False)  # request 2 (44 tokens) does not fit the 27 left
    {0: 1, 1: 92}
    """
    plan: dict[int, int] = {}
    budget = token_budget

    def cut(view: RequestView) -> int:
        n = view.behind
        if chunked_prefill and long_prefill_token_threshold > 0:
            n = min(n, long_prefill_token_threshold)
        return min(n, budget)

    for view in running:
        if budget <= 0:
            break
        n = cut(view)
        if n > 0:
            plan[view.request_id] = n
            budget -= n
    num_running = len(running)
    for view in waiting:
        if budget <= 0 or num_running >= max_num_seqs:
            break
        n = cut(view)
        if n <= 0 or (not chunked_prefill and n < view.behind):
            break
        plan[view.request_id] = n
        budget -= n
        num_running += 1
    return plan


def choose_victim(running: Sequence[RequestView]) -> int:
    """Index in ``running`` of the request to preempt when no block can be had: the last one (newest admitted).

    Running requests are kept in admission order, so the last one has done the
    least work since it was admitted, and the oldest keep making progress
    (vLLM's FCFS preemption order). Raises ``ValueError`` on an empty list.

    >>> choose_victim([RequestView(4, 10, 11), RequestView(7, 3, 9)])
    1
    """
    if not running:
        raise ValueError("no running request to preempt")
    return len(running) - 1


@dataclass(frozen=True)
class RequestState:
    """A request as preemption sees it: a :class:`RequestView` plus the pool blocks it holds, in table order."""

    request_id: int
    num_computed_tokens: int
    num_tokens: int
    block_ids: tuple[int, ...] = ()


class Preemption(NamedTuple):
    """What :func:`preempt` returns: the new queues, and the victim's blocks in the order to release them."""

    running: list[RequestState]
    waiting: list[RequestState]
    released: list[int]


def preempt(running: Sequence[RequestState], waiting: Sequence[RequestState]) -> Preemption:
    """Preempt by recompute: take the victim (:func:`choose_victim`) out of ``running`` and roll it back.

    The victim gives back every block it holds, last block first (the tail
    is the least likely to be shared, so the prefix cache should evict it
    first), and starts again from nothing: 0 computed tokens, no blocks, its
    ``num_tokens`` (prompt + tokens generated so far) unchanged, so the tokens
    it already produced are recomputed, not lost. It goes to the **front** of
    ``waiting``: it was admitted before everyone still waiting. The inputs are
    left as they were. When it is admitted again, the prefix cache usually
    gives most of its blocks back as a hit, which is what makes recompute cheap.

    >>> run = [RequestState(0, 30, 31, (4, 5)), RequestState(1, 17, 18, (7, 2))]
    >>> preempt(run, [RequestState(2, 0, 9)])
    Preemption(running=[RequestState(request_id=0, num_computed_tokens=30, num_tokens=31, block_ids=(4, 5))], \
waiting=[RequestState(request_id=1, num_computed_tokens=0, num_tokens=18, block_ids=()), \
RequestState(request_id=2, num_computed_tokens=0, num_tokens=9, block_ids=())], released=[2, 7])
    """
    index = choose_victim(running)
    victim = running[index]
    reset = RequestState(victim.request_id, 0, victim.num_tokens, ())
    return Preemption(
        running=[r for i, r in enumerate(running) if i != index],
        waiting=[reset, *waiting],
        released=list(reversed(victim.block_ids)),
    )


class WaitingRequest(NamedTuple):
    """A waiting request as a scheduling policy sees it (chapter 05's exercise 5.3): what to peek with, and when it came."""

    request_id: int
    token_ids: tuple[int, ...]  # prompt + any tokens generated before a preemption
    arrival_time: float
    cache_salt: str | None = None

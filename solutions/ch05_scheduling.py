"""Chapter 05: scheduling (see chapters/05_scheduling.ipynb).

Exercises 5.1-5.2: the two decisions an online engine makes every step. Fill
one step's token budget (running requests first, one decode token each or the
next chunk of an unfinished prefill, then waiting requests), and, when the KV
pool runs dry, pick a running request to preempt and roll it back so it can be
recomputed later. Both are pure functions over small records
(:class:`~minikv.engine.step_plan.RequestView`, ``RequestState``): data in,
data out. ``fill_budget`` plugs into the engine:
``LLMEngine(model, schedule_fn=fill_budget)``. Check your work with
``minikv grade --chapter 5``, or ``minikv.grade.check("5.1")`` in the notebook.
"""

from __future__ import annotations

from collections.abc import Sequence

from minikv.engine.step_plan import Preemption, RequestState, RequestView


def fill_budget(
    running: Sequence[RequestView],
    waiting: Sequence[RequestView],
    token_budget: int,
    long_prefill_token_threshold: int = 0,
    max_num_seqs: int = 256,
    chunked_prefill: bool = True,
) -> dict[int, int]:
    """Exercise 5.1: fill one step's token budget.

    Return ``{request_id: tokens to compute this step}``, running requests
    first, then the waiting ones admitted (a dict keeps insertion order: that
    order is part of the answer). Each request is ``behind`` by
    ``num_tokens - num_computed_tokens`` tokens: 1 for a decode, more for a
    prefill (a waiting request's ``num_computed_tokens`` is its prefix-cache hit).

    1. **Running requests**, in the order given: each gets what it is behind,
       cut to ``long_prefill_token_threshold`` when that is > 0 and
       ``chunked_prefill`` is on, and to what is left of ``token_budget``.
       Stop when the budget is spent (a request planned 0 tokens is left out).
    2. **Waiting requests**, in the order given (the scheduling policy's), the
       same cuts. Stop admitting at the first one that cannot be planned
       (head of line): the budget is spent, ``max_num_seqs`` requests would
       already run (the running ones count), or, with ``chunked_prefill=False``,
       it does not fit whole in what is left.

    The sum of the plan never exceeds ``token_budget``.

    >>> run = [RequestView(0, 40, 41), RequestView(1, 8, 100)]
    >>> wait = [RequestView(2, 16, 60), RequestView(3, 0, 9)]
    >>> fill_budget(run, wait, token_budget=64)
    {0: 1, 1: 63}
    >>> fill_budget(run, wait, token_budget=64, long_prefill_token_threshold=32)
    {0: 1, 1: 32, 2: 31}
    """
    ### BEGIN SOLUTION
    plan: dict[int, int] = {}
    left = token_budget

    def tokens_for(view: RequestView) -> int:
        n = view.num_tokens - view.num_computed_tokens
        if chunked_prefill and long_prefill_token_threshold > 0:
            n = min(n, long_prefill_token_threshold)
        return min(n, left)

    for view in running:
        if left <= 0:
            break
        n = tokens_for(view)
        if n > 0:
            plan[view.request_id] = n
            left -= n
    num_seqs = len(running)
    for view in waiting:
        if left <= 0 or num_seqs >= max_num_seqs:
            break
        n = tokens_for(view)
        whole = view.num_tokens - view.num_computed_tokens
        if n <= 0 or (not chunked_prefill and n < whole):
            break
        plan[view.request_id] = n
        left -= n
        num_seqs += 1
    return plan
    ### END SOLUTION


def preempt(running: Sequence[RequestState], waiting: Sequence[RequestState]) -> Preemption:
    """Exercise 5.2: pick a preemption victim and roll it back.

    The pool has no block left for a running request, so one running request
    must give its blocks back. Return ``Preemption(running, waiting, released)``
    (new lists; leave the inputs as they were):

    * the **victim** is the *last* request of ``running`` (the newest admitted:
      it has done the least work since, and the oldest keep making progress);
    * ``running`` without the victim, the others in their order;
    * ``waiting`` with the victim reset **at the front** (it was admitted
      before everyone still waiting): ``RequestState(its id, 0, its num_tokens, ())``:
      nothing computed, no blocks, and ``num_tokens`` unchanged (the tokens it
      generated are kept and recomputed with the prompt when it comes back);
    * ``released``: the victim's block ids **tail first** (``reversed``): the
      prefix cache frees them in this order, so its last blocks, the least
      likely to be shared, are evicted first and its prompt's first blocks
      stay cached for when it resumes.

    Raise ``ValueError`` when ``running`` is empty.

    >>> run = [RequestState(0, 30, 31, (4, 5)), RequestState(1, 17, 18, (7, 2))]
    >>> p = preempt(run, [RequestState(2, 0, 9)])
    >>> [r.request_id for r in p.running], [w.request_id for w in p.waiting], p.released
    ([0], [1, 2], [2, 7])
    >>> p.waiting[0]
    RequestState(request_id=1, num_computed_tokens=0, num_tokens=18, block_ids=())
    """
    ### BEGIN SOLUTION
    if not running:
        raise ValueError("no running request to preempt")
    victim = running[-1]
    reset = RequestState(victim.request_id, 0, victim.num_tokens, ())
    return Preemption(list(running[:-1]), [reset, *waiting], list(reversed(victim.block_ids)))
    ### END SOLUTION

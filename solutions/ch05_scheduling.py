"""Chapter 05: scheduling (see chapters/05_scheduling.ipynb).

Exercises 5.1-5.4. The two decisions an online engine makes every step: fill
one step's token budget (running requests first, one decode token each or the
next chunk of an unfinished prefill, then waiting requests), and, when the KV
pool runs dry, pick a running request to preempt and roll it back so it can be
recomputed later (5.1, 5.2). Then the order that makes the prefix cache pay:
longest cached prefix first (5.3), and the best any eviction policy could do,
Belady's offline optimum (5.4). All are pure functions over small records
(:mod:`minikv.engine.step_plan`): data in, data out. ``fill_budget`` plugs into
the engine: ``LLMEngine(model, schedule_fn=fill_budget)``. Check your work with
``minikv grade --chapter 5``, or ``minikv.grade.check("5.1")`` in the notebook.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from minikv.engine.step_plan import Preemption, RequestState, RequestView, WaitingRequest
from minikv.prefix import PrefixCache, chain_block_hashes, max_cached_blocks

LPM_THRESHOLD = 128  # waiting requests above which LPM stops peeking and keeps FCFS order (SGLang's value)


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


def lpm_order(waiting: Sequence[WaitingRequest], cache: PrefixCache,
              threshold: int = LPM_THRESHOLD) -> list[WaitingRequest]:
    """Exercise 5.3: longest-prefix-match order.

    Return the requests of ``waiting`` (in queue order, each a
    ``WaitingRequest(request_id, token_ids, arrival_time, cache_salt)``) in
    the order the engine should admit them: the most cached tokens first, so
    that a request is admitted while the prefix it shares is still cached.

    * A request's cached tokens: ``cache.peek(token_ids, cache_salt)``. Peek
      reads the cache as ``match`` would but takes **no** reference and
      changes no counter or LRU order; ``match`` would pin blocks that nobody
      releases, and make every ordering look like a cache query.
    * Ties: earlier ``arrival_time`` first, then queue order (sort stably).
    * More than ``threshold`` waiting requests: return them in queue order
      (FCFS) without peeking at all: ranking costs a lookup per request per step.

    >>> from minikv.prefix import BlockHashCache
    >>> cache = BlockHashCache(8, 2)
    >>> cache.insert([1, 2, 3, 4], cache.allocate(2))
    2
    >>> queue = [WaitingRequest(0, (9, 9, 9), 0.0), WaitingRequest(1, (1, 2, 3, 4, 5), 1.0),
    ...          WaitingRequest(2, (1, 2, 7), 2.0)]
    >>> [r.request_id for r in lpm_order(queue, cache)], [r.request_id for r in lpm_order(queue, cache, threshold=2)]
    ([1, 2, 0], [0, 1, 2])
    """
    ### BEGIN SOLUTION
    if len(waiting) > threshold:
        return list(waiting)
    hits = [cache.peek(r.token_ids, r.cache_salt) for r in waiting]
    ranked = sorted(range(len(waiting)), key=lambda i: (-hits[i], waiting[i].arrival_time, i))
    return [waiting[i] for i in ranked]
    ### END SOLUTION


class LPMPolicy:
    """Your :func:`lpm_order` as the engine's scheduling policy: ``LLMEngine(model, policy=LPMPolicy())``.

    The engine hands a policy its waiting requests (minikv ``Sequence`` objects) and its prefix cache;
    this turns each into a ``WaitingRequest`` (its ``request_id`` is its index in the queue) and
    puts the queue in the order ``lpm_order`` gives. Given, not an exercise.
    """

    name = "your lpm"

    def __init__(self, threshold: int = LPM_THRESHOLD) -> None:
        self.threshold = threshold

    def order(self, waiting: list, cache: PrefixCache) -> list:
        queue = [WaitingRequest(i, tuple(seq.token_ids), seq.metrics.arrival_time, seq.params.cache_salt)
                 for i, seq in enumerate(waiting)]
        return [waiting[r.request_id] for r in lpm_order(queue, cache, self.threshold)]


def belady_hits(trace: Sequence[Sequence[int]], capacity: int, block_size: int) -> list[int]:
    """Exercise 5.4: Belady's offline optimum.

    Replay ``trace`` (prompts, one after the other) through a prefix cache of
    ``capacity`` blocks that knows the future, and return each prompt's hit
    in tokens. The model is the engine's, block by block:

    * block ``j`` of a prompt is named by ``keys[j]`` of
      ``keys = chain_block_hashes(prompt, block_size)`` (full blocks only;
      a key stands for the whole prefix up to the block's end, so block ``j``'s
      *parent* is ``keys[j - 1]``);
    * a prompt **hits** its longest run of cached first blocks, at most
      ``max_cached_blocks(len(prompt), block_size)`` of them (the last-token
      rule); the hit is that many blocks times ``block_size``;
    * while it runs it holds ``need = ceil(len(prompt) / block_size)``
      blocks, the hit ones included, so first **evict** until
      ``len(cached) - hit_blocks + need <= capacity``; afterwards every one of
      its full blocks is cached;
    * a prompt with ``need > capacity`` cannot run beside anything: the cache
      is emptied, it hits 0 and leaves nothing cached.

    **Which block to evict** (Belady, 1966, for a prefix tree): among cached
    blocks that are not hit by the running prompt and are **leaves** (no cached
    block has them as parent), the one whose **next use** is farthest away;
    ties go to the deepest block (largest ``j``). The next use of a block after
    prompt ``i`` is the first later prompt ``i2 > i`` whose first
    ``max_cached_blocks(len(trace[i2]), block_size)`` keys contain it; a block
    never used again is infinitely far (``math.inf``).

    >>> belady_hits([[1, 2, 3], [4, 5, 6], [1, 2, 3]], capacity=3, block_size=2)
    [0, 0, 2]
    >>> belady_hits([[1, 2, 3], [4, 5, 6], [1, 2, 3]], capacity=2, block_size=2)   # [4, 5] needs the room of [1, 2]
    [0, 0, 0]
    """
    ### BEGIN SOLUTION
    keys = [chain_block_hashes(list(prompt), block_size) for prompt in trace]
    caps = [max_cached_blocks(len(prompt), block_size) for prompt in trace]
    hittable = [set(k[:cap]) for k, cap in zip(keys, caps)]  # the blocks each prompt could hit
    parent, depth = {}, {}
    cached: set = set()

    def next_use(key, now: int) -> float:
        return next((i for i in range(now + 1, len(trace)) if key in hittable[i]), math.inf)

    hits = []
    for i, prompt in enumerate(trace):
        need = math.ceil(len(prompt) / block_size)
        if need > capacity:
            cached.clear()
            hits.append(0)
            continue
        hit = 0
        while hit < caps[i] and keys[i][hit] in cached:
            hit += 1
        hit_keys = set(keys[i][:hit])
        while len(cached) - hit + need > capacity:
            parents = {parent[k] for k in cached}
            leaves = [k for k in cached if k not in hit_keys and k not in parents]
            victim = max(leaves, key=lambda k: (next_use(k, i), depth[k]))
            cached.remove(victim)
        hits.append(hit * block_size)
        for j, key in enumerate(keys[i]):
            cached.add(key)
            parent[key] = keys[i][j - 1] if j else None
            depth[key] = j
    return hits
    ### END SOLUTION

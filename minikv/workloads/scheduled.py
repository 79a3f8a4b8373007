"""Replay a trace through a prefix cache in the order a scheduling policy picks, without a model.

:func:`~minikv.workloads.replay` runs requests in trace order. An engine
instead keeps a waiting queue and, each step, admits from it in the order of
its :mod:`scheduling policy <minikv.engine.policies>`. This module plays
that loop with bookkeeping only, so the effect of the order on the hit rate
is measured on its own:

1. at step ``t`` (time ``t * step_time``), requests whose arrival time has
   come join the waiting queue, in trace order; requests admitted
   ``hold_steps`` steps ago finish and ``release`` their blocks;
2. the policy orders the waiting queue (it may only ``peek`` at the cache);
3. up to ``max_admit`` requests are admitted from the front, each as the
   engine does: ``match``, ``allocate`` the rest, ``insert`` the prompt (its
   K/V counts as computed in this step). The first that does not fit stops
   admission for the step (its matched blocks are given back).

A running request holds its blocks, so concurrency (``max_admit``,
``hold_steps``) shrinks what the cache can keep, as in an engine.

>>> from minikv.prefix import RadixCache
>>> from minikv.workloads import shuffled_few_shot_trace
>>> trace = shuffled_few_shot_trace(24, n_groups=3, preamble_len=64, question_len=8)
>>> runs = {p: replay_scheduled(RadixCache(7, 16), trace, p) for p in ("fcfs", "lpm")}
>>> runs["lpm"].hit_rate > runs["fcfs"].hit_rate
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from minikv.errors import InvalidRequestError, KVCacheFull
from minikv.prefix.base import PrefixCache
from minikv.validation import is_int


@dataclass
class _Params:
    cache_salt: Hashable = None


@dataclass
class _Metrics:
    arrival_time: float = 0.0


@dataclass
class WaitingRequest:
    """What a scheduling policy reads of a request, without an engine ``Sequence``."""

    request_id: int
    prompt_token_ids: list[int]
    params: _Params = field(default_factory=_Params)
    metrics: _Metrics = field(default_factory=_Metrics)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_token_ids


@dataclass(frozen=True)
class ScheduledReplay:
    """What a scheduled replay did; lists are indexed by trace position unless said otherwise.

    ``hits``: tokens each request hit; ``arrival_step`` / ``admit_step``: the
    step it joined the queue / was admitted; ``order``: trace positions in
    admission order; ``steps``: steps until the last request finished
    (the last admission plus ``hold_steps``).
    """

    policy: str
    hits: list[int]
    prompt_tokens: list[int]
    arrival_step: list[int]
    admit_step: list[int]
    order: list[int]
    steps: int

    @property
    def hit_tokens(self) -> int:
        return sum(self.hits)

    @property
    def hit_rate(self) -> float:
        """Hit tokens over prompt tokens, 0.0 for an empty trace."""
        total = sum(self.prompt_tokens)
        return self.hit_tokens / total if total else 0.0

    @property
    def waits(self) -> list[int]:
        """Steps each request waited in the queue."""
        return [a - b for a, b in zip(self.admit_step, self.arrival_step)]

    @property
    def max_wait(self) -> int:
        """The longest wait in steps (what an order that groups requests may cost one of them)."""
        return max(self.waits, default=0)


def _whole(name: str, value: object, minimum: int) -> int:
    if not is_int(value) or value < minimum:
        raise InvalidRequestError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def replay_scheduled(
    cache: PrefixCache,
    trace: Sequence[Sequence[int]],
    policy: object = "fcfs",
    *,
    arrivals: Sequence[float] | None = None,
    step_time: float = 1.0,
    max_admit: int = 1,
    hold_steps: int = 1,
    salts: Sequence[Hashable] | None = None,
) -> ScheduledReplay:
    """Run ``trace`` through ``cache``, admitting requests in ``policy`` order (see the module doc).

    ``policy``: a name of :data:`~minikv.engine.policies.POLICIES` or a
    policy object. ``arrivals``: seconds (never decreasing), default all at
    0; ``step_time``: seconds per step. ``max_admit``: requests admitted per
    step at most; ``hold_steps``: steps a request holds its blocks. Raises
    :class:`~minikv.errors.KVCacheFull` if a request does not fit even when
    nothing else runs.
    """
    from minikv.engine.policies import checked_order, make_policy

    pol = make_policy(policy)  # type: ignore[arg-type]
    n = len(trace)
    max_admit = _whole("max_admit", max_admit, 1)
    hold_steps = _whole("hold_steps", hold_steps, 1)
    if isinstance(step_time, bool) or not isinstance(step_time, (int, float)) or not step_time > 0:
        raise InvalidRequestError(f"step_time must be a number of seconds > 0, got {step_time!r}")
    times = [0.0] * n if arrivals is None else [float(a) for a in arrivals]
    if len(times) != n or any(b < a for a, b in zip(times, times[1:])) or any(t < 0 for t in times):
        raise InvalidRequestError(
            f"arrivals must give one time >= 0 per request, never decreasing: {len(times)} times "
            f"for {n} requests"
        )
    if salts is not None and len(salts) != n:
        raise InvalidRequestError(
            f"salts must give one salt per request: {len(salts)} salts for {n} requests"
        )
    bs = cache.block_size
    requests = [
        WaitingRequest(i, list(tokens), _Params(None if salts is None else salts[i]), _Metrics(times[i]))
        for i, tokens in enumerate(trace)
    ]
    arrival_step = [math.ceil(t / step_time - 1e-9) for t in times]
    hits, admit_step, order = [0] * n, [0] * n, []
    waiting: list[WaitingRequest] = []
    running: list[tuple[int, list[int]]] = []  # (finish step, block table)
    nxt, t = 0, 0
    while nxt < n or waiting or running:
        if not waiting and not running and arrival_step[nxt] > t:
            t = arrival_step[nxt]  # idle: jump to the next arrival
        while nxt < n and arrival_step[nxt] <= t:
            waiting.append(requests[nxt])
            nxt += 1
        still = []
        for done, table in running:
            if done <= t:
                cache.release(table)
            else:
                still.append((done, table))
        running = still
        admitted = []
        for req in checked_order(pol, waiting, cache)[:max_admit]:
            tokens, salt = req.prompt_token_ids, req.params.cache_salt
            m = cache.match(tokens, salt)
            try:
                new = cache.allocate(-(-len(tokens) // bs) - len(m.block_ids))
            except KVCacheFull as e:
                cache.release(m.block_ids)
                if not running and not admitted:
                    raise KVCacheFull(
                        f"request {req.request_id} ({len(tokens)} tokens) does not fit a pool of "
                        f"{cache.num_blocks} blocks of {bs} tokens even with nothing running: {e}"
                    ) from None
                break
            table = [*m.block_ids, *new]
            cache.insert(tokens, table, salt)
            running.append((t + hold_steps, table))
            hits[req.request_id], admit_step[req.request_id] = m.num_cached_tokens, t
            order.append(req.request_id)
            admitted.append(req)
        if admitted:
            chosen = {id(r) for r in admitted}
            waiting = [r for r in waiting if id(r) not in chosen]
        t += 1
    name = getattr(pol, "name", type(pol).__name__)
    steps = max(admit_step) + hold_steps if n else 0
    return ScheduledReplay(name, hits, [len(p) for p in trace], arrival_step, admit_step, order, steps)


def compare_policies(
    make_cache: Callable[[], PrefixCache],
    trace: Sequence[Sequence[int]],
    policies: Sequence[object] | Mapping[str, object] = ("fcfs", "lpm", "dfs-weight"),
    **kw: Any,
) -> dict[str, ScheduledReplay]:
    """:func:`replay_scheduled` once per policy, each on a fresh ``make_cache()``.

    ``policies``: names or policy objects (keyed by their ``name``), or a
    mapping from the label to use to a policy (to compare two settings of one
    policy, e.g. ``{"lpm": "lpm", "lpm-no-threshold": LPM(threshold=10**9)}``).
    """
    labelled = (
        dict(policies) if isinstance(policies, Mapping)
        else {getattr(p, "name", p): p for p in policies}
    )  # fmt: skip
    return {label: replay_scheduled(make_cache(), trace, p, **kw) for label, p in labelled.items()}


def few_shot_order_experiment(
    n: int = 200,
    n_groups: int = 4,
    preamble_len: int = 1024,
    block_size: int = 16,
    cache_blocks: Sequence[int] = (96, 160),
    rates: Sequence[float] = (math.inf, 2.0, 1.1),
    cache: str = "radix",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """FCFS vs LPM vs DFS-weight on :func:`~minikv.workloads.shuffled_few_shot_trace`, small caches.

    One row per (cache size, arrival rate, policy): the hit rate, the
    infinite cache's (the most any order can reach), and the longest wait in
    steps. Requests arrive as a Poisson process at ``rate`` per step (``inf``:
    all at once) and one is admitted per step. ``lpm`` is SGLang's (FCFS
    above 128 waiting requests); ``lpm-all`` ranks however long the queue.
    ``cache``: a :data:`~minikv.prefix.PREFIX_CACHE_KINDS` name. The table
    of docs/scheduling.md is ``print(format_rows(few_shot_order_experiment()))``.
    """
    from minikv.engine.policies import LPM
    from minikv.prefix import make_prefix_cache
    from minikv.workloads.arrivals import poisson_arrivals
    from minikv.workloads.ideal import ideal_hit_tokens
    from minikv.workloads.traces import shuffled_few_shot_trace

    trace = shuffled_few_shot_trace(n, n_groups, preamble_len, seed=seed)
    ideal = sum(ideal_hit_tokens(trace, block_size)) / sum(map(len, trace))
    policies = {"fcfs": "fcfs", "lpm": "lpm", "lpm-all": LPM(threshold=n), "dfs-weight": "dfs-weight"}
    rows = []
    for nb in cache_blocks:
        for rate in rates:
            runs = compare_policies(
                lambda: make_prefix_cache(cache, nb, block_size), trace, policies,
                arrivals=poisson_arrivals(n, rate, seed=seed),
            )  # fmt: skip
            for label, run in runs.items():
                rows.append(dict(cache=cache, cache_tokens=nb * block_size, rate=rate, policy=label,
                                 hit_rate=run.hit_rate, ideal=ideal, max_wait=run.max_wait))  # fmt: skip
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`few_shot_order_experiment`'s rows as a markdown table."""
    head = ("cache", "cache tokens", "arrivals / step", "policy", "hit rate", "% of infinite cache",
            "max wait (steps)")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rate = "all at once" if math.isinf(r["rate"]) else f"{r['rate']:g}"
        lines.append(
            f"| {r['cache']} | {r['cache_tokens']} | {rate} | {r['policy']} | {r['hit_rate']:.1%} "
            f"| {r['hit_rate'] / r['ideal']:.0%} | {r['max_wait']} |"
        )
    return "\n".join(lines)


__all__ = [
    "ScheduledReplay",
    "WaitingRequest",
    "compare_policies",
    "few_shot_order_experiment",
    "format_rows",
    "replay_scheduled",
]

"""Exercise 5.3, longest-prefix-match order: the learner's ``lpm_order`` against minikv's
:func:`~minikv.engine.policies.lpm_order` (fed ``cache.peek`` hits) over block-hash and radix caches
with random contents, and the cache unchanged by the ordering (no reference taken, no counter moved)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from minikv.engine.policies import LPM_THRESHOLD
from minikv.engine.policies import lpm_order as ref_lpm_order
from minikv.engine.step_plan import WaitingRequest
from minikv.grade.checks.ch05.budget import MODULE
from minikv.grade.compare import CheckFailed, call, forall, one_line
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.kv.block_table import cdiv
from minikv.prefix import BlockHashCache, RadixCache

ex53 = register(Exercise(
    "5.3", "longest-prefix-match order", MODULE, ("lpm_order",),
    hint="if len(waiting) > threshold: return list(waiting); hits = [cache.peek(r.token_ids, r.cache_salt) ...] "
         "(peek, never match); sorted(range(n), key=lambda i: (-hits[i], waiting[i].arrival_time, i))",
))


def _snapshot(cache: Any) -> dict[str, Any]:
    """Everything ordering must leave as it was: counters, references, the eviction order."""
    snap = {"stats()": cache.stats()}
    for b in range(cache.num_blocks):
        snap[f"block {b}'s ref count"] = cache.ref_count(b)
    if hasattr(cache, "free_queue"):
        snap["the free queue (LRU order)"] = cache.free_queue()
    if hasattr(cache, "to_dict"):
        snap["the tree (nodes, locks, access times)"] = cache.to_dict()
    return snap


def _serve(cache: Any, tokens: list[int], salt: str | None, keep: bool) -> None:
    """One request the engine's way; ``keep``: it is still running (holds its blocks)."""
    m = cache.match(tokens, salt)
    need = cdiv(len(tokens), cache.block_size) - len(m.block_ids)
    if need > cache.num_allocatable:
        cache.release(list(m.block_ids))
        return
    table = list(m.block_ids) + cache.allocate(need)
    cache.insert(tokens, table, salt)
    if not keep:
        cache.release(table)


def _describe(queue: list[WaitingRequest], cache: Any, threshold: int) -> str:
    rows = ", ".join(f"#{r.request_id} ({len(r.token_ids)} tokens{', salt ' + repr(r.cache_salt) if r.cache_salt else ''}, "
                     f"arrived {r.arrival_time:g})" for r in queue[:6])
    more = f", ... ({len(queue)} in all)" if len(queue) > 6 else ""
    return (f"lpm_order([{rows}{more}], {type(cache).__name__}(num_blocks={cache.num_blocks}, "
            f"block_size={cache.block_size})" + (f", threshold={threshold})" if threshold != LPM_THRESHOLD else ")"))


def expect_order(fn: Callable[..., Any], queue: list[WaitingRequest], cache: Any,
                 threshold: int = LPM_THRESHOLD) -> list[int]:
    """The learner's order of ``queue`` against minikv's; the cache must not change."""
    desc = _describe(queue, cache, threshold)
    hits = {r.request_id: cache.peek(r.token_ids, r.cache_salt) for r in queue}
    before = _snapshot(cache)
    given = list(queue)
    got = call(fn, given, cache, threshold, context=desc)
    after = _snapshot(cache)
    for what, value in before.items():
        if after[what] != value:
            if what == "stats()":
                moved = [f"{f} {getattr(value, f)} -> {getattr(after[what], f)}" for f in
                         ("requests", "query_tokens", "hit_tokens", "num_used", "num_evictable")
                         if getattr(value, f) != getattr(after[what], f)]
                what = f"stats() ({', '.join(moved) or 'some counter'})"
            elif "ref count" in what:
                what = f"{what} ({value} -> {after[what]})"
            raise CheckFailed(one_line(
                f"ordering changed the cache: {what}. Read each hit with cache.peek(token_ids, cache_salt), which takes "
                f"no reference and moves no counter; match pins blocks nobody releases ({desc})"))
    if given != queue:
        raise CheckFailed(one_line(f"{desc} changed the list it was given; return a new list"))
    if not isinstance(got, (list, tuple)):
        raise CheckFailed(one_line(f"{desc} returned a {type(got).__name__}, expected a list of the waiting requests"))
    got_ids = [getattr(r, "request_id", r) for r in got]
    want = [queue[i].request_id for i in ref_lpm_order([(i, hits[r.request_id], r.arrival_time)
                                                         for i, r in enumerate(queue)], threshold)]
    if sorted(got_ids, key=str) != sorted(want, key=str):
        raise CheckFailed(one_line(f"{desc} returned requests {got_ids}: every waiting request exactly once, "
                                   f"expected {want}"))
    if got_ids != want:
        k = next(k for k, (a, b) in enumerate(zip(got_ids, want)) if a != b)
        a, b = got_ids[k], want[k]
        if len(queue) > threshold:
            why = (f"{len(queue)} requests wait, more than threshold={threshold}: keep the queue order (FCFS) "
                   "without peeking")
        elif hits[a] < hits[b]:
            why = (f"request {a} ({hits[a]} cached tokens) comes before request {b} ({hits[b]} cached tokens): "
                   "longest cached prefix first")
        elif hits[a] > hits[b]:
            why = f"request {a} has {hits[a]} cached tokens, request {b} {hits[b]}: is the hit read right?"
        else:
            why = (f"requests {a} and {b} both hit {hits[a]} tokens: ties go by arrival_time "
                   f"({dict((r.request_id, r.arrival_time) for r in queue)[a]:g} vs "
                   f"{dict((r.request_id, r.arrival_time) for r in queue)[b]:g}), then queue order")
        raise CheckFailed(one_line(f"{why}; {desc} gave {got_ids}, expected {want} (cached tokens: {hits})"))
    return want


def _filled(cls: type, seed: int, **kw: Any) -> tuple[Any, list[list[int]]]:
    """A cache of ``cls`` after serving a few requests that share prefixes; and the prefixes."""
    rng = random.Random(seed)
    cache = cls(24, 4, **kw)
    stems = [[rng.randrange(100) for _ in range(rng.randrange(4, 20))] for _ in range(4)]
    for k in range(6):
        stem = rng.choice(stems)
        _serve(cache, stem + [rng.randrange(100) for _ in range(rng.randrange(0, 6))], None, keep=k == 5)
    return cache, stems


def _queue(rng: random.Random, stems: list[list[int]], n: int, salts: bool = False) -> list[WaitingRequest]:
    out = []
    for i in range(n):
        stem = rng.choice(stems + [[]])
        tokens = stem[: rng.randrange(len(stem) + 1)] + [rng.randrange(100) for _ in range(rng.randrange(1, 8))]
        salt = rng.choice([None, None, "tenant-b"]) if salts else None
        out.append(WaitingRequest(10 + i, tuple(tokens), float(rng.randrange(4)), salt))
    return out


@ex53.check("the docstring's example")
def _example(learner: Learner) -> None:
    cache = BlockHashCache(8, 2)
    cache.insert([1, 2, 3, 4], cache.allocate(2))
    queue = [WaitingRequest(0, (9, 9, 9), 0.0), WaitingRequest(1, (1, 2, 3, 4, 5), 1.0), WaitingRequest(2, (1, 2, 7), 2.0)]
    fn = learner.get("lpm_order")
    expect_order(fn, queue, cache)
    expect_order(fn, queue, cache, threshold=2)


@ex53.check("the cache is only peeked at: no reference, no counter, no LRU change")
def _peek_only(learner: Learner) -> str:
    fn = learner.get("lpm_order")
    rng = random.Random(5)
    for cls, kw in ((BlockHashCache, {}), (RadixCache, {}), (RadixCache, {"page_size": 1})):
        cache, stems = _filled(cls, 7, **kw)
        expect_order(fn, _queue(rng, stems, 6), cache)
    return "ordering leaves block-hash and radix caches exactly as they were"


@ex53.check("most cached tokens first; ties by arrival, then queue order; FCFS above the threshold")
def _ties(learner: Learner) -> None:
    fn = learner.get("lpm_order")
    cache = BlockHashCache(16, 2)
    cache.insert([1, 2, 3, 4, 5, 6], cache.allocate(3))
    q = [WaitingRequest(0, (1, 2, 9), 2.0), WaitingRequest(1, (1, 2, 3, 4, 5, 6, 7), 3.0),
         WaitingRequest(2, (8, 8), 0.0), WaitingRequest(3, (1, 2, 3, 4, 0), 1.0),
         WaitingRequest(4, (1, 2, 3), 2.0), WaitingRequest(5, (1, 2, 0), 1.0)]
    expect_order(fn, q, cache)
    expect_order(fn, q, cache, threshold=5)
    expect_order(fn, q, cache, threshold=6)


@ex53.check("random caches and queues (salts too) vs minikv's lpm_order")
def _random(learner: Learner) -> None:
    fn = learner.get("lpm_order")
    kinds = [(BlockHashCache, {}), (RadixCache, {}), (RadixCache, {"page_size": 1})]

    @forall(st.integers(0, 10**6), st.sampled_from(range(len(kinds))), st.integers(0, 9),
            st.sampled_from([LPM_THRESHOLD, 3, 8]), max_examples=40)
    def prop(seed: int, kind: int, n: int, threshold: int) -> None:
        cls, kw = kinds[kind]
        cache, stems = _filled(cls, seed, **kw)
        expect_order(fn, _queue(random.Random(seed + 1), stems, n, salts=True), cache, threshold)

    prop()


# ---- the engine: LLMEngine("tiny-llama", policy=LPMPolicy()) over the learner's lpm_order ------------

def _engine_arrivals() -> list[tuple[int, list[int]]]:
    """Few-shot-like prompts (four shared stems, unique questions), shuffled, two arriving per step."""
    rng = random.Random(55)
    stems = [[rng.randrange(1, 250) for _ in range(rng.randrange(20, 30))] for _ in range(4)]
    prompts = [stem + [rng.randrange(1, 250) for _ in range(rng.randrange(3, 7))] for stem in stems for _ in range(4)]
    rng.shuffle(prompts)
    return [(i // 2, p) for i, p in enumerate(prompts)]


def lpm_engine_run(policy: Any) -> tuple[list[dict[Any, int]], dict[int, tuple[int, ...]], dict[int, int]]:
    """The plan of every step, each request's tokens and cached tokens, with ``policy``."""
    from minikv import SamplingParams
    from minikv.engine import LLMEngine

    engine = LLMEngine("tiny-llama", prefix_cache="radix", num_blocks=20, block_size=4, device="cpu",
                       dtype="float32", max_num_seqs=3, max_num_batched_tokens=64, policy=policy)
    pending = _engine_arrivals()
    plans: list[dict[Any, int]] = []
    tokens: dict[int, list[int]] = {}
    cached: dict[int, int] = {}
    step = 0
    while pending or engine.has_unfinished_requests():
        while pending and pending[0][0] <= step:
            _, prompt = pending.pop(0)
            rid = len(tokens)
            engine.add_request(rid, {"prompt_token_ids": prompt}, SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))
            tokens[rid] = []
        for o in engine.step():
            tokens[o.request_id] += list(o.new_token_ids)
            if o.finished:
                cached[o.request_id] = o.num_cached_tokens
        plans.append(dict(engine.last_step.scheduled))
        step += 1
        if step > 500:
            raise CheckFailed(f"LLMEngine('tiny-llama') with your LPMPolicy did not finish 16 requests in 500 steps "
                              f"(the last plans: {plans[-3:]})")
    return plans, {i: tuple(t) for i, t in tokens.items()}, cached


@ex53.check("orders LLMEngine('tiny-llama')'s queue like minikv's policy='lpm'", final=True, engine=True)
def _engine(learner: Learner) -> str:
    from minikv.grade import memo
    from minikv.grade.compare import describe_exception

    fn = learner.get("lpm_order")
    policy_cls = learner.find("LPMPolicy")
    if policy_cls is None:
        raise CheckFailed("your file has no `LPMPolicy` (the given wrapper that plugs lpm_order into the engine); "
                          "copy it back from a fresh `minikv exercises --force` file")
    want = memo.once("engine:ch05-lpm", lambda: lpm_engine_run("lpm"))
    fcfs = memo.once("engine:ch05-fcfs", lambda: lpm_engine_run("fcfs"))
    assert want[0] != fcfs[0] and sum(want[2].values()) > sum(fcfs[2].values()), \
        "LPM no longer changes the order (or the hits) of the engine workload: make it share more"
    calls = [0]
    module = learner.module

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return fn(*args, **kwargs)

    if module is not None:
        setattr(module, "lpm_order", counted)  # LPMPolicy calls lpm_order by name
    try:
        got = lpm_engine_run(policy_cls())
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as exc:  # noqa: BLE001 - the learner's code raised inside the engine
        raise CheckFailed(one_line(f"LLMEngine('tiny-llama', policy=LPMPolicy()) with your lpm_order: your code raised "
                                   f"{describe_exception(exc)}")) from exc
    finally:
        if module is not None:
            setattr(module, "lpm_order", fn)
    assert calls[0] > 0, "the engine never called the plugged-in lpm_order"
    for s, (g, w) in enumerate(zip(got[0], want[0])):
        if g != w:
            raise CheckFailed(one_line(f"with your lpm_order, step {s} of LLMEngine('tiny-llama', policy=LPMPolicy()) ran "
                                       f"{g}; with minikv's policy='lpm' it runs {w}"))
    if got[1:] != want[1:] or len(got[0]) != len(want[0]):
        raise CheckFailed(one_line(f"with your lpm_order the engine took {len(got[0])} steps and cached "
                                   f"{sum(got[2].values())} tokens; with minikv's policy='lpm' {len(want[0])} steps, "
                                   f"{sum(want[2].values())} cached tokens"))
    return (f"{len(want[1])} requests over {len(want[0])} steps match minikv's policy='lpm' step by step "
            f"({sum(want[2].values())} cached tokens, FCFS {sum(fcfs[2].values())}), with your lpm_order in LPMPolicy")

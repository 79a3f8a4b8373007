"""Exercise 5.1, fill one step's token budget: the learner's ``fill_budget`` against minikv's
:func:`~minikv.engine.step_plan.fill_budget` on hand-made steps (one rule each) and random ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from minikv.engine.step_plan import RequestView
from minikv.engine.step_plan import fill_budget as ref_fill_budget
from minikv.grade.compare import CheckFailed, call, forall, one_line
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner

MODULE = "ch05_scheduling"

ex51 = register(Exercise(
    "5.1", "fill one step's token budget", MODULE, ("fill_budget",),
    hint="keep `left = token_budget`; give each running request min(behind, threshold if > 0, left) first, "
         "then the waiting ones in order with the same cut, stopping at the first that gets 0 tokens, "
         "would make len(running) + admitted exceed max_num_seqs, or (chunked_prefill=False) does not fit whole",
))


def _views(rows: Sequence[tuple[int, int, int]]) -> list[RequestView]:
    return [RequestView(*row) for row in rows]


def _describe(running: list[RequestView], waiting: list[RequestView], budget: int, threshold: int,
              max_seqs: int, chunked: bool) -> str:
    def rows(views: list[RequestView]) -> str:
        return "[" + ", ".join(f"#{v.request_id} {v.num_computed_tokens}/{v.num_tokens}" for v in views) + "]"

    text = f"fill_budget(running={rows(running)}, waiting={rows(waiting)}, token_budget={budget}"
    if threshold:
        text += f", long_prefill_token_threshold={threshold}"
    if max_seqs != 256:
        text += f", max_num_seqs={max_seqs}"
    if not chunked:
        text += ", chunked_prefill=False"
    return text + ") (#id computed/num_tokens)"


def _diagnose(got: dict[Any, int], want: dict[int, int], running: list[RequestView], waiting: list[RequestView],
              budget: int, threshold: int, max_seqs: int, chunked: bool) -> str:
    """Name the rule ``got`` breaks, the most telling first."""
    total = sum(got.values())
    if total > budget:
        return f"the plan holds {total} tokens, over the token budget of {budget} (by {total - budget})"
    run_ids, wait_ids = {v.request_id for v in running}, {v.request_id for v in waiting}
    admitted = [i for i in got if i in wait_ids]
    if len(running) + len(admitted) > max_seqs:
        return (f"{len(running)} running + {len(admitted)} admitted = {len(running) + len(admitted)} requests, "
                f"more than max_num_seqs={max_seqs}")
    if chunked and threshold > 0:
        over = [(i, n) for i, n in got.items() if n > threshold]
        if over:
            i, n = over[0]
            return f"request {i} got {n} tokens, more than long_prefill_token_threshold={threshold}"
    order = list(got)
    first_wait = next((k for k, i in enumerate(order) if i in wait_ids), len(order))
    if any(i in run_ids for i in order[first_wait:]):
        return ("a waiting request comes before a running one in the plan: running requests "
                "(decodes, unfinished prefills) fill the budget first, then waiting ones are admitted")
    starved = [v.request_id for v in running if got.get(v.request_id, 0) < want.get(v.request_id, 0)]
    if starved and admitted:
        return (f"running request {starved[0]} got {got.get(starved[0], 0)} tokens (expected {want[starved[0]]}) while "
                f"waiting request {admitted[0]} was admitted: running requests fill the budget first")
    if not chunked:
        cut = [v for v in waiting if v.request_id in got and got[v.request_id] < v.behind]
        if cut:
            v = cut[0]
            return (f"with chunked_prefill=False a waiting request is admitted whole or not at all: request "
                    f"{v.request_id} needs {v.behind} tokens and got {got[v.request_id]}")
    extra = [i for i in got if i not in want]
    if extra:
        return f"request {extra[0]} is planned {got[extra[0]]} tokens, but should not run this step"
    if list(got) != list(want) and sorted(got) == sorted(want) and all(got[i] == want[i] for i in want):
        return "the right tokens in another order: running requests in their order, then waiting ones in theirs"
    return ""


def expect_plan(fn: Callable[..., Any], running: list[RequestView], waiting: list[RequestView], budget: int,
                threshold: int = 0, max_seqs: int = 256, chunked: bool = True) -> dict[int, int]:
    """Run the learner's ``fn`` and minikv's on one step; CheckFailed naming the first rule broken."""
    desc = _describe(running, waiting, budget, threshold, max_seqs, chunked)
    run_in, wait_in = list(running), list(waiting)
    got = call(fn, run_in, wait_in, budget, threshold, max_seqs, chunked, context=desc)
    want = ref_fill_budget(running, waiting, budget, threshold, max_seqs, chunked)
    if not isinstance(got, dict):
        raise CheckFailed(one_line(f"{desc} returned a {type(got).__name__}, expected a dict {{request_id: tokens}}"))
    if run_in != running or wait_in != waiting:
        raise CheckFailed(one_line(f"{desc} changed the lists it was given; build a new plan, leave the queues alone"))
    if list(got.items()) != list(want.items()):
        why = _diagnose(got, want, running, waiting, budget, threshold, max_seqs, chunked)
        shown = f"{desc} returned {got}, expected {want}"
        raise CheckFailed(one_line(f"{why[0].upper() + why[1:]}; {shown}" if why else shown))
    return want


@ex51.check("the docstring's examples")
def _examples(learner: Learner) -> None:
    fn = learner.get("fill_budget")
    run, wait = _views([(0, 40, 41), (1, 8, 100)]), _views([(2, 16, 60), (3, 0, 9)])
    expect_plan(fn, run, wait, 64)
    expect_plan(fn, run, wait, 64, threshold=32)
    expect_plan(fn, run, wait, 120, chunked=False)


@ex51.check("running decodes first: a tight budget goes to them, never over")
def _decodes_first(learner: Learner) -> str:
    fn = learner.get("fill_budget")
    decodes = _views([(i, 20 + i, 21 + i) for i in range(5)])
    expect_plan(fn, decodes, _views([(9, 0, 30)]), 3)        # 3 of the 5 decodes, nobody admitted
    expect_plan(fn, decodes, _views([(9, 0, 30)]), 5)        # all 5 decodes, exactly the budget
    expect_plan(fn, decodes, _views([(9, 0, 30)]), 8)        # the decodes, then 3 prompt tokens of #9
    expect_plan(fn, decodes[:2] + _views([(5, 4, 50)]), _views([(9, 0, 30), (10, 0, 4)]), 40)
    expect_plan(fn, [], _views([(3, 0, 7), (4, 0, 7)]), 7)    # nothing running: the first prompt fills it
    return "decodes and unfinished prefills are planned before anyone is admitted, within the budget"


@ex51.check("long_prefill_token_threshold cuts every prefill chunk")
def _threshold(learner: Learner) -> None:
    fn = learner.get("fill_budget")
    run, wait = _views([(0, 10, 11), (1, 0, 90)]), _views([(2, 0, 50), (3, 32, 40), (4, 0, 3)])
    for threshold in (1, 7, 16, 64):
        expect_plan(fn, run, wait, 100, threshold=threshold)
    expect_plan(fn, run, wait, 100, threshold=16, chunked=False)  # no chunks: the threshold does not apply


@ex51.check("max_num_seqs caps how many run at once (running ones count)")
def _max_seqs(learner: Learner) -> None:
    fn = learner.get("fill_budget")
    wait = _views([(i, 0, 5) for i in range(10, 16)])
    expect_plan(fn, _views([(0, 9, 10), (1, 9, 10)]), wait, 100, max_seqs=4)
    expect_plan(fn, [], wait, 100, max_seqs=3)
    expect_plan(fn, _views([(0, 9, 10), (1, 9, 10), (2, 9, 10)]), wait, 100, max_seqs=3)


@ex51.check("chunked_prefill=False: a waiting prompt is admitted whole or stops admission")
def _no_chunks(learner: Learner) -> None:
    fn = learner.get("fill_budget")
    expect_plan(fn, _views([(0, 5, 6)]), _views([(1, 0, 20), (2, 0, 3)]), 10, chunked=False)
    expect_plan(fn, _views([(0, 5, 6)]), _views([(1, 0, 9), (2, 0, 3)]), 10, chunked=False)
    expect_plan(fn, _views([(0, 5, 6)]), _views([(1, 12, 20), (2, 0, 3)]), 12, chunked=False)


def _steps() -> Any:
    """A random step: running and waiting requests (distinct ids, some prefix hits), a budget and the options."""

    @st.composite
    def draw(d: Any) -> tuple:
        def request(rid: int, waiting: bool) -> tuple[int, int, int]:
            num_tokens = d(st.integers(1, 80))
            kind = d(st.sampled_from(["decode", "prefill"])) if not waiting else "prefill"
            computed = num_tokens - 1 if kind == "decode" else d(st.integers(0, num_tokens - 1))
            return rid, computed, num_tokens

        n_run, n_wait = d(st.integers(0, 6)), d(st.integers(0, 6))
        running = [request(i, False) for i in range(n_run)]
        waiting = [request(100 + i, True) for i in range(n_wait)]
        budget = d(st.integers(1, 120))
        threshold = d(st.sampled_from([0, 0, 1, 4, 16, 33]))
        max_seqs = d(st.sampled_from([256, 1, 2, 4, 7]))
        return _views(running), _views(waiting), budget, threshold, max_seqs, d(st.booleans())

    return draw()


@ex51.check("random steps vs minikv's fill_budget")
def _random(learner: Learner) -> None:
    fn = learner.get("fill_budget")

    @forall(_steps(), max_examples=150)
    def prop(step: tuple) -> None:
        expect_plan(fn, *step)

    prop()


# ---- the engine: LLMEngine("tiny-llama", schedule_fn=<the learner's>) --------------------------------

# (engine options, arrivals): each arrival (step, prompt length, max_tokens); prompts are seeded token ids.
ENGINE_CASES: tuple[tuple[dict[str, Any], tuple[tuple[int, int, int], ...]], ...] = (
    (dict(max_num_batched_tokens=16, long_prefill_token_threshold=7, max_num_seqs=3),
     ((0, 30, 6), (0, 9, 3), (1, 21, 8), (3, 40, 4), (5, 5, 7), (6, 17, 5))),
    (dict(max_num_batched_tokens=48, enable_chunked_prefill=False, max_num_seqs=4),
     ((0, 40, 5), (0, 12, 6), (2, 30, 4), (2, 44, 3), (4, 8, 8))),
    (dict(max_num_batched_tokens=32, num_blocks=7, max_num_seqs=4),   # a small pool: preemptions
     ((0, 20, 24), (0, 22, 24), (0, 18, 24), (1, 9, 20))),
)


def _prompt(case: int, i: int, n: int) -> list[int]:
    import random

    rng = random.Random(1000 * case + i)
    return [rng.randrange(1, 250) for _ in range(n)]


def engine_runs(schedule_fn: Callable[..., Any] | None) -> list[tuple[list[dict[Any, int]], dict[Any, tuple[int, ...]], int]]:
    """Per case: the plan of every step, each request's greedy tokens, and the preemptions."""
    from minikv import SamplingParams
    from minikv.engine import LLMEngine

    out = []
    for c, (options, arrivals) in enumerate(ENGINE_CASES):
        kw = {"prefix_cache": "radix", "num_blocks": 32, "block_size": 16, "device": "cpu", "dtype": "float32", **options}
        if schedule_fn is not None:
            kw["schedule_fn"] = schedule_fn
        engine = LLMEngine("tiny-llama", **kw)
        pending = sorted(enumerate(arrivals), key=lambda a: a[1][0])
        plans: list[dict[Any, int]] = []
        tokens: dict[Any, list[int]] = {}
        step = 0
        while pending or engine.has_unfinished_requests():
            while pending and pending[0][1][0] <= step:
                i, (_, n, max_tokens) = pending.pop(0)
                engine.add_request(i, {"prompt_token_ids": _prompt(c, i, n)},
                                   SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))
                tokens[i] = []
            for o in engine.step():
                tokens[o.request_id] += list(o.new_token_ids)
            plans.append(dict(engine.last_step.scheduled))
            step += 1
            if step > 500:
                raise CheckFailed("LLMEngine('tiny-llama') did not finish 6 short requests in 500 steps "
                                  f"with your fill_budget (the last plans: {plans[-3:]}): does it plan the running decodes?")
        out.append((plans, {i: tuple(t) for i, t in tokens.items()}, engine.get_stats().num_preemptions))
    return out


def _case_name(c: int) -> str:
    options, arrivals = ENGINE_CASES[c]
    text = ", ".join(f"{k}={v}" for k, v in options.items())
    return f"LLMEngine('tiny-llama', {text}) with {len(arrivals)} requests arriving over {arrivals[-1][0] + 1} steps"


def expect_engine_runs(fn: Callable[..., Any]) -> str:
    """Serve :data:`ENGINE_CASES` with ``fn`` as ``schedule_fn`` and with minikv's; CheckFailed at the first difference."""
    from minikv.grade import memo
    from minikv.grade.compare import describe_exception

    want = memo.once("engine:ch05-fill-budget", lambda: engine_runs(None))
    calls = [0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return fn(*args, **kwargs)

    try:
        got = engine_runs(counted)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as exc:  # noqa: BLE001 - the learner's code raised inside the engine
        raise CheckFailed(one_line(f"LLMEngine('tiny-llama') with your fill_budget: your code raised "
                                   f"{describe_exception(exc)}")) from exc
    assert calls[0] > 0, "the engine never called the plugged-in fill_budget"
    for c, ((g_plans, g_tokens, _), (w_plans, w_tokens, _)) in enumerate(zip(got, want)):
        for s, (g, w) in enumerate(zip(g_plans, w_plans)):
            if g != w:
                raise CheckFailed(one_line(f"with your fill_budget, step {s} of {_case_name(c)} ran {g}; with minikv's "
                                           f"it runs {w}"))
        if len(g_plans) != len(w_plans):
            raise CheckFailed(one_line(f"with your fill_budget, {_case_name(c)} took {len(g_plans)} steps; "
                                       f"with minikv's {len(w_plans)}"))
        for i, w in w_tokens.items():
            if g_tokens.get(i) != w:
                raise CheckFailed(one_line(f"with your fill_budget, request {i} of {_case_name(c)} generated "
                                           f"{g_tokens.get(i)}; with minikv's {w}"))
    steps = sum(len(p) for p, _, _ in want)
    preempted = sum(n for _, _, n in want)
    assert preempted > 0, "the small-pool case no longer preempts: make its pool smaller"
    return (f"{sum(len(t) for _, t, _ in want)} requests in {len(want)} engines ({steps} steps, {preempted} preemptions) "
            "match minikv's fill_budget step by step, with the same greedy tokens, with your fill_budget")


@ex51.check("serves LLMEngine('tiny-llama') step by step like minikv's fill_budget", final=True, engine=True)
def _engine(learner: Learner) -> str:
    return expect_engine_runs(learner.get("fill_budget"))

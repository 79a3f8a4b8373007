"""Exercise 5.2, pick a preemption victim and roll it back: the learner's ``preempt`` against minikv's
:func:`~minikv.engine.step_plan.preempt` on hand-made queues, random ones, and chains of preemptions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from minikv.engine.step_plan import Preemption, RequestState
from minikv.engine.step_plan import preempt as ref_preempt
from minikv.grade.checks.ch05.budget import MODULE
from minikv.grade.compare import CheckFailed, call, forall, one_line
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner

ex52 = register(Exercise(
    "5.2", "pick a preemption victim and roll it back", MODULE, ("preempt",),
    hint="the victim is running[-1]; new running = running[:-1]; new waiting = [RequestState(victim.request_id, 0, "
         "victim.num_tokens, ())] + list(waiting); released = list(reversed(victim.block_ids))",
))


def _rows(states: Sequence[RequestState]) -> str:
    return "[" + ", ".join(f"#{s.request_id} {s.num_computed_tokens}/{s.num_tokens} blocks {list(s.block_ids)}"
                           for s in states) + "]"


def _ids(states: Sequence[Any]) -> list[Any]:
    return [getattr(s, "request_id", s) for s in states]


def _diagnose(got: tuple, want: Preemption, running: list[RequestState]) -> str:
    g_run, g_wait, g_released = (list(x) for x in got)
    victim = running[-1]
    if victim.request_id in _ids(g_run):
        gone = [r.request_id for r in running if r.request_id not in _ids(g_run)]
        if gone and gone[0] == running[0].request_id and len(running) > 1:
            return (f"it preempted request {gone[0]}, the oldest (first of running); preempt the newest, "
                    f"request {victim.request_id} (the last), so the oldest keep making progress")
        return f"request {victim.request_id} (the last of running) must be the victim"
    if victim.request_id in _ids(g_wait):
        back = g_wait[_ids(g_wait).index(victim.request_id)]
        if tuple(getattr(back, "block_ids", ())):
            return (f"the victim is back in waiting still holding blocks {list(back.block_ids)}: it gives every "
                    "block back (they stay in the prefix cache, where its next admission finds them)")
        if getattr(back, "num_computed_tokens", 0) != 0:
            return (f"the victim is back in waiting with {back.num_computed_tokens} computed tokens: without its "
                    "blocks their K/V is gone, so it starts again from 0")
        if getattr(back, "num_tokens", None) != victim.num_tokens:
            return (f"the victim has num_tokens {back.num_tokens}, expected {victim.num_tokens}: the tokens it "
                    "generated are kept (and recomputed), not dropped")
        at = _ids(g_wait).index(victim.request_id)
        if at != 0:
            return (f"the victim is at position {at} of waiting, expected at the front (position 0): it was "
                    "admitted before everyone still waiting")
    else:
        return f"request {victim.request_id} (the victim) is in neither queue: it waits to be recomputed"
    if sorted(g_released) == sorted(want.released) and g_released != want.released:
        return "the right blocks in the wrong order: release the victim's table tail first (reversed)"
    return ""


def expect_preempt(fn: Callable[..., Any], running: list[RequestState], waiting: list[RequestState],
                   earlier: str = "") -> Preemption:
    """The learner's ``preempt`` and minikv's on the same queues; CheckFailed naming what differs."""
    desc = f"preempt(running={_rows(running)}, waiting={_rows(waiting)})" + (f" ({earlier})" if earlier else "")
    run_in, wait_in = list(running), list(waiting)
    got = call(fn, run_in, wait_in, context=desc)
    want = ref_preempt(running, waiting)
    if not isinstance(got, tuple) or len(got) != 3:
        raise CheckFailed(one_line(f"{desc} returned {type(got).__name__}, expected Preemption(running, waiting, released)"))
    if run_in != running or wait_in != waiting:
        raise CheckFailed(one_line(f"{desc} changed the lists it was given; return new lists"))
    g_run, g_wait, g_released = got
    if (list(g_run), list(g_wait), list(g_released)) != (want.running, want.waiting, want.released):
        why = _diagnose(got, want, running)
        shown = f"running {_rows(list(g_run))}, waiting {_rows(list(g_wait))}, released {list(g_released)}"
        wanted = f"running {_rows(want.running)}, waiting {_rows(want.waiting)}, released {want.released}"
        text = f"{desc} gave {shown}; expected {wanted}"
        raise CheckFailed(one_line(f"{why[0].upper() + why[1:]}; {text}" if why else text))
    return want


def _states(rows: Sequence[tuple]) -> list[RequestState]:
    return [RequestState(rid, c, n, tuple(b)) for rid, c, n, b in rows]


@ex52.check("the docstring's example")
def _example(learner: Learner) -> None:
    expect_preempt(learner.get("preempt"), _states([(0, 30, 31, (4, 5)), (1, 17, 18, (7, 2))]),
                   _states([(2, 0, 9, ())]))


@ex52.check("the newest running request is the victim")
def _newest(learner: Learner) -> str:
    fn = learner.get("preempt")
    running = _states([(3, 40, 41, (0, 1, 2)), (8, 20, 21, (3, 4)), (5, 6, 30, (5,))])
    expect_preempt(fn, running, [])
    expect_preempt(fn, running[:2], _states([(9, 0, 12, ())]))
    expect_preempt(fn, running[:1], [])
    return "the last of running (the newest admitted) goes; the others keep their order"


@ex52.check("the victim starts over: no blocks, 0 computed, its tokens kept; blocks released tail first")
def _rollback(learner: Learner) -> None:
    fn = learner.get("preempt")
    expect_preempt(fn, _states([(0, 15, 16, (9,)), (1, 47, 48, (2, 6, 4))]), _states([(2, 0, 5, ())]))
    expect_preempt(fn, _states([(1, 33, 35, (11, 3, 8, 1, 0))]), [])


@ex52.check("the victim goes to the front of waiting")
def _front(learner: Learner) -> None:
    fn = learner.get("preempt")
    expect_preempt(fn, _states([(0, 9, 10, (1,)), (1, 9, 10, (2,))]),
                   _states([(5, 0, 20, ()), (6, 0, 3, ()), (7, 0, 8, ())]))


@ex52.check("an empty running list raises ValueError")
def _empty(learner: Learner) -> None:
    fn = learner.get("preempt")
    try:
        got = fn([], _states([(1, 0, 4, ())]))
    except ValueError:
        return
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001 - the wrong error
        raise CheckFailed(f"preempt(running=[], ...) raised {type(exc).__name__}, expected ValueError") from exc
    raise CheckFailed(one_line(f"preempt(running=[], ...) returned {got!r}; raise ValueError: nobody can be preempted"))


@ex52.check("random queues, and preemptions chained until nothing runs, vs minikv's preempt")
def _random(learner: Learner) -> None:
    fn = learner.get("preempt")

    @st.composite
    def queues(d: Any) -> tuple[list[RequestState], list[RequestState]]:
        blocks = iter(d(st.permutations(range(40))))
        running = []
        for rid in range(d(st.integers(1, 6))):
            n = d(st.integers(1, 60))
            computed = d(st.integers(0, n))
            running.append(RequestState(rid, computed, n, tuple(next(blocks) for _ in range(-(-computed // 8)))))
        waiting = [RequestState(50 + i, 0, d(st.integers(1, 30)), ()) for i in range(d(st.integers(0, 4)))]
        return running, waiting

    @forall(queues(), max_examples=60)
    def prop(q: tuple[list[RequestState], list[RequestState]]) -> None:
        running, waiting = q
        k = 0
        while running:
            step = expect_preempt(fn, running, waiting, f"preemption {k + 1} of a chain" if k else "")
            running, waiting, k = step.running, step.waiting, k + 1

    prop()

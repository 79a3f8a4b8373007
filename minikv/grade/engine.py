"""Plug the learner's piece into ``LLM("tiny-llama")`` and compare what it generates with minikv's own.

A chapter describes what the engine serves as a :class:`Workload` (rounds of prompts, one ``generate``
call each, and ``LLM`` options) and registers its end-to-end check with :func:`engine_check`, whose
function returns the learner's :class:`Plug` (see docs/grader.md). The workload runs with the plug and
with minikv's pieces (once per session); the check fails at the first request whose tokens (or, for
prefix caches, cached-token counts) differ, or with what the learner's code raised inside the engine.
Its PASS message reads ``"... match minikv's ..."``; the check is ``final`` and ``engine=True``.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Union

from minikv.errors import InvalidRequestError
from minikv.grade import memo
from minikv.grade.compare import CheckFailed, describe_exception, one_line

if TYPE_CHECKING:
    from minikv.grade.registry import Exercise
    from minikv.grade.runner import Learner

Runs = list[list[tuple[tuple[int, ...], int]]]  # per round, per request: (greedy tokens, num_cached_tokens)
# a prompt: text, token ids, or a function of the rounds so far (a follow-up turn) giving token ids
Prompt = Union[str, tuple[int, ...], Callable[[Runs], list[int]]]


@dataclass(frozen=True)
class Workload:
    """What the engine serves: ``rounds`` of prompts (one ``generate`` call each) with greedy sampling.

    ``name`` keys the reference run (computed once per session); ``options`` are ``LLM(...)``
    arguments besides the plug; ``cached``: also compare ``num_cached_tokens`` (prefix caches);
    ``about``: what a token difference usually means, added to its message.
    """

    name: str
    rounds: tuple[tuple[Prompt, ...], ...]
    max_tokens: int
    options: dict[str, Any] = field(default_factory=dict)
    ignore_eos: bool = False
    cached: bool = False
    about: str = ""

    def run(self, plug: dict[str, Any]) -> tuple[Runs, dict[str, int]]:
        """Greedy (tokens, num_cached_tokens) per request per round, and how often each function plug was called."""
        from minikv import LLM, SamplingParams

        calls = {name: 0 for name, fn in plug.items() if inspect.isfunction(fn)}
        plug = {name: _counted(fn, calls, name) if name in calls else fn for name, fn in plug.items()}
        llm = LLM("tiny-llama", **{"device": "cpu", **self.options}, **plug)
        params = SamplingParams(max_tokens=self.max_tokens, temperature=0.0, ignore_eos=self.ignore_eos)
        runs: Runs = []
        for prompts in self.rounds:
            given = [p if isinstance(p, str) else {"prompt_token_ids": list(p(runs) if callable(p) else p)}
                     for p in prompts]
            outs = llm.generate(given, params)
            runs.append([(tuple(o.token_ids), int(o.num_cached_tokens)) for o in outs])
        return runs, calls

    def reference(self, plug: dict[str, Any]) -> Runs:
        """The run with minikv's own pieces (``plug``), computed once per grading session."""
        return memo.once(f"engine:{self.name}", lambda: self.run(plug)[0])

    def describe(self, r: int, i: int) -> str:
        """``prompt 1 ('hello')`` for a one-round workload, else ``round 2, request 0``."""
        prompt = self.rounds[r][i]
        return f"round {r + 1}, request {i}" if len(self.rounds) > 1 else f"prompt {i}" + (f" ({prompt!r})" * isinstance(prompt, str))


def _counted(fn: Callable[..., Any], calls: dict[str, int], name: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return fn(*args, **kwargs)

    return counted


@dataclass
class Plug:
    """The learner's pieces as ``LLM(...)`` arguments, how to name them (``"your KVCache"``), and a note for PASS."""

    kwargs: dict[str, Any]
    piece: str
    note: str = ""


def _first_difference(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    same = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    if same < min(len(got), len(want)):
        return f"token {same} is {got[same]}, minikv's gives {want[same]} (the first {same} agree)"
    return f"{len(got)} tokens came out, minikv's gives {len(want)} (the first {same} agree)"


def expect_same_run(workload: Workload, plug: Plug, reference: dict[str, Any], ref_name: str = "") -> str:
    """Run ``workload`` with ``plug`` and with ``reference`` (named ``ref_name`` in messages, e.g.
    ``"prefix_cache='hash'"``); CheckFailed at the first request that differs, else the PASS summary."""
    ref_text = f"minikv's {ref_name}".rstrip()
    try:
        want = workload.reference(reference)
    except InvalidRequestError as exc:
        raise CheckFailed(one_line(f"this minikv's engine cannot run {ref_text} yet ({exc}); update minikv")) from None
    try:
        got, calls = workload.run(plug.kwargs)
    except NotImplementedError:
        raise
    except InvalidRequestError as exc:
        raise CheckFailed(one_line(f"LLM('tiny-llama') with {plug.piece} raised: {exc}")) from None
    except Exception as exc:  # noqa: BLE001 - the learner's code raised inside the engine
        raise CheckFailed(one_line(f"LLM('tiny-llama') with {plug.piece}: your code raised {describe_exception(exc)}")) from exc
    unused = [name for name, n in calls.items() if not n]
    assert not unused, f"the engine never called the plugged-in {unused[0]}"
    hits = 0
    for r, (g_round, w_round) in enumerate(zip(got, want)):
        for i, ((g_tokens, g_cached), (w_tokens, w_cached)) in enumerate(zip(g_round, w_round)):
            what = workload.describe(r, i)
            if workload.cached and g_cached != w_cached:
                raise CheckFailed(f"with {plug.piece}, {what} had {g_cached} cached tokens; with {ref_text} it had {w_cached}")
            if g_tokens != w_tokens:
                raise CheckFailed(one_line(f"with {plug.piece}, LLM('tiny-llama') generates differently for {what}: "
                                           f"{_first_difference(g_tokens, w_tokens)}"
                                           + (f" ({workload.about})" if workload.about else "")))
            hits += g_cached
    n = sum(len(r) for r in want)
    if workload.cached:
        assert hits > 0, "the reference run had no cache hits: the workload no longer exercises the cache"
        return (f"{n} requests in {len(want)} rounds match {ref_text}: the same tokens and {hits} cached tokens, "
                f"with {plug.piece}{plug.note}")
    return f"{n} prompts x {workload.max_tokens} greedy tokens match {ref_text}, with {plug.piece}{plug.note}"


def engine_check(exercise: Exercise, name: str, workload: Workload, reference: dict[str, Any],
                 ref_name: str = "") -> Callable[[Callable[[Learner], Plug]], Callable[[Learner], str]]:
    """Decorator: register ``fn(learner) -> Plug`` as ``exercise``'s final engine check over ``workload``."""

    def add(fn: Callable[[Learner], Plug]) -> Callable[[Learner], str]:
        @functools.wraps(fn)
        def check(learner: Learner) -> str:
            return expect_same_run(workload, fn(learner), reference, ref_name)

        exercise.check(name, final=True, engine=True)(check)
        return check

    return add

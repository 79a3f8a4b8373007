"""Exercise 7.2, a stream's latency numbers: the learner's ``percentile`` and ``stream_latency`` against
:func:`minikv.bench.online.percentile` and :func:`minikv.bench.latency.stream_latency` on hand-made and
random chunk times."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from minikv.bench.latency import stream_latency as ref_stream_latency
from minikv.bench.online import percentile as ref_percentile
from minikv.grade.checks.ch07.detok import MODULE
from minikv.grade.compare import CheckFailed, call, forall, one_line, short
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner

ex72 = register(Exercise(
    "7.2", "a stream's latency numbers", MODULE, ("percentile", "stream_latency"),
    hint="percentile: s = sorted(xs); pos = (len(s) - 1) * q / 100; interpolate between s[int(pos)] and the next; "
         "stream_latency: ttft = chunk_times[0] - sent_at, e2e = chunk_times[-1] - sent_at, itl = gaps between "
         "successive chunks, tpot = (e2e - ttft) / (num_tokens - 1) (None below 2 tokens)",
))

TOL = 1e-9


def _close(a: Any, b: float | None) -> bool:
    if b is None:
        return a is None
    if not isinstance(a, (int, float)) or isinstance(a, bool):
        return False
    if math.isnan(b):
        return math.isnan(a)
    return abs(a - b) <= TOL * max(1.0, abs(b))


def expect_percentile(fn: Any, xs: Sequence[float], q: float) -> None:
    given = list(xs)
    desc = f"percentile({short([round(x, 4) for x in xs])}, {q})"
    got = call(fn, given, q, context=desc)
    want = ref_percentile(list(xs), q)
    if given != list(xs):
        raise CheckFailed(one_line(f"{desc} changed the list it was given (sorted it in place?); sort a copy: sorted(xs)"))
    if _close(got, want):
        return
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100 if s else 0
    guesses = []
    if s:
        guesses = [("no interpolation between closest ranks (the value at a rounded rank)",
                    {s[int(pos)], s[min(len(s) - 1, math.ceil(pos))], s[min(len(s) - 1, round(pos))],
                     s[min(len(s) - 1, max(0, math.ceil(len(s) * q / 100) - 1))]}),
                   ("the input's order, not sorted", {_interp(list(xs), pos)})]
    for text, values in guesses:
        if any(_close(got, v) for v in values):
            raise CheckFailed(one_line(f"{desc} returned {got}, expected {want}: looks like {text}; interpolate: "
                                       f"s[lo] + (s[hi] - s[lo]) * (pos - lo) with pos = (n - 1) * q / 100 = {pos:g}"))
    if not s:
        raise CheckFailed(f"{desc} returned {got!r}, expected nan: no data has no percentile")
    raise CheckFailed(one_line(f"{desc} returned {got}, expected {want}"))


def _interp(xs: list[float], pos: float) -> float:
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@ex72.check("percentile: the docstring's examples, nan for no data")
def _percentile_examples(learner: Learner) -> None:
    fn = learner.get("percentile")
    for xs, q in (([4.0, 1.0, 3.0, 2.0], 50), ([1.0, 2.0, 3.0, 4.0], 90), ([5.0], 99), ([], 50),
                  ([3.0, 1.0, 2.0], 0), ([3.0, 1.0, 2.0], 100), ([0.12, 0.05, 0.3, 0.07, 0.09], 99)):
        expect_percentile(fn, xs, q)


@ex72.check("percentile: random samples vs minikv's (linear interpolation, numpy's default)")
def _percentile_random(learner: Learner) -> None:
    fn = learner.get("percentile")

    @forall(st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=30),
            st.sampled_from([50, 90, 99, 25, 75, 33.3]), max_examples=100)
    def prop(xs: list[float], q: float) -> None:
        expect_percentile(fn, xs, q)

    prop()


def _describe(sent_at: float, chunks: Sequence[float], n: int) -> str:
    return f"stream_latency(sent_at={sent_at:g}, chunk_times={short([round(c, 4) for c in chunks])}, num_tokens={n})"


def expect_latency(fn: Any, sent_at: float, chunks: Sequence[float], n: int) -> None:
    desc = _describe(sent_at, chunks, n)
    got = call(fn, sent_at, list(chunks), n, context=desc)
    want = ref_stream_latency(sent_at, list(chunks), n)
    missing = [a for a in ("ttft", "e2e", "tpot", "itl") if not hasattr(got, a)]
    if missing:
        raise CheckFailed(one_line(f"{desc} returned {type(got).__name__} without {missing[0]}: return "
                                   "StreamLatency(ttft, e2e, tpot, itl)"))
    ttft, e2e = want.ttft, want.e2e
    if not _close(got.ttft, ttft):
        raise CheckFailed(one_line(f"{desc}: ttft is {got.ttft}, expected {ttft} (first chunk - sent_at)"))
    if not _close(got.e2e, e2e):
        raise CheckFailed(one_line(f"{desc}: e2e is {got.e2e}, expected {e2e} (last chunk - sent_at)"))
    itl = list(got.itl) if isinstance(got.itl, (list, tuple)) else got.itl
    if not (isinstance(itl, list) and len(itl) == len(want.itl) and all(_close(a, b) for a, b in zip(itl, want.itl))):
        if isinstance(itl, list) and len(itl) == len(want.itl) + 1 and itl and _close(itl[0], ttft):
            raise CheckFailed(one_line(f"{desc}: itl is {short(itl)}, expected {short(want.itl)}: its first gap is "
                                       "the wait for the first chunk, that is the TTFT; inter-token latencies are "
                                       "the gaps between successive chunks"))
        raise CheckFailed(one_line(f"{desc}: itl is {short(itl) if isinstance(itl, list) else itl!r}, "
                                   f"expected {short(want.itl)}"))
    if not _close(got.tpot, want.tpot):
        if want.tpot is None:
            raise CheckFailed(one_line(f"{desc}: tpot is {got.tpot}, expected None: with one output token "
                                       "there is no token after the first"))
        if _close(got.tpot, (e2e - ttft) / n):
            raise CheckFailed(one_line(f"{desc}: tpot is {got.tpot}, expected {want.tpot}: looks like "
                                       "(e2e - ttft) / num_tokens; the first token's time is the TTFT, so the "
                                       "time after it is spread over num_tokens - 1 tokens"))
        if _close(got.tpot, e2e / n):
            raise CheckFailed(one_line(f"{desc}: tpot is {got.tpot}, expected {want.tpot}: looks like "
                                       "e2e / num_tokens, which counts the prefill's wait in every token"))
        raise CheckFailed(one_line(f"{desc}: tpot is {got.tpot}, expected {want.tpot}"))


@ex72.check("stream_latency: the docstring's example, one token, chunks of several tokens")
def _latency_cases(learner: Learner) -> str:
    fn = learner.get("stream_latency")
    expect_latency(fn, 10.0, [10.5, 10.6, 10.8, 11.0], 5)
    expect_latency(fn, 0.0, [0.25], 1)              # one token: no TPOT, no ITL
    expect_latency(fn, 2.0, [2.5, 2.6], 2)
    expect_latency(fn, 1.0, [1.2, 1.3, 1.9], 9)     # 9 tokens in 3 chunks
    return "TTFT, E2E, ITL and TPOT as vLLM's and SGLang's serving benchmarks define them"


@ex72.check("stream_latency: random streams vs minikv's")
def _latency_random(learner: Learner) -> None:
    fn = learner.get("stream_latency")

    @st.composite
    def streams(draw: Any) -> tuple[float, list[float], int]:
        sent = draw(st.floats(0, 100, allow_nan=False))
        gaps = draw(st.lists(st.floats(0.001, 2.0, allow_nan=False), min_size=1, max_size=12))
        times, t = [], sent
        for g in gaps:
            t += g
            times.append(t)
        return sent, times, len(times) + draw(st.integers(0, 5))

    @forall(streams(), max_examples=100)
    def prop(case: tuple[float, list[float], int]) -> None:
        expect_latency(fn, *case)

    prop()

"""Replay requests in real time through an :class:`~minikv.engine.LLMEngine` or transformers' ``generate``.

A replay is a list of prompts (token ids) and their arrival times in
seconds from the start. The clock starts when the replay does; request ``i``
is handed over when ``arrivals[i]`` has come, with that moment as its
``arrival_time``, so its wait in the queue counts in its TTFT.

- :func:`replay_engine`: the engine loop of a server: add what has arrived,
  ``step`` while there is work, sleep until the next arrival otherwise.
  A token's time is when the step that produced it returned.
- :func:`replay_transformers`: the outside baseline, one ``generate`` at a
  time in arrival order (a request that arrives while another runs waits);
  token times come from a streamer, so TTFT and inter-token latency are
  measured the same way.

Both return a :class:`Replay`; :func:`summarize` turns it into the numbers of
a table row (output tokens/s, TTFT and inter-token latency p50/p99, worst
wait, hit rate).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Replay:
    """What happened to each request (lists indexed by request): perf_counter times, tokens, cache hits."""

    start: float
    arrivals: list[float]  # absolute perf_counter times
    admitted: list[float | None]  # when it was first scheduled (its wait ends)
    token_times: list[list[float]]  # one time per output token
    token_ids: list[list[int]]
    prompt_tokens: list[int]
    cached_tokens: list[int]
    steps: int = 0
    preemptions: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def served_order(self) -> list[int]:
        """Requests in the order they were first scheduled."""
        return sorted(range(len(self.arrivals)), key=lambda i: (self.admitted[i] is None, self.admitted[i] or 0.0, i))


def percentile(xs: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; nan for no data."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(r: Replay) -> dict[str, float | int]:
    """Output tokens/s over the whole replay, TTFT and ITL p50/p99 (ms), worst wait (ms), hit rate."""
    ends = [t[-1] for t in r.token_times if t]
    total = sum(len(t) for t in r.token_times)
    duration = (max(ends) - r.start) if ends else 0.0
    ttft = [t[0] - a for t, a in zip(r.token_times, r.arrivals) if t]
    itl = [b - a for t in r.token_times for a, b in zip(t, t[1:])]
    waits = [(d - a) for d, a in zip(r.admitted, r.arrivals) if d is not None]
    prompt = sum(r.prompt_tokens)
    return {
        "requests": len(r.arrivals),
        "output_tokens": total,
        "duration_s": duration,
        "tokens_per_s": total / duration if duration > 0 else 0.0,
        "ttft_p50_ms": 1e3 * percentile(ttft, 50),
        "ttft_p99_ms": 1e3 * percentile(ttft, 99),
        "itl_p50_ms": 1e3 * percentile(itl, 50),
        "itl_p99_ms": 1e3 * percentile(itl, 99),
        "max_wait_ms": 1e3 * max(waits, default=0.0),
        "hit_tokens": sum(r.cached_tokens),
        "prompt_tokens": prompt,
        "hit_rate": sum(r.cached_tokens) / prompt if prompt else 0.0,
        "preemptions": r.preemptions,
        "steps": r.steps,
    }


def _sleep_until(t: float) -> None:
    left = t - time.perf_counter()
    if left > 0:
        time.sleep(left)


def replay_engine(engine: Any, prompts: Sequence[list[int]], arrivals: Sequence[float], params: Any,
                  on_finish: Callable[[], None] | None = None) -> Replay:
    """Drive ``engine`` in real time over ``prompts`` arriving at ``arrivals`` (seconds from now).

    Request ids are the prompts' positions. ``params``: one SamplingParams for all.
    ``on_finish`` is called once per finished request (a progress bar).
    """
    n = len(prompts)
    start = time.perf_counter()
    r = Replay(start, [start + a for a in arrivals], [None] * n, [[] for _ in range(n)], [[] for _ in range(n)],
               [len(p) for p in prompts], [0] * n)
    preempt0 = engine.get_stats().num_preemptions
    nxt = 0
    while nxt < n or engine.has_unfinished_requests():
        now = time.perf_counter()
        while nxt < n and r.arrivals[nxt] <= now:
            engine.add_request(nxt, {"prompt_token_ids": list(prompts[nxt])}, params, arrival_time=r.arrivals[nxt])
            nxt += 1
        if not engine.has_unfinished_requests():
            _sleep_until(r.arrivals[nxt])
            continue
        began = time.perf_counter()
        outs = engine.step()
        ended = time.perf_counter()
        r.steps += 1
        for rid in engine.last_step.scheduled:
            if r.admitted[rid] is None:
                r.admitted[rid] = began
        for o in outs:
            i = o.request_id
            r.token_times[i].extend([ended] * len(o.new_token_ids))
            if o.finished:
                r.token_ids[i] = list(o.token_ids)
                r.cached_tokens[i] = o.num_cached_tokens
                if on_finish is not None:
                    on_finish()
    r.preemptions = engine.get_stats().num_preemptions - preempt0
    return r


class _TimesStreamer:
    """A transformers streamer that only notes when each new token comes (the first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        now = time.perf_counter()
        self.times.extend([now] * max(1, value.numel()))

    def end(self) -> None:
        pass


def replay_transformers(model: Any, prompts: Sequence[list[int]], arrivals: Sequence[float], max_tokens: int,
                        pad_token_id: int, on_finish: Callable[[], None] | None = None) -> Replay:
    """Greedy ``generate`` on each prompt in turn, each starting at ``max(its arrival, previous end)``."""
    n = len(prompts)
    start = time.perf_counter()
    r = Replay(start, [start + a for a in arrivals], [None] * n, [[] for _ in range(n)], [[] for _ in range(n)],
               [len(p) for p in prompts], [0] * n)
    device = next(model.parameters()).device
    for i, p in enumerate(prompts):
        _sleep_until(r.arrivals[i])
        ids = torch.tensor([list(p)], device=device)
        streamer = _TimesStreamer()
        r.admitted[i] = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                 min_new_tokens=max_tokens, do_sample=False, pad_token_id=pad_token_id,
                                 streamer=streamer)
        r.token_ids[i] = out[0, len(p):].tolist()
        r.token_times[i] = streamer.times[: len(r.token_ids[i])]
        r.steps += len(r.token_ids[i])
        if on_finish is not None:
            on_finish()
    return r

"""A streamed request's latency numbers, from the times its chunks arrived (what a benchmark client records).

A client takes ``sent_at`` just before the request goes out and one
``time.perf_counter()`` per Server-Sent Events chunk that carries text.
From those, for one request:

- **TTFT** (time to first token): first text chunk minus ``sent_at``;
- **E2E** (end-to-end latency): last text chunk minus ``sent_at``;
- **ITL** (inter-token latencies): the gaps between successive chunks (a
  chunk that brings several tokens is one gap; the wait for the first chunk
  is TTFT, not an ITL);
- **TPOT** (time per output token after the first): ``(e2e - ttft) / (n - 1)``
  with ``n`` the request's output tokens (``usage.completion_tokens``), ``None``
  below two tokens.

These are the definitions of vLLM's ``benchmarks/benchmark_serving.py`` and
SGLang's ``bench_serving.py``; across requests they are summarized as mean
and p50 / p90 / p99 (:func:`summarize`, percentiles by linear interpolation
between closest ranks, numpy's default).

    >>> lat = stream_latency(10.0, [10.5, 10.6, 10.8, 11.0], num_tokens=5)
    >>> round(lat.ttft, 3), round(lat.e2e, 3), [round(g, 3) for g in lat.itl], round(lat.tpot, 3)
    (0.5, 1.0, [0.1, 0.2, 0.2], 0.125)
    >>> percentile([1.0, 2.0, 3.0, 4.0], 90)
    3.7
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from minikv.bench.online import percentile
from minikv.errors import MinikvError

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class StreamLatency:
    """One request's latencies in seconds (``tpot`` is None below two output tokens)."""

    ttft: float
    e2e: float
    tpot: float | None
    itl: list[float] = field(default_factory=list)


def stream_latency(sent_at: float, chunk_times: Sequence[float], num_tokens: int) -> StreamLatency:
    """The latencies of one streamed request (see the module docstring); ``chunk_times`` in arrival order."""
    if not chunk_times:
        raise MinikvError("a stream with no text chunk has no latency: it never produced a token")
    if num_tokens < len(chunk_times):
        raise MinikvError(f"{len(chunk_times)} text chunks but only {num_tokens} output tokens: "
                          "pass usage.completion_tokens, or the number of chunks")
    ttft = chunk_times[0] - sent_at
    e2e = chunk_times[-1] - sent_at
    itl = [b - a for a, b in zip(chunk_times, chunk_times[1:])]
    tpot = (e2e - ttft) / (num_tokens - 1) if num_tokens > 1 else None
    return StreamLatency(ttft, e2e, tpot, itl)


def distribution(xs: Sequence[float], scale: float = 1e3) -> dict[str, float]:
    """``{mean, p50, p90, p99}`` of ``xs`` times ``scale`` (seconds to ms); nan for no data.

    >>> distribution([0.1, 0.2, 0.3])["p50"]
    200.0
    """
    out = {"mean": scale * sum(xs) / len(xs) if xs else float("nan")}
    out.update({f"p{q}": scale * percentile(xs, q) for q in PERCENTILES})
    return out


def summarize(latencies: Sequence[StreamLatency]) -> dict[str, dict[str, float]]:
    """TTFT, TPOT, ITL (every gap of every request) and E2E of many requests, each :func:`distribution` in ms."""
    return {
        "ttft_ms": distribution([x.ttft for x in latencies]),
        "tpot_ms": distribution([x.tpot for x in latencies if x.tpot is not None]),
        "itl_ms": distribution([g for x in latencies for g in x.itl]),
        "e2e_ms": distribution([x.e2e for x in latencies]),
    }


__all__ = ["PERCENTILES", "StreamLatency", "distribution", "percentile", "stream_latency", "summarize"]

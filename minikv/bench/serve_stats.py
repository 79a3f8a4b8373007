"""The numbers of a server benchmark: percentiles, throughput, cached tokens; a table, JSON and a TTFT plot.

:func:`summarize` turns the :class:`~minikv.bench.serve_client.RequestResult`
of a run into one flat dict (latencies in milliseconds), the same keys as
the JSON's ``summary``:

- ``completed`` / ``failed`` requests, ``duration_s`` (first send to last
  byte), ``request_throughput`` (completed requests / duration) and
  ``output_throughput`` (output tokens of completed requests / duration);
- ``ttft_ms``, ``tpot_ms``, ``itl_ms``, ``e2e_ms``: each ``{mean, p50, p90, p99}``
  over completed requests (ITL over every gap of every request), percentiles
  as :mod:`minikv.bench.latency` takes them;
- ``prompt_tokens``, ``cached_tokens`` and ``cache_hit_rate``
  (cached / prompt tokens): ``None`` when the server reported no cached
  tokens at all ("unknown" in the table, never 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from minikv.bench.latency import PERCENTILES, distribution, percentile
from minikv.bench.serve_client import RequestResult


def summarize(results: Sequence[RequestResult], duration: float | None = None) -> dict[str, Any]:
    """One run's summary (the keys of the module docstring); ``duration`` defaults to first send to last end."""
    ok = [r for r in results if r.ok]
    if duration is None:
        duration = (max(r.end for r in ok) - min(r.start for r in results)) if ok else 0.0
    out_tokens = sum(r.num_output_tokens for r in ok)
    prompt = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    cached = [r.cached_tokens for r in ok if r.cached_tokens is not None]
    prompt_with_cached = sum(r.prompt_tokens or 0 for r in ok if r.cached_tokens is not None)
    return {
        "requests": len(results),
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "duration_s": duration,
        "request_throughput": len(ok) / duration if duration > 0 else 0.0,
        "output_throughput": out_tokens / duration if duration > 0 else 0.0,
        "output_tokens": out_tokens,
        "prompt_tokens": sum(prompt) if prompt else None,
        "cached_tokens": sum(cached) if cached else None,
        "cache_hit_rate": (sum(cached) / prompt_with_cached) if cached and prompt_with_cached else None,
        "ttft_ms": distribution([r.ttft for r in ok if r.ttft is not None]),
        "tpot_ms": distribution([r.tpot for r in ok if r.tpot is not None]),
        "itl_ms": distribution([g for r in ok for g in r.itl]),
        "e2e_ms": distribution([r.e2e for r in ok if r.e2e is not None]),
    }


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "unknown"
    if isinstance(x, float):
        return "-" if math.isnan(x) else f"{x:,.{digits}f}"
    return f"{x:,}"


def format_table(s: dict[str, Any], title: str = "") -> str:
    """The summary as text: counts and throughput, then one row per latency with mean and percentiles."""
    hit = s["cache_hit_rate"]
    lines = [f"== {title} =="] if title else []
    lines += [f"requests              {s['completed']} completed, {s['failed']} failed (of {s['requests']})",
             f"duration              {s['duration_s']:.2f} s",
             f"request throughput    {s['request_throughput']:.2f} req/s",
             f"output throughput     {s['output_throughput']:.1f} tok/s ({s['output_tokens']:,} tokens)",
             f"prompt tokens         {_fmt(s['prompt_tokens'])}",
             f"cached prompt tokens  {_fmt(s['cached_tokens'])}"
             + (f" ({hit:.0%} of the prompt tokens)" if hit is not None else ""),
             ""]
    head = ["latency (ms)", "mean", *(f"p{q}" for q in PERCENTILES)]
    rows = [[name, *(_fmt(s[key][k]) for k in ("mean", *(f"p{q}" for q in PERCENTILES)))]
            for name, key in (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"), ("ITL", "itl_ms"), ("E2E", "e2e_ms"))]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def failure_lines(results: Sequence[RequestResult], limit: int = 3) -> list[str]:
    """The first few failures' reasons, one line each (with how many more)."""
    bad = [r for r in results if not r.ok]
    out = [f"request {r.conversation}.{r.turn} failed: {r.error}" for r in bad[:limit]]
    if len(bad) > limit:
        out.append(f"... and {len(bad) - limit} more failed")
    return out


def plot_ttft(runs: dict[str, Sequence[RequestResult]], path: str) -> None:
    """A PNG of the TTFT distribution of each run (a histogram and the empirical CDF), with matplotlib's Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for label, results in runs.items():
        ttft = sorted(1e3 * r.ttft for r in results if r.ok and r.ttft is not None)
        if not ttft:
            continue
        ax1.hist(ttft, bins=min(30, max(5, len(ttft) // 2)), alpha=0.6, label=label)
        ax2.step(ttft, [(i + 1) / len(ttft) for i in range(len(ttft))], where="post", label=label)
    ax1.set(xlabel="TTFT (ms)", ylabel="requests", title="TTFT histogram")
    ax2.set(xlabel="TTFT (ms)", ylabel="fraction of requests", title="TTFT CDF", ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["PERCENTILES", "distribution", "failure_lines", "format_table", "percentile", "plot_ttft", "summarize"]

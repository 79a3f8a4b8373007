"""When requests arrive: seeded arrival processes for online benchmarks and replays.

An arrival schedule is a list of times in seconds from the start of a run,
one per request, never decreasing; request ``i`` of a trace joins the
engine's waiting queue at time ``arrivals[i]``. The same arguments and seed
always give the same schedule.

- :func:`poisson_arrivals`: a Poisson process at ``rate`` requests per
  second (exponential gaps), or, with ``burstiness != 1``, gamma gaps of the
  same mean (below 1: clumpier than Poisson, above 1: more regular), as
  vLLM's serving benchmark draws them. ``rate=inf`` sends everything at 0.
- :func:`burst_arrivals`: groups of requests at exactly the same moment,
  one group every ``period`` seconds (a cron job, a batch upload).
"""

from __future__ import annotations

import math
import random

from minikv.errors import InvalidRequestError
from minikv.validation import is_int


def _count(n: object) -> int:
    if not is_int(n) or n < 0:
        raise InvalidRequestError(f"n must be a whole number >= 0 (how many requests), got {n!r}")
    return int(n)


def _positive(name: str, value: object, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidRequestError(f"{name} must be a number > 0 (e.g. {example}), got {value!r}")
    return float(value)


def poisson_arrivals(n: int, rate: float, seed: int = 0, burstiness: float = 1.0) -> list[float]:
    """``n`` arrival times at ``rate`` requests per second; the first request arrives at 0.

    Gaps between requests are exponential with mean ``1 / rate`` (a Poisson
    process), or gamma with shape ``burstiness`` and the same mean. The
    clock starts with the first request, so ``arrivals[0] == 0.0`` and the
    expected last arrival is ``(n - 1) / rate``. ``rate=math.inf`` (or
    ``float("inf")``): all ``n`` requests at time 0.

    >>> poisson_arrivals(3, rate=math.inf)
    [0.0, 0.0, 0.0]
    >>> t = poisson_arrivals(2000, rate=4.0, seed=1)
    >>> t[0], all(a <= b for a, b in zip(t, t[1:])), round(t[-1] / 1999, 1)
    (0.0, True, 0.3)
    >>> poisson_arrivals(4, rate=2.0, seed=7) == poisson_arrivals(4, rate=2.0, seed=7)
    True
    """
    n = _count(n)
    rate = _positive("rate", rate, "10.0 requests per second, or math.inf: all at once")
    shape = _positive("burstiness", burstiness, "1.0: Poisson")
    if math.isinf(rate):
        return [0.0] * n
    rng = random.Random(seed)
    t, out = 0.0, []
    for i in range(n):
        if i:
            t += rng.expovariate(rate) if shape == 1.0 else rng.gammavariate(shape, 1.0 / (rate * shape))
        out.append(t)
    return out


def burst_arrivals(n: int, burst_size: int, period: float, start: float = 0.0) -> list[float]:
    """``n`` arrival times in bursts: ``burst_size`` requests at once, a burst every ``period`` s.

    Request ``i`` arrives at ``start + (i // burst_size) * period``; the last
    burst may be smaller.

    >>> burst_arrivals(5, burst_size=2, period=1.5)
    [0.0, 0.0, 1.5, 1.5, 3.0]
    """
    n = _count(n)
    if not is_int(burst_size) or burst_size < 1:
        raise InvalidRequestError(f"burst_size must be a whole number >= 1, got {burst_size!r}")
    period = _positive("period", period, "1.0 seconds between bursts")
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not start >= 0:
        raise InvalidRequestError(f"start must be a number of seconds >= 0, got {start!r}")
    return [float(start) + (i // burst_size) * period for i in range(n)]


__all__ = ["burst_arrivals", "poisson_arrivals"]

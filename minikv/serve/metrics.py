"""Prometheus metrics of the server: vLLM's names under ``minikv:``, so dashboards carry over.

Engine state (read from the engine loop's latest :class:`EngineStats`
snapshot at scrape time, so a scrape never waits for a step):

====================================== ======= =======================================================
``minikv:num_requests_running``        gauge   requests in the running batch
``minikv:num_requests_waiting``        gauge   accepted, not yet running
``minikv:kv_cache_usage_perc``         gauge   KV blocks held by running requests / all (0..1)
``minikv:prefix_cache_queries``        counter prompt tokens looked up in the prefix cache
``minikv:prefix_cache_hits``           counter of those, tokens found cached (in the pool or the CPU tier)
``minikv:external_prefix_cache_hits``  counter of those, tokens copied back from the CPU offload tier
``minikv:num_preemptions``             counter requests preempted (recomputed later)
``minikv:prompt_tokens``               counter prompt tokens of requests that started
====================================== ======= =======================================================

Per request (observed in the engine thread after each step):

========================================= ========= ==========================================
``minikv:generation_tokens``              counter   tokens generated
``minikv:request_success``                counter   ended requests, label ``finished_reason`` (stop,
                                                    length, abort)
``minikv:time_to_first_token_seconds``    histogram arrival to first token
``minikv:inter_token_latency_seconds``    histogram between a request's successive tokens
``minikv:e2e_request_latency_seconds``    histogram arrival to last token
========================================= ========= ==========================================

Counters are exposed with the ``_total`` suffix (``minikv:prefix_cache_hits_total``),
as prometheus_client (and so vLLM) does. Every metric has the label ``model_name``.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from minikv.engine.llm_engine import EngineStats
from minikv.outputs import RequestOutput

PREFIX = "minikv:"
# seconds; a CPU serves a small model in tens of milliseconds per token and seconds per long prefill
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.2, 0.3, 0.4,
               0.5, 0.75, 1.0, 2.5, 5.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0)


class _EngineCollector:
    """Gauges and counters read from the engine's latest stats snapshot at each scrape."""

    def __init__(self, snapshot: Callable[[], EngineStats], model_name: str) -> None:
        self.snapshot, self.model_name = snapshot, model_name

    def collect(self) -> Iterator[Metric]:
        s, labels = self.snapshot(), [self.model_name]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(PREFIX + name, doc, labels=["model_name"])
            g.add_metric(labels, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(PREFIX + name, doc, labels=["model_name"])
            c.add_metric(labels, value)
            return c

        yield gauge("num_requests_running", "Requests in the running batch.", s.num_running)
        yield gauge("num_requests_waiting", "Requests accepted and waiting to run.", s.num_waiting)
        yield gauge("kv_cache_usage_perc", "Fraction of KV blocks held by running requests (0 to 1).", s.kv_usage)
        yield counter("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", s.cache.query_tokens)
        yield counter("prefix_cache_hits", "Prompt tokens found in the prefix cache.", s.cache.hit_tokens)
        yield counter("external_prefix_cache_hits", "Prompt tokens found in the CPU offload tier (copied back).",
                      getattr(s.cache, "offload_hit_tokens", 0))
        yield counter("num_preemptions", "Requests preempted (their KV freed, recomputed later).", s.num_preemptions)
        yield counter("prompt_tokens", "Prompt tokens of the requests that started.", s.num_prompt_tokens)


class ServerMetrics:
    """One registry per server (several servers in one process do not mix); ``render`` is the /metrics body."""

    def __init__(self, snapshot: Callable[[], EngineStats], model_name: str) -> None:
        self.registry = CollectorRegistry()
        self.model_name = model_name
        self.registry.register(_EngineCollector(snapshot, model_name))
        reg, lab = self.registry, ["model_name"]
        self.generation_tokens = Counter(PREFIX + "generation_tokens", "Tokens generated.", lab, registry=reg)
        self.request_success = Counter(PREFIX + "request_success", "Finished requests by finish reason.",
                                       lab + ["finished_reason"], registry=reg)
        self.ttft = Histogram(PREFIX + "time_to_first_token_seconds", "Time from arrival to the first token.",
                              lab, buckets=TTFT_BUCKETS, registry=reg)
        self.itl = Histogram(PREFIX + "inter_token_latency_seconds", "Time between a request's successive tokens.",
                             lab, buckets=ITL_BUCKETS, registry=reg)
        self.e2e = Histogram(PREFIX + "e2e_request_latency_seconds", "Time from arrival to the last token.",
                             lab, buckets=E2E_BUCKETS, registry=reg)
        self._last_token_time: dict[object, float] = {}

    def observe(self, outputs: list[RequestOutput], now: float) -> None:
        """Record one step's outputs (called in the engine thread)."""
        name = self.model_name
        for out in outputs:
            rid, n = out.request_id, len(out.new_token_ids)
            if n:
                self.generation_tokens.labels(name).inc(n)
                last = self._last_token_time.get(rid)
                if last is None:
                    if out.metrics.ttft is not None:
                        self.ttft.labels(name).observe(out.metrics.ttft)
                else:
                    gap = (now - last) / n
                    for _ in range(n):
                        self.itl.labels(name).observe(gap)
                self._last_token_time[rid] = now
            if out.finished:
                self._last_token_time.pop(rid, None)
                self.request_success.labels(name, out.finish_reason or "stop").inc()
                if out.finish_reason != "abort" and out.metrics.e2e is not None:
                    self.e2e.labels(name).observe(out.metrics.e2e)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""minikv.bench.latency (a stream's TTFT / TPOT / ITL / E2E) and minikv.bench.scrape (hit rate between scrapes)."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, generate_latest

import minikv.bench.latency as latency
import minikv.bench.scrape as scrape
from minikv.bench.latency import StreamLatency, distribution, percentile, stream_latency, summarize
from minikv.bench.scrape import counter_totals, hit_rate_between
from minikv.errors import MinikvError


@pytest.mark.parametrize("module", [latency, scrape], ids=lambda m: m.__name__)
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_stream_latency_definitions() -> None:
    lat = stream_latency(1.0, [1.4, 1.5, 1.9], num_tokens=7)   # 7 tokens in 3 chunks
    assert lat.ttft == pytest.approx(0.4) and lat.e2e == pytest.approx(0.9)
    assert lat.itl == pytest.approx([0.1, 0.4])               # the wait for the first chunk is not an ITL
    assert lat.tpot == pytest.approx(0.5 / 6)                 # after the first token: n - 1
    one = stream_latency(0.0, [0.3], 1)
    assert one.tpot is None and one.itl == [] and one.ttft == one.e2e == pytest.approx(0.3)


def test_stream_latency_refuses_what_it_cannot_measure() -> None:
    with pytest.raises(MinikvError, match="no text chunk"):
        stream_latency(0.0, [], 3)
    with pytest.raises(MinikvError, match="completion_tokens"):
        stream_latency(0.0, [0.1, 0.2, 0.3], 2)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40), st.floats(0, 100))
def test_percentile_is_numpys_linear(xs, q) -> None:
    assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), abs=1e-9, rel=1e-9)


def test_summarize_pools_every_gap() -> None:
    a, b = stream_latency(0.0, [0.1, 0.2], 2), stream_latency(0.0, [0.5], 1)
    s = summarize([a, b])
    assert s["ttft_ms"]["p50"] == pytest.approx(300.0)
    assert s["itl_ms"]["mean"] == pytest.approx(100.0)        # one gap in all: b has none
    assert s["tpot_ms"]["p99"] == pytest.approx(100.0)        # b has no TPOT
    assert math.isnan(distribution([])["mean"]) and isinstance(a, StreamLatency)


def _server_like(hits: float, queries: float) -> str:
    """What prometheus_client writes for two labelled counters (with their _created samples)."""
    reg = CollectorRegistry()
    h = Counter("minikv:prefix_cache_hits", "hits", ["model_name"], registry=reg)
    q = Counter("minikv:prefix_cache_queries", "queries", ["model_name"], registry=reg)
    for model, share in (("a", 0.25), ("b", 0.75)):
        h.labels(model).inc(hits * share)
        q.labels(model).inc(queries * share)
    return generate_latest(reg).decode()


def test_hit_rate_between_takes_deltas_summed_over_labels() -> None:
    before, after = _server_like(100, 400), _server_like(250, 600)
    assert counter_totals(after)["minikv:prefix_cache_hits_total"] == pytest.approx(250)
    assert hit_rate_between(before, after) == pytest.approx(150 / 200)
    assert hit_rate_between(after, after) == 0.0              # nothing queried in between
    assert hit_rate_between(before, after, prefix="vllm:") == 0.0


def test_hit_rate_between_real_server_scrapes() -> None:
    import httpx

    from minikv.serve import ServerThread

    system = "A shared system prompt that every request starts with. " * 2
    with ServerThread("tiny-llama", prefix_cache="radix", device="cpu", block_size=8, num_blocks=64) as srv:
        def ask(prompt: str) -> int:
            r = httpx.post(srv.base_url + "/completions", timeout=60,
                           json={"model": srv.model_name, "prompt": prompt, "max_tokens": 1})
            return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

        ask(system + "first")
        before = httpx.get(srv.url + "/metrics").text
        hits = ask(system + "second")
        after = httpx.get(srv.url + "/metrics").text
        stats = httpx.get(srv.url + "/stats").json()
    prompt = len((system + "second").encode())                # tiny-llama: one token per byte
    assert hits > 0 and hit_rate_between(before, after) == pytest.approx(hits / prompt)
    assert hit_rate_between(before, after) > stats["cache"]["hit_rate"]   # the run's rate, not since start

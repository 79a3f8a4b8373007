"""``minikv bench serve``: its arithmetic, its workloads, its SSE reading, and the client against a real server."""

from __future__ import annotations

import asyncio
import json
import math
import random

import httpx
import numpy as np
import pytest

from minikv.bench.serve_client import (
    RequestResult,
    build_payload,
    list_models,
    read_usage,
    send_request,
    server_root,
)
from minikv.bench.serve_stats import distribution, format_table, percentile, summarize
from minikv.errors import EndpointError, EndpointUnreachableError, InvalidRequestError
from minikv.workloads.serve_traces import WORKLOADS, Conversation, make_workload, num_requests, render_prompt


# ---- arithmetic ---------------------------------------------------------------------------------------------
def test_percentile_matches_numpy_linear() -> None:
    rng = random.Random(3)
    for n in (1, 2, 5, 17, 100):
        xs = [rng.uniform(0, 10) for _ in range(n)]
        for q in (0, 50, 90, 99, 100):
            assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert math.isnan(percentile([], 50))


def test_tpot_is_decode_time_over_tokens_after_the_first() -> None:
    r = RequestResult(0, 0, ok=True, start=10.0, end=11.0, chunk_times=[10.2, 10.6, 11.0], completion_tokens=5)
    assert r.ttft == pytest.approx(0.2)
    assert r.e2e == pytest.approx(1.0)
    assert r.tpot == pytest.approx(0.8 / 4)  # the server's token count, not the 3 chunks
    assert r.itl == pytest.approx([0.4, 0.4])
    r.completion_tokens = None  # no usage: one token per text chunk
    assert r.num_output_tokens == 3 and r.tpot == pytest.approx(0.4)
    one = RequestResult(0, 0, ok=True, start=0.0, end=0.3, chunk_times=[0.3], completion_tokens=1)
    assert one.tpot is None and one.ttft == pytest.approx(0.3) and one.itl == []
    failed = RequestResult(0, 1, ok=False, start=1.0, chunk_times=[1.1], completion_tokens=3)
    assert failed.ttft is None and failed.tpot is None and failed.num_output_tokens == 0


def test_cached_tokens_absent_is_unknown_not_zero() -> None:
    r = RequestResult(0, 0)
    read_usage(r, {"prompt_tokens": 40, "completion_tokens": 4})
    assert (r.prompt_tokens, r.completion_tokens, r.cached_tokens) == (40, 4, None)
    read_usage(r, {"prompt_tokens": 40, "completion_tokens": 4, "prompt_tokens_details": None})
    assert r.cached_tokens is None
    read_usage(r, {"prompt_tokens": 40, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 0}})
    assert r.cached_tokens == 0


def _done(i: int, start: float, ttft: float, n: int, gap: float, cached: int | None) -> RequestResult:
    times = [start + ttft + k * gap for k in range(n)]
    return RequestResult(i, 0, ok=True, start=start, end=times[-1], chunk_times=times, prompt_tokens=100,
                         completion_tokens=n, cached_tokens=cached)


def test_summary_counts_failures_and_throughput() -> None:
    rs = [_done(0, 0.0, 0.1, 5, 0.1, 64), _done(1, 0.0, 0.3, 5, 0.1, 0), RequestResult(2, 0, error="HTTP 500: x")]
    s = summarize(rs, duration=2.0)
    assert (s["completed"], s["failed"], s["output_tokens"]) == (2, 1, 10)
    assert s["request_throughput"] == pytest.approx(1.0) and s["output_throughput"] == pytest.approx(5.0)
    assert s["ttft_ms"]["p50"] == pytest.approx(200.0) and s["ttft_ms"]["mean"] == pytest.approx(200.0)
    assert s["tpot_ms"]["p99"] == pytest.approx(100.0) and s["itl_ms"]["p50"] == pytest.approx(100.0)
    assert (s["prompt_tokens"], s["cached_tokens"], s["cache_hit_rate"]) == (200, 64, pytest.approx(0.32))
    assert "1 failed" in format_table(s)
    unknown = summarize([_done(0, 0.0, 0.1, 3, 0.1, None)])
    assert unknown["cached_tokens"] is None and unknown["cache_hit_rate"] is None
    assert "cached prompt tokens  unknown" in format_table(unknown)
    assert math.isnan(distribution([])["p50"])


# ---- workloads ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(WORKLOADS))
def test_workloads_are_deterministic_and_sized(name: str) -> None:
    w = make_workload(name, num_requests=10, seed=4)
    assert num_requests(w) == 10
    assert w == make_workload(name, num_requests=10, seed=4)
    assert w != make_workload(name, num_requests=10, seed=5)
    assert all(c.max_tokens == 32 for c in w)
    assert all(c.max_tokens == 7 for c in make_workload(name, num_requests=3, max_tokens=7))


def _words(text: str) -> int:
    return len(text.split())


def test_system_prompt_workload_shares_one_system_prompt() -> None:
    w = make_workload("system-prompt", num_requests=12, shared_len=300, unique_len=10)
    assert len({c.system for c in w}) == 1 and _words(w[0].system) > 300
    assert len({c.turns for c in w}) == 12 and all(len(c.turns) == 1 and _words(c.turns[0]) == 12 for c in w)


def test_prefix_repetition_has_vllm_shape() -> None:
    w = make_workload("prefix-repetition", num_requests=12, groups=3, shared_len=40, unique_len=8, seed=2)
    prefixes = {" ".join(c.turns[0].split()[:40]) for c in w}
    assert len(prefixes) == 3 and all(_words(c.turns[0]) == 48 and c.system is None for c in w)
    assert sorted(c.group for c in w) == sorted([0, 1, 2] * 4)
    assert [c.group for c in w] != sorted(c.group for c in w)  # shuffled, as vLLM does
    assert len({c.turns[0] for c in w}) == 12


def test_generated_shared_prefix_has_sglang_shape() -> None:
    w = make_workload("generated-shared-prefix", num_requests=8, groups=2, shared_len=30, unique_len=5)
    systems = {c.turns[0].split("\n\n")[0] for c in w}
    assert len(systems) == 2 and all(len(c.turns[0].split("\n\n")) == 2 for c in w)
    assert all(_words(c.turns[0].split("\n\n")[1]) == 5 for c in w)


def test_few_shot_workload_shares_preambles() -> None:
    w = make_workload("few-shot", num_requests=6, groups=2, shots=3)
    heads = {c.turns[0].rsplit("Q: ", 1)[0] for c in w}
    assert len(heads) == 2 and all(h.count("Q: ") == 3 for h in heads)


def test_multi_turn_sends_the_previous_answers() -> None:
    w = make_workload("multi-turn", num_requests=10, turns=4, seed=1)
    assert [len(c.turns) for c in w] == [4, 4, 2]
    c = w[0]
    msgs = c.messages(2, ["first answer", "second answer"])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in msgs if m["role"] == "assistant"] == ["first answer", "second answer"]
    assert msgs[-1]["content"] == c.turns[2]
    prompt = render_prompt(msgs)
    assert prompt.endswith("Assistant:") and "Assistant: second answer" in prompt
    assert render_prompt(c.messages(1, ["first answer"])) in prompt.replace(
        "Assistant: second answer", "Assistant:", 1)  # each turn's prompt extends the one before
    with pytest.raises(Exception, match="needs the answers"):
        c.messages(2, ["only one"])
    assert len(make_workload("multi-turn", groups=3, turns=2)) == 3


def test_workload_errors_say_what_to_do() -> None:
    with pytest.raises(InvalidRequestError, match="unknown workload"):
        make_workload("sharegpt")
    with pytest.raises(Exception, match="groups must be a whole number >= 1"):
        make_workload("prefix-repetition", groups=0)


# ---- the HTTP side, against httpx's mock transport ----------------------------------------------------------
def _sse(events: list[object], done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + (["data: [DONE]\n\n"] if done else [])
    return "".join(lines).encode()


def _send(handler, endpoint: str = "completions") -> RequestResult:
    async def go() -> RequestResult:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            body = build_payload(endpoint, "m", [{"role": "user", "content": "hi"}], 3)
            return await send_request(client, "http://test/v1/x", endpoint, body, RequestResult(0, 0))
    return asyncio.run(go())


def test_stream_is_read_with_usage_and_role_only_chunk_not_timed() -> None:
    events = [{"choices": [{"delta": {"role": "assistant", "content": ""}}]},
              {"choices": [{"delta": {"content": "Hel"}}]}, {"choices": [{"delta": {"content": "lo"}}]},
              {"choices": [{"delta": {}, "finish_reason": "length"}]},
              {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                        "prompt_tokens_details": {"cached_tokens": 8}}}]
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        return httpx.Response(200, content=_sse(events), headers={"content-type": "text/event-stream"})

    r = _send(handler, "chat")
    assert r.ok and r.text == "Hello" and len(r.chunk_times) == 2 and r.finish_reason == "length"
    assert (r.prompt_tokens, r.completion_tokens, r.cached_tokens) == (9, 3, 8)
    assert seen["stream"] is True and seen["stream_options"] == {"include_usage": True}
    assert seen["messages"] == [{"role": "user", "content": "hi"}] and "prompt" not in seen


def test_failures_are_results_not_exceptions() -> None:
    r = _send(lambda req: httpx.Response(500, json={"error": {"message": "engine died"}}))
    assert not r.ok and "HTTP 500" in r.error and "engine died" in r.error
    r = _send(lambda req: httpx.Response(200, content=_sse([{"choices": [{"text": "a"}]}], done=False)))
    assert not r.ok and "before data: [DONE]" in r.error
    r = _send(lambda req: httpx.Response(200, content=_sse([{"error": {"message": "queue full"}}])))
    assert not r.ok and "queue full" in r.error

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)
    r = _send(refuse)
    assert not r.ok and "ConnectError" in r.error


def test_unreachable_server_is_a_clear_error() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EndpointUnreachableError, match=f"127.0.0.1:{port}/v1/models.*minikv serve"):
        list_models(f"http://127.0.0.1:{port}/v1")
    from minikv.cli import main

    assert main(["bench", "serve", "--base-url", f"http://127.0.0.1:{port}", "--no-progress"]) == 2
    assert server_root("http://h:1/v1/") == "http://h:1"
    with pytest.raises(EndpointError, match="http://"):
        server_root("localhost:8000")


def test_completions_payload_is_one_text() -> None:
    c = Conversation("Be brief.", ("Hi",), max_tokens=5)
    body = build_payload("completions", "m", c.messages(0, []), 5, ignore_eos=True)
    assert body["prompt"] == "System: Be brief.\n\nUser: Hi\n\nAssistant:" and body["ignore_eos"] is True
    assert "seed" not in body and body["temperature"] == 0.0


@pytest.mark.parametrize("name", ["minikv.bench.serve_client", "minikv.workloads.serve_traces"])
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


# ---- against a real minikv server (tiny model, loopback, a free port) ----------------------------------------
TINY = dict(shared_len=20, unique_len=4, max_tokens=4)


@pytest.fixture(scope="module")
def server():
    from minikv.serve import ServerThread

    with ServerThread("tiny-llama", prefix_cache="radix", device="cpu") as srv:
        yield srv


def test_cli_table_and_json_against_the_server(server, tmp_path, capsys) -> None:
    from minikv.cli import main

    path = tmp_path / "run.json"
    argv = ["bench", "serve", "--base-url", server.base_url, "--workload", "system-prompt", "--num-requests", "6",
            "--concurrency", "2", "--shared-len", "20", "--unique-len", "4", "--max-tokens", "4", "--ignore-eos",
            "--no-progress", "--json", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "6 completed, 0 failed" in out and "TTFT" in out and "TPOT" in out
    rec = json.loads(path.read_text())
    assert rec["command"].startswith("minikv bench serve --base-url") and rec["model"] == server.model_name
    assert set(rec["versions"]) == {"minikv", "python", "httpx"} and rec["base_url"] == server.url
    assert rec["summary"]["output_tokens"] == 24 and len(rec["requests"]) == 6
    assert all(r["ok"] and r["completion_tokens"] == 4 and r["ttft"] > 0 for r in rec["requests"])
    # the radix cache serves the shared system prompt: the server reports hits
    assert rec["summary"]["cached_tokens"] > 0
    assert sum(r["cached_tokens"] > 0 for r in rec["requests"]) >= 4


def test_multi_turn_sends_the_servers_real_answers(server) -> None:
    from minikv.bench.serve import run_benchmark

    run = run_benchmark(server.url, "multi-turn", groups=2, turns=3, concurrency=2, ignore_eos=True, progress=False,
                        seed=3, **TINY)
    assert run.summary["completed"] == 6
    conversations = make_workload("multi-turn", groups=2, turns=3, seed=3, **TINY)
    for i, conv in enumerate(conversations):
        mine = [r for r in run.results if r.conversation == i]
        answers = [r.text for r in mine]
        assert all(answers)
        for k, r in enumerate(mine):
            sent = server.engine.parts.encode_messages(conv.messages(k, answers[:k]))
            assert r.prompt_tokens == len(sent), "the server must have seen exactly the earlier real answers"
        assert mine[2].prompt_tokens > mine[1].prompt_tokens + mine[1].completion_tokens


def test_completions_endpoint_and_a_failing_request_does_not_stop_the_run(server) -> None:
    from minikv.bench.serve import run_benchmark

    ok = Conversation(None, ("Once upon a time",), max_tokens=3)
    too_long = Conversation(None, ("word " * 5000,), max_tokens=3)  # past the model's 1,024 positions: HTTP 400
    run = run_benchmark(server.url, [ok, too_long, ok], endpoint="completions", progress=False, ignore_eos=True)
    s = run.summary
    assert (s["completed"], s["failed"]) == (2, 1) and s["output_tokens"] == 6
    assert "HTTP 400" in run.results[1].error
    with pytest.raises(EndpointError, match="does not serve model 'nope'"):
        run_benchmark(server.url, [ok], model="nope", progress=False)


def test_demo_serve_prints_ttft_side_by_side(capsys) -> None:
    from minikv.cli import main

    assert main(["demo", "--serve", "--model", "tiny-llama", "--device", "cpu", "--num-requests", "3",
                 "--concurrency", "1", "--shared-len", "20", "--max-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert "--prefix-cache none" in out and "--prefix-cache radix" in out
    line = next(l for l in out.splitlines() if l.strip().startswith("p50"))
    assert line.strip().endswith("x")
    assert "cached prompt tokens: none 0, radix" in out


def test_serve_overhead_runs_the_same_requests_both_ways(tmp_path, capsys) -> None:
    from minikv.bench import main as bench_main

    path = tmp_path / "overhead.json"
    assert bench_main(["serve-overhead", "--model", "tiny-llama", "--device", "cpu", "--num-requests", "4",
                       "--concurrency", "2", "--max-tokens", "3", "--repeats", "1", "--shared-len", "10",
                       "--unique-len", "3", "--prefix-cache", "radix", "--json", str(path)]) == 0
    assert "served / offline:" in capsys.readouterr().out
    rec = json.loads(path.read_text())
    assert rec["runs"]["offline"][0]["tokens"] == rec["runs"]["served"][0]["tokens"] == 12
    assert rec["ratio"] == pytest.approx(rec["served_tokens_per_s"] / rec["offline_tokens_per_s"])


def test_run_benchmark_works_inside_a_running_event_loop(server) -> None:
    """A Jupyter kernel already runs an asyncio loop in the main thread; the client must still work there."""
    from minikv.bench.serve import run_benchmark

    async def notebook_cell():
        return run_benchmark(server.url, "prefix-repetition", num_requests=2, groups=1, progress=False, **TINY)

    run = asyncio.run(notebook_cell())
    assert run.summary["completed"] == 2 and run.model == server.model_name

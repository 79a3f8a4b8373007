"""The OpenAI-compatible server on a tiny model, through the official openai client and raw HTTP.

Every server here listens on 127.0.0.1 on a free port and is stopped by the
fixture or test that started it.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from minikv import LLM, SamplingParams
from minikv.serve import ServerThread

MODEL = "tiny-llama"
SHARED = "You are a careful assistant. Answer in one short sentence, please. " * 3


@pytest.fixture(scope="module")
def srv():
    with ServerThread(MODEL, prefix_cache="radix", seed=0) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0)


def wait_idle(srv: ServerThread, timeout: float = 20.0) -> dict:
    """The server's /stats once nothing runs or waits (every block given back), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        stats = httpx.get(srv.url + "/stats").json()
        if stats["num_running"] == 0 and stats["num_waiting"] == 0 and stats["num_blocks_held"] == 0:
            return stats
        assert time.monotonic() < deadline, f"the server never became idle: {stats}"
        time.sleep(0.05)


def metric_values(srv: ServerThread) -> dict[tuple[str, tuple], float]:
    text = httpx.get(srv.url + "/metrics").text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_models_and_health(srv, client):
    assert httpx.get(srv.url + "/health").status_code == 200
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_completion_matches_offline_generate(srv, client):
    prompt = SHARED + "What is a KV cache?"
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0)
    offline = LLM(MODEL, seed=0).generate(prompt, SamplingParams(max_tokens=12, temperature=0))[0]
    assert r.choices[0].text == offline.text
    assert r.choices[0].finish_reason == offline.finish_reason
    assert r.usage.prompt_tokens == len(offline.prompt_token_ids)
    assert r.usage.completion_tokens == len(offline.token_ids)
    assert r.object == "text_completion" and r.model == MODEL


def test_streamed_completion_equals_whole(srv, client):
    prompt = SHARED + "Stream this."
    whole = client.completions.create(model=MODEL, prompt=prompt, max_tokens=20, temperature=0)
    stream = client.completions.create(model=MODEL, prompt=prompt, max_tokens=20, temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
        else:
            usage = chunk.usage
    assert "".join(pieces) == whole.choices[0].text
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_chat_streaming_and_not(srv, client):
    messages = [{"role": "system", "content": SHARED}, {"role": "user", "content": "Hello!"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0,
                                            stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    # the chat template's rendering: the same prompt through /v1/completions gives the same answer
    tok = srv.engine.tokenizer
    ids = tok.encode(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)
    r = client.completions.create(model=MODEL, prompt=ids, max_tokens=10, temperature=0)
    assert r.choices[0].text == whole.choices[0].message.content
    assert whole.usage.prompt_tokens == len(ids)


def test_cached_tokens_and_salts(srv, client):
    base = SHARED * 2 + "Tell me about salts."
    first = client.completions.create(model=MODEL, prompt=base + " One.", max_tokens=2, temperature=0,
                                      extra_body={"cache_salt": "tenant-a"})
    again = client.completions.create(model=MODEL, prompt=base + " Two.", max_tokens=2, temperature=0,
                                      extra_body={"cache_salt": "tenant-a"})
    other = client.completions.create(model=MODEL, prompt=base + " Three.", max_tokens=2, temperature=0,
                                      extra_body={"cache_salt": "tenant-b"})
    block = srv.engine.parts.block_size
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert again.usage.prompt_tokens_details.cached_tokens >= (len(base) // block - 1) * block
    assert other.usage.prompt_tokens_details.cached_tokens == 0


def test_stop_strings(srv, client):
    prompt = SHARED + "Count."
    free = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0).choices[0].text
    stop = free[5:8]
    assert len(free) > 8 and stop
    cut = free[:free.index(stop)]
    whole = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0, stop=[stop])
    assert whole.choices[0].text == cut
    assert whole.choices[0].finish_reason == "stop"
    stream = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0, stop=stop,
                                       stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == cut
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (json.dumps({"model": MODEL}).encode(), 400, "prompt"),
    (json.dumps({"model": MODEL, "prompt": "hi", "max_tokens": "3"}).encode(), 400, "max_tokens"),
    (json.dumps({"model": MODEL, "prompt": "hi", "max_tokens": 0}).encode(), 400, None),
    (json.dumps({"model": MODEL, "prompt": "hi", "temperature": -1}).encode(), 400, None),
    (json.dumps({"model": MODEL, "prompt": "hi", "n": 2}).encode(), 400, None),
    (json.dumps({"model": MODEL, "prompt": "hi", "logprobs": 3}).encode(), 400, None),
    (json.dumps({"model": MODEL, "prompt": "x" * 5000}).encode(), 400, None),
    (json.dumps({"model": MODEL, "prompt": [1, 2, 99999]}).encode(), 400, None),
    (json.dumps({"model": MODEL, "prompt": ["a", "b"]}).encode(), 400, None),
    (json.dumps({"model": "gpt-17", "prompt": "hi"}).encode(), 404, "model"),
])
def test_bad_completion_requests(srv, body, status, param):
    r = httpx.post(srv.base_url + "/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if param is not None:
        assert err["param"] == param
    # still serving, with nothing left allocated
    ok = httpx.post(srv.base_url + "/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2})
    assert ok.status_code == 200
    wait_idle(srv)


@pytest.mark.parametrize("body", [b"[1, 2]", b"null", b"3", b'"text"'])
def test_a_body_that_is_not_an_object_says_so(srv, body):
    for path in ("/completions", "/chat/completions"):
        r = httpx.post(srv.base_url + path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["message"].startswith("the request body must be a JSON object"), err
        assert err["param"] is None


@pytest.mark.parametrize("extra", [{"top_p": 1e-300}, {"temperature": 1e-300}, {"temperature": 1e-40, "top_k": 3}])
def test_extreme_sampling_values_are_served_without_a_step_error(srv, extra):
    # these once failed the engine step (an invalid distribution for torch.multinomial): a 500 for this
    # request and every other one in flight
    errors = httpx.get(srv.url + "/stats").json()["num_step_errors"]
    r = httpx.post(srv.base_url + "/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 3,
                                                        "ignore_eos": True, **extra})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 3
    assert httpx.get(srv.url + "/stats").json()["num_step_errors"] == errors
    wait_idle(srv)


@pytest.mark.parametrize("messages", [[], [{"role": "wizard", "content": "hi"}], [{"content": "hi"}], "hi"])
def test_bad_chat_requests(srv, messages):
    r = httpx.post(srv.base_url + "/chat/completions", json={"model": MODEL, "messages": messages})
    assert r.status_code == 400, r.text
    assert "messages" in r.json()["error"]["message"]


def test_unknown_route_is_an_openai_error(srv):
    r = httpx.get(srv.url + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_openai_client_raises_on_bad_request(client):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=-1)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="hi")


def test_64_concurrent_streams_match_offline(srv):
    prompts = [SHARED + f"Question number {i}: " + "why? " * (i % 5) for i in range(64)]
    params = SamplingParams(max_tokens=8, temperature=0)
    offline = [o.text for o in LLM(MODEL, prefix_cache="radix", seed=0).generate(prompts, params)]

    async def one(client: openai.AsyncOpenAI, prompt: str) -> str:
        stream = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0,
                                                 stream=True)
        return "".join([c.choices[0].text async for c in stream])

    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="unused", max_retries=0) as client:
            return await asyncio.gather(*(one(client, p) for p in prompts))

    assert asyncio.run(main()) == offline
    wait_idle(srv)


def test_client_dropping_mid_stream_frees_its_blocks(srv):
    before = metric_values(srv)
    aborted = ("minikv:request_success_total", (("finished_reason", "abort"), ("model_name", MODEL)))
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", srv.base_url + "/completions",
                         json={"model": MODEL, "prompt": SHARED + "Go on and on.", "max_tokens": 400,
                               "ignore_eos": True, "stream": True}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: ") for line in got)
            held = httpx.get(srv.url + "/stats").json()["num_blocks_held"]
            assert held > 0
        # leaving the block closes the connection mid-stream
    stats = wait_idle(srv)
    assert stats["num_blocks_held"] == 0
    assert stats["cache"]["num_used"] == 0
    after = metric_values(srv)
    assert after.get(aborted, 0) == before.get(aborted, 0) + 1


def test_metrics_parse_and_move(srv, client):
    client.completions.create(model=MODEL, prompt=SHARED + "metrics", max_tokens=1)  # cached for the next one
    before = metric_values(srv)
    client.completions.create(model=MODEL, prompt=SHARED + "metrics", max_tokens=4, temperature=0,
                              extra_body={"ignore_eos": True})
    after = metric_values(srv)
    lab = (("model_name", MODEL),)
    for name in ("minikv:prefix_cache_queries_total", "minikv:prompt_tokens_total",
                 "minikv:generation_tokens_total", "minikv:time_to_first_token_seconds_count",
                 "minikv:e2e_request_latency_seconds_count", "minikv:inter_token_latency_seconds_count"):
        assert after[(name, lab)] > before.get((name, lab), 0), name
    assert after[("minikv:generation_tokens_total", lab)] - before.get(("minikv:generation_tokens_total", lab), 0) == 4
    assert after[("minikv:prefix_cache_hits_total", lab)] > before.get(("minikv:prefix_cache_hits_total", lab), 0)
    for name in ("minikv:num_requests_running", "minikv:num_requests_waiting", "minikv:kv_cache_usage_perc",
                 "minikv:num_preemptions_total"):
        assert (name, lab) in after, name
    stop = ("minikv:request_success_total", (("finished_reason", "length"), ("model_name", MODEL)))
    assert after[stop] == before.get(stop, 0) + 1


def test_cpu_tier_hits_are_counted_in_metrics():
    with ServerThread(MODEL, prefix_cache="hash", num_blocks=16, cpu_offload_blocks=64) as s:
        a = {"prompt_token_ids": list(range(10, 10 + 130))}  # 8 full blocks of 16
        b = {"prompt_token_ids": list(range(140, 140 + 170))}  # 11 more: A's blocks are evicted to the tier
        for prompt in (a, b):
            r = httpx.post(s.base_url + "/completions", json={"model": MODEL, "prompt": prompt["prompt_token_ids"],
                                                            "max_tokens": 2})
            assert r.status_code == 200, r.text
        again = httpx.post(s.base_url + "/completions", json={"model": MODEL, "prompt": a["prompt_token_ids"],
                                                            "max_tokens": 2}).json()
        assert again["usage"]["prompt_tokens_details"]["cached_tokens"] >= 7 * 16
        lab = (("model_name", MODEL),)
        values = metric_values(s)
        from_tier = httpx.get(s.url + "/stats").json()["cache"]["offload_hit_tokens"]
        assert from_tier >= 16  # B evicted A's last blocks to the tier; the repeat of A copied them back
        assert values[("minikv:external_prefix_cache_hits_total", lab)] == from_tier

"""Random request bodies never break the server: every answer is 200 or a 4xx with OpenAI's error body,
and afterwards it still serves with every block given back (Hypothesis draws the bodies)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minikv.serve import ServerThread

MODEL = "tiny-qwen2"  # another architecture than the other server tests: Qwen2, tied embeddings, q/k/v biases

junk = st.recursive(st.none() | st.booleans() | st.integers(-3, 2000) | st.floats(allow_nan=True) |
                    st.text(max_size=12), lambda inner: st.lists(inner, max_size=3) |
                    st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
FIELDS = {
    "prompt": st.one_of(st.text(max_size=40), st.lists(st.integers(-5, 400), max_size=6), junk),
    "messages": st.one_of(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "x"]),
                                                          "content": st.text(max_size=20)}), max_size=3), junk),
    "max_tokens": st.one_of(st.integers(-2, 6), junk),
    "temperature": st.one_of(st.floats(-1, 3), junk),
    "top_p": st.one_of(st.floats(-0.5, 1.5), junk),
    "top_k": st.one_of(st.integers(-3, 50), junk),
    "seed": st.one_of(st.integers(-5, 2 ** 70), junk),
    "stop": st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=3), junk),
    "n": st.one_of(st.integers(0, 3), junk),
    "stream": st.one_of(st.booleans(), junk),
    "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), junk),
    "cache_salt": st.one_of(st.text(max_size=5), junk),
    "logprobs": st.one_of(st.none(), st.integers(0, 2), junk),
}


@st.composite
def bodies(draw):
    chosen = draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=6))
    body = {name: draw(FIELDS[name]) for name in chosen}
    if draw(st.booleans()):
        body["model"] = draw(st.sampled_from([MODEL, MODEL, "other"]))
    return body


@pytest.fixture(scope="module")
def srv():
    with ServerThread(MODEL, prefix_cache="radix", num_blocks=64) as s:
        yield s


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies(), route=st.sampled_from(["/completions", "/chat/completions"]))
def test_random_bodies_get_200_or_a_clear_4xx(srv, body, route):
    with httpx.Client(timeout=60) as http:
        # NaN and infinities go out as JavaScript's NaN / Infinity, which strict JSON refuses: a 400 too
        r = http.post(srv.base_url + route, content=json.dumps(body), headers={"Content-Type": "application/json"})
        assert r.status_code in (200, 400, 404), (r.status_code, r.text)
        if r.status_code != 200:
            err = r.json()["error"]
            assert isinstance(err["message"], str) and err["message"]
        elif body.get("stream") is True:
            assert r.text.rstrip().endswith("data: [DONE]")


def test_still_serving_and_idle_after_the_fuzz(srv):
    r = httpx.post(srv.base_url + "/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2})
    assert r.status_code == 200
    deadline = time.monotonic() + 20
    while (s := httpx.get(srv.url + "/stats").json())["num_blocks_held"] or s["num_running"]:
        assert time.monotonic() < deadline, s
        time.sleep(0.05)
    assert s["num_step_errors"] == 0

"""The attack over HTTP: HttpProber against minikv's server (OpenAI streaming API, TTFT timed by the client).

tiny-llama on 127.0.0.1 (a free port, stopped by the test). Timing on a tiny
model says little, so this checks the road: streamed TTFTs come back, the
server's ``cached_tokens`` show the victim's prefix hit without salts and
never across salts, and ``minikv bench leak --base-url`` prints its tables.
"""

from __future__ import annotations

import random

import pytest

from minikv.security.attack import identify_prefix
from minikv.security.probes import HttpProber
from minikv.serve import ServerThread

VOCAB = 259


@pytest.fixture(scope="module")
def server():
    with ServerThread("tiny-llama", prefix_cache="radix", device="cpu") as srv:
        yield srv


def test_probes_over_http_see_the_hit_and_the_salt(server):
    prober = HttpProber(server.base_url)
    assert prober.model == server.model_name
    clear = identify_prefix(prober, random.Random(0), prefix_tokens=48, trials=3, vocab=VOCAB)
    assert clear.hit_cached == [48] * 3 and set(clear.miss_cached) == {0}
    assert all(t > 0 for t in clear.hit_ttfts + clear.miss_ttfts)
    salted = identify_prefix(prober, random.Random(1), prefix_tokens=48, trials=3, vocab=VOCAB,
                             victim_salt="victim", attacker_salt="attacker")
    assert set(salted.hit_cached) == {0} and set(salted.miss_cached) == {0}


def test_bench_leak_against_the_server(server, capsys):
    from minikv.bench.leak import run

    assert run(["--base-url", server.base_url, "--vocab", str(VOCAB), "--lengths", "32", "--trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "AUC" in out and "server" in out and "token by token" in out

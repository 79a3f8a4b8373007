"""The server under pressure and at its edges: a full queue, a failing step, the `minikv serve` command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from minikv.serve import ServerThread

MODEL = "tiny-llama"
LONG = {"model": MODEL, "prompt": "Keep going. " * 4, "max_tokens": 300, "ignore_eos": True, "stream": True}


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def _stream_until(url: str, body: dict, stop: threading.Event, seen: list) -> None:
    """Read a streamed completion until ``stop`` is set, then drop the connection."""
    with httpx.Client(timeout=120) as http, http.stream("POST", url, json=body) as r:
        for line in r.iter_lines():
            seen.append(line)
            if stop.is_set():
                return


def test_full_waiting_queue_answers_503_and_recovers():
    with ServerThread(MODEL, max_num_seqs=1, max_waiting=1) as srv, httpx.Client(timeout=60) as http:
        stats = lambda: http.get(srv.url + "/stats").json()  # noqa: E731
        stop, seen = threading.Event(), []
        body = dict(LONG, max_tokens=900)  # long enough to still run while the test looks
        threads = [threading.Thread(target=_stream_until, args=(srv.base_url + "/completions", body, stop, seen))
                   for _ in range(2)]
        try:
            threads[0].start()
            wait_for(lambda: stats()["num_running"] == 1, what="the first request to run")
            threads[1].start()
            wait_for(lambda: stats()["num_waiting"] == 1, what="the second request to wait")
            r = http.post(srv.base_url + "/completions", json={"model": MODEL, "prompt": "hi"})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "queue_full"
            assert stats()["num_running"] == 1  # the engine never ran two at once (max_num_seqs=1)
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        wait_for(lambda: stats()["num_blocks_held"] == 0 and stats()["num_running"] == 0, what="idle")
        r = http.post(srv.base_url + "/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2})
        assert r.status_code == 200


def test_a_failing_step_answers_500_and_the_server_goes_on():
    with ServerThread(MODEL, prefix_cache="radix") as srv, httpx.Client(timeout=60) as http:
        runner = srv.engine.runner
        real = runner.run
        calls = {"n": 0}

        def flaky(scheduled):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("injected fault")
            return real(scheduled)

        runner.run = flaky
        r = http.post(srv.base_url + "/completions", json={"model": MODEL, "prompt": "hello", "max_tokens": 4})
        assert r.status_code == 500 and "injected fault" in r.json()["error"]["message"]
        ok = http.post(srv.base_url + "/completions", json={"model": MODEL, "prompt": "hello", "max_tokens": 4})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 4
        s = http.get(srv.url + "/stats").json()
        assert s["num_step_errors"] == 1 and s["num_blocks_held"] == 0


def test_stopping_mid_request_frees_everything():
    srv = ServerThread(MODEL, prefix_cache="hash").start()
    try:
        with httpx.Client(timeout=60) as http, http.stream("POST", srv.base_url + "/completions", json=LONG) as r:
            next(r.iter_lines())
            srv.stop()
    except httpx.HTTPError:
        pass  # the connection may end abruptly
    finally:
        srv.stop()
    assert srv.engine.get_stats().num_running == 0
    assert srv.engine.cache_stats().num_used == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/health")


def test_minikv_serve_command(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "minikv", "serve", "--model", MODEL, "--port", "0",
                             "--log-level", "warning", "--served-model-name", "mini", "--num-blocks", "64"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "listening on" not in line:
            assert time.monotonic() < deadline and proc.poll() is None, f"no start line; last: {line!r}"
            line = proc.stdout.readline()
        url = re.search(r"listening on (http://\S+)", line).group(1)
        assert url.startswith("http://127.0.0.1:")
        models = httpx.get(url + "/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["mini"]
        r = httpx.post(url + "/v1/completions", json={"model": "mini", "prompt": "hi", "max_tokens": 3}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        assert httpx.get(url + "/stats").json()["num_blocks"] == 64
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_command_refuses_a_taken_port():
    with ServerThread(MODEL) as srv:
        r = subprocess.run([sys.executable, "-m", "minikv", "serve", "--model", MODEL, "--port", str(srv.port)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2
        assert "cannot listen" in r.stderr and "--port" in r.stderr

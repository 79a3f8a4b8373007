"""``minikv bench serve``: benchmark any OpenAI-compatible server (minikv, vLLM, SGLang) with shared-prefix traffic.

::

    minikv bench serve --base-url http://127.0.0.1:8000 --workload system-prompt --rate inf --json out.json

The workload (:mod:`minikv.workloads.serve_traces`) is a list of
conversations. Conversation ``i`` starts at ``arrivals[i]``, a Poisson
process at ``--rate`` requests per second (``inf``: all at once; the same
seed, the same times); its turns go one after another, each sent once the
answer to the one before has arrived and carrying that real answer
(``multi-turn``). ``--concurrency C`` caps the requests in flight; a
request waiting for a slot is not timed until it is sent. Every request
streams (:mod:`minikv.bench.serve_client`); the summary
(:mod:`minikv.bench.serve_stats`) has TTFT, TPOT, inter-token and end-to-end
latency (mean, p50, p90, p99), request and output-token throughput, and the
prompt tokens the server says it served from its prefix cache.

Before the run, ``GET /v1/models`` checks that the server answers (and
names the model when ``--model`` is left out); an unreachable server or an
HTTP error there stops with a :class:`~minikv.errors.EndpointError`. During
the run a request that fails is counted as failed, and the run goes on; if
every request fails, the run ends with an ``EndpointError`` after the table.

:func:`run_benchmark` is the same from Python (a notebook, a test, ``minikv demo --serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime
import json
import math
import platform
import shlex
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from minikv.bench.serve_client import ENDPOINTS, RequestResult, build_payload, pick_model, send_request, server_root
from minikv.bench.serve_stats import failure_lines, format_table, plot_ttft, summarize
from minikv.errors import EndpointError, InvalidRequestError
from minikv.workloads.serve_traces import WORKLOADS, Conversation, make_workload, num_requests

T = TypeVar("T")


@dataclass
class BenchRun:
    """One benchmark run: where, what, each request's result (in workload order) and the summary."""

    base_url: str
    model: str
    endpoint: str
    workload: str
    results: list[RequestResult]
    duration: float
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        return summarize(self.results, self.duration)

    def table(self, title: str | None = None) -> str:
        return format_table(self.summary, title if title is not None else
                            f"{self.workload} on {self.base_url} ({self.model}, {self.endpoint})")


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, also from a thread whose loop already runs (a Jupyter kernel): then in a fresh thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _drive(conversations: list[Conversation], url: str, endpoint: str, model: str, arrivals: list[float],
                 concurrency: int | None, temperature: float, seed: int, ignore_eos: bool, timeout: float,
                 progress: bool) -> tuple[list[list[RequestResult]], float]:
    import httpx
    from tqdm.auto import tqdm

    slots = asyncio.Semaphore(concurrency) if concurrency else None
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    bar = tqdm(total=num_requests(conversations), desc="requests", unit="req", disable=not progress, leave=False)
    results = [[RequestResult(i, k) for k in range(len(c.turns))] for i, c in enumerate(conversations)]

    async def converse(i: int, conv: Conversation, client: httpx.AsyncClient, t0: float) -> None:
        await asyncio.sleep(max(0.0, t0 + arrivals[i] - time.perf_counter()))
        answers: list[str] = []
        for k in range(len(conv.turns)):
            body = build_payload(endpoint, model, conv.messages(k, answers), conv.max_tokens, temperature,
                                 seed + len(answers) + 1000 * i if temperature > 0 else None, ignore_eos)
            if slots is not None:
                async with slots:
                    r = await send_request(client, url, endpoint, body, results[i][k])
            else:
                r = await send_request(client, url, endpoint, body, results[i][k])
            bar.update(1)
            if not r.ok:
                for later in results[i][k + 1:]:
                    later.error = f"not sent: turn {k} of this conversation failed"
                bar.update(len(conv.turns) - k - 1)
                return
            answers.append(r.text)

    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(converse(i, c, client, t0) for i, c in enumerate(conversations)))
        duration = time.perf_counter() - t0
    bar.close()
    return results, duration


def run_benchmark(base_url: str, workload: str | list[Conversation] = "system-prompt", *, model: str | None = None,
                  endpoint: str = "chat", rate: float = math.inf, concurrency: int | None = None, seed: int = 0,
                  temperature: float = 0.0, ignore_eos: bool = False, timeout: float = 600.0,
                  progress: bool = True, **workload_options: Any) -> BenchRun:
    """Send a workload (a name of :data:`~minikv.workloads.serve_traces.WORKLOADS` with ``workload_options``,
    or conversations) to the server at ``base_url``; the :class:`BenchRun` holds every request's result."""
    from minikv.workloads.arrivals import poisson_arrivals

    if endpoint not in ENDPOINTS:
        raise InvalidRequestError(f"endpoint must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency < 1):
        raise InvalidRequestError(f"concurrency must be a whole number >= 1 (or None: no cap), got {concurrency!r}")
    name = workload if isinstance(workload, str) else "custom"
    conversations = make_workload(workload, seed=seed, **workload_options) if isinstance(workload, str) else workload
    root = server_root(base_url)
    model = pick_model(root, model)
    arrivals = poisson_arrivals(len(conversations), rate, seed=seed)
    per_conv, duration = _run_coroutine(_drive(conversations, root + ENDPOINTS[endpoint], endpoint, model, arrivals,
                                               concurrency, temperature, seed, ignore_eos, timeout, progress))
    options = dict(workload_options, rate=rate, concurrency=concurrency, seed=seed, temperature=temperature,
                   ignore_eos=ignore_eos, num_requests=num_requests(conversations))
    return BenchRun(root, model, endpoint, name, [r for rs in per_conv for r in rs], duration, options)


def _json_safe(x: Any) -> Any:
    """inf and nan as strict JSON allows them: ``"inf"`` and ``null``."""
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def record(run: BenchRun, argv: list[str] | None = None) -> dict[str, Any]:
    """Everything about a run as JSON-ready data: command, date, server, model, versions, summary, each request."""
    import httpx

    import minikv

    command = "minikv bench serve " + shlex.join(argv) if argv is not None else None
    return _json_safe({
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "base_url": run.base_url,
        "model": run.model,
        "endpoint": run.endpoint,
        "workload": run.workload,
        "options": run.options,
        "versions": {"minikv": minikv.__version__, "python": platform.python_version(), "httpx": httpx.__version__},
        "client_machine": f"{platform.system()} {platform.machine()}",
        "summary": run.summary,
        "requests": [r.to_json() for r in run.results],
    })


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minikv bench serve", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--base-url", required=True, help="the server, e.g. http://127.0.0.1:8000 (a trailing /v1 is fine)")
    p.add_argument("--model", default=None, help="model name to ask for (default: the first of GET /v1/models)")
    p.add_argument("--workload", default="system-prompt", choices=list(WORKLOADS))
    p.add_argument("--endpoint", default="chat", choices=list(ENDPOINTS),
                   help="chat: /v1/chat/completions with messages; completions: /v1/completions with one text")
    p.add_argument("--rate", type=float, default=math.inf,
                   help="conversations started per second, Poisson (default inf: all at once)")
    p.add_argument("--num-requests", type=int, default=None, help="requests in all (default: the workload's, 32)")
    p.add_argument("--concurrency", type=int, default=None, help="at most this many requests in flight")
    p.add_argument("--max-tokens", type=int, default=None, help="output tokens per request (default 32)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--ignore-eos", action="store_true", help="ask for exactly --max-tokens tokens (vLLM's extra field)")
    p.add_argument("--seed", type=int, default=0, help="seeds the workload text and the arrival times")
    g = p.add_argument_group("workload sizes (in words, about one token each; see minikv.workloads.serve_traces)")
    g.add_argument("--shared-len", type=int, default=None, help="shared part: system prompt, prefix, opening, example")
    g.add_argument("--unique-len", type=int, default=None, help="each request's own part: question, suffix, follow-up")
    g.add_argument("--groups", type=int, default=None, help="prefixes, preambles, groups or conversations")
    g.add_argument("--turns", type=int, default=None, help="multi-turn: turns per conversation (default 4)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before one request counts as failed")
    p.add_argument("--json", default=None, metavar="PATH", help="write the run (command, versions, every request)")
    p.add_argument("--plot", default=None, metavar="PATH", help="write a PNG of the TTFT distribution")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def workload_options(a: argparse.Namespace) -> dict[str, Any]:
    """The workload options the command line set (the others keep the workload's defaults)."""
    keys = {"num_requests": a.num_requests, "max_tokens": a.max_tokens, "shared_len": a.shared_len,
            "unique_len": a.unique_len, "groups": a.groups, "turns": a.turns}
    return {k: v for k, v in keys.items() if v is not None}


def run(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    opts = workload_options(a)
    if a.workload != "multi-turn" and "turns" in opts:
        raise InvalidRequestError("--turns is for --workload multi-turn only")
    bench = run_benchmark(a.base_url, a.workload, model=a.model, endpoint=a.endpoint, rate=a.rate,
                          concurrency=a.concurrency, seed=a.seed, temperature=a.temperature, ignore_eos=a.ignore_eos,
                          timeout=a.timeout, progress=not a.no_progress, **opts)
    print(bench.table())
    for line in failure_lines(bench.results):
        print(line, file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(record(bench, argv), f, indent=1)
        print(f"wrote {a.json}")
    if a.plot:
        plot_ttft({bench.workload: bench.results}, a.plot)
        print(f"wrote {a.plot}")
    if not any(r.ok for r in bench.results):
        first = next(r.error for r in bench.results)
        raise EndpointError(f"all {len(bench.results)} requests to {bench.base_url}{ENDPOINTS[bench.endpoint]} "
                            f"failed; the first: {first}")
    return 0


__all__ = ["BenchRun", "record", "run", "run_benchmark"]

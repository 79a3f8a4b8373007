"""``minikv bench serve-overhead``: what the HTTP layer costs, ``minikv serve`` vs the offline engine, in one process.

One :class:`~minikv.engine.LLMEngine` (``max_num_seqs`` = ``--concurrency``)
runs the same requests two ways, one after the other, ``--repeats`` times:

- offline: every prompt added at once, ``step`` until done (what
  ``LLM.generate`` does); at most ``--concurrency`` run at a time. The loop
  runs in a thread of its own, as ``ServerThread`` runs its engine loop (``minikv serve`` runs it in the main
  thread instead; see docs/benchmarks.md): torch's
  CPU kernels do not run at the same speed in the main thread and in
  another one (on a loaded 2-core machine, a 512x64 by 64x64 matmul with
  torch's 2 threads ran 4x to 60x slower in the main thread than in a
  second thread, which behaves as if single-threaded; with
  ``torch.set_num_threads(1)`` the main thread is as fast), so both sides
  get the same threading
  (``--offline-thread main``: the main thread, as a script calling
  ``LLM.generate`` does);
- served: the engine behind a :class:`~minikv.serve.ServerThread` on a
  loopback port, and ``minikv bench serve`` sending the same prompts to
  ``/v1/completions`` with ``--concurrency`` streams in flight.

Greedy with ``ignore_eos``: every request makes exactly ``--max-tokens``
tokens either way, so output tokens/s compare like with like. The prefix
cache is ``none`` by default, so that no run reuses what an earlier one
left; with ``--prefix-cache radix`` (or ``hash``) a warm-up pass sends every
prompt once first, so that every timed run, offline or served, finds the
same warm cache (what a server with a cache sees in steady state). The
best of the repeats counts; a warm-up request runs first either way. The ratio
served / offline is the share of the engine's throughput a client sees
through HTTP, SSE and detokenization.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

from minikv.bench.serve import run_benchmark
from minikv.errors import InvalidRequestError
from minikv.workloads.serve_traces import WORKLOADS, Conversation, make_workload, render_prompt


def offline_tokens_per_s(engine: Any, prompts: list[str], max_tokens: int,
                         in_main_thread: bool = False) -> tuple[float, float, int]:
    """All ``prompts`` through ``engine`` offline, in a thread of its own (or this one): (tokens/s, seconds, tokens)."""
    from minikv import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    out: list[Any] = []

    def loop() -> None:
        try:
            start = time.perf_counter()
            for i, p in enumerate(prompts):
                engine.add_request(f"offline-{i}-{start}", p, params)
            tokens = 0
            while engine.has_unfinished_requests():
                tokens += sum(len(o.new_token_ids) for o in engine.step())
            seconds = time.perf_counter() - start
            out.append((tokens / seconds, seconds, tokens))
        except BaseException as e:  # re-raised in the caller's thread
            out.append(e)

    if in_main_thread:
        loop()
    else:
        worker = threading.Thread(target=loop, name="minikv-offline")
        worker.start()
        worker.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def served_tokens_per_s(engine: Any, conversations: list[Conversation], concurrency: int) -> tuple[float, float, int]:
    """The same requests through a server on ``engine``: (output tokens/s, seconds, output tokens)."""
    from minikv.serve import ServerThread

    with ServerThread(engine=engine) as srv:
        run = run_benchmark(srv.url, conversations, model=srv.model_name, endpoint="completions",
                            concurrency=concurrency, ignore_eos=True, progress=False)
    s = run.summary
    if s["failed"]:
        from minikv.bench.serve_stats import failure_lines

        raise InvalidRequestError("the served run had failures: " + "; ".join(failure_lines(run.results)))
    return s["output_throughput"], s["duration_s"], s["output_tokens"]


def compare(model: str = "smollm2-135m", workload: str = "system-prompt", num_requests: int = 64,
            concurrency: int = 16, max_tokens: int = 32, repeats: int = 2, prefix_cache: str = "none",
            seed: int = 0, device: str | None = None, shared_len: int | None = None, unique_len: int | None = None,
            offline_in_main_thread: bool = False, **engine_options: Any) -> dict[str, Any]:
    """Offline vs served output tokens/s on the same requests (best of ``repeats``); the dict :func:`run` prints."""
    from minikv import LLMEngine

    if workload == "multi-turn":
        raise InvalidRequestError("serve-overhead needs one-turn requests (the offline run has no previous answers); "
                                  f"pick one of {', '.join(w for w in WORKLOADS if w != 'multi-turn')}")
    conversations = make_workload(workload, num_requests=num_requests, max_tokens=max_tokens, seed=seed,
                                  shared_len=shared_len, unique_len=unique_len)
    prompts = [render_prompt(c.messages(0, [])) for c in conversations]
    engine = LLMEngine(model, prefix_cache=prefix_cache, max_num_seqs=concurrency, device=device, **engine_options)
    offline_tokens_per_s(engine, prompts if prefix_cache != "none" else prompts[:1], 1)  # warm-up
    rows: dict[str, list[tuple[float, float, int]]] = {"offline": [], "served": []}
    for _ in range(repeats):
        rows["offline"].append(offline_tokens_per_s(engine, prompts, max_tokens, offline_in_main_thread))
        rows["served"].append(served_tokens_per_s(engine, conversations, concurrency))
    best = {k: max(v) for k, v in rows.items()}
    return {"model": model, "workload": workload, "num_requests": num_requests, "concurrency": concurrency,
            "max_tokens": max_tokens, "prefix_cache": prefix_cache, "repeats": repeats,
            "offline_thread": "main" if offline_in_main_thread else "worker",
            "runs": {k: [{"tokens_per_s": t, "seconds": s, "tokens": n} for t, s, n in v] for k, v in rows.items()},
            "offline_tokens_per_s": best["offline"][0], "served_tokens_per_s": best["served"][0],
            "ratio": best["served"][0] / best["offline"][0]}


def run(argv: list[str]) -> int:
    from minikv.bench.common import machine_line, print_table

    p = argparse.ArgumentParser(prog="minikv bench serve-overhead",
                                description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default=None)
    p.add_argument("--workload", default="system-prompt", choices=[w for w in WORKLOADS if w != "multi-turn"])
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=16, help="streams in flight, and the engine's max_num_seqs")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--prefix-cache", default="none", choices=["none", "hash", "radix"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shared-len", type=int, default=None, help="the workload's shared part, in words")
    p.add_argument("--unique-len", type=int, default=None, help="each request's own part, in words")
    p.add_argument("--offline-thread", default="worker", choices=["worker", "main"],
                   help="where the offline loop runs: a thread of its own like the server's loop, or the main thread")
    p.add_argument("--json", default=None, metavar="PATH")
    a = p.parse_args(argv)
    r = compare(a.model, a.workload, a.num_requests, a.concurrency, a.max_tokens, a.repeats, a.prefix_cache, a.seed,
                a.device, a.shared_len, a.unique_len, a.offline_thread == "main")
    print(f"# {machine_line()}; {a.model}, {a.workload}, {a.num_requests} requests x {a.max_tokens} tokens, "
          f"{a.concurrency} streams, prefix cache {a.prefix_cache}, offline loop in the {a.offline_thread} thread, "
          f"best of {a.repeats}")
    print_table(["run", "output tok/s", "each repeat (tok/s)"],
                [[k, f"{r[f'{k}_tokens_per_s']:.1f}", ", ".join(f"{x['tokens_per_s']:.1f}" for x in r["runs"][k])]
                 for k in ("offline", "served")])
    print(f"served / offline: {r['ratio']:.1%}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"command": "minikv bench serve-overhead " + " ".join(argv), "machine": machine_line(), **r}, f,
                      indent=1)
        print(f"wrote {a.json}")
    return 0


__all__ = ["compare", "offline_tokens_per_s", "run", "served_tokens_per_s"]

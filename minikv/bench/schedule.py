"""``minikv bench schedule``: the online engine under real-time arrivals, against its baselines and transformers.

Requests are replayed in real time (:mod:`minikv.bench.online`): each joins
the engine when its arrival time comes, and the loop steps while there is
work. Every configuration of a scenario runs on the same requests, in the
same process, on one loaded model (a fresh engine and an emptied prefix
cache each), then transformers' sequential ``generate`` runs them too.
Greedy, ``ignore_eos``: every request makes exactly ``--max-tokens`` tokens.

Columns: output tokens/s (all output tokens / time from the first arrival to
the last token), TTFT p50/p99 (arrival to first token, queueing included),
inter-token latency p50/p99 (gaps between a request's tokens, from the times
each step's outputs came back), worst wait (arrival to first scheduled),
prefix-cache hit rate (cached prompt tokens at admission / prompt tokens),
% of Belady (hit tokens / :func:`~minikv.workloads.belady.belady_hit_tokens`
of the trace in arrival order at the pool's size; "own" uses the order the
engine served), preemptions, steps, and "= hf": requests whose tokens equal
transformers'.

Scenarios (``--scenario``; sizes overridable by the flags):

- ``throughput``: ``--requests`` (8) of ``--shared`` (1024) shared + ``--unique`` (64) unique tokens, all at once,
  ``--max-tokens`` 32; continuous vs waves vs transformers.
- ``poisson``: ``--requests`` (16) of 256 shared + 64 unique tokens, Poisson arrivals at ``--rate`` (3/s),
  ``--max-tokens`` 48, a pool of ``--num-blocks`` (80) blocks, so waves' up-front reservation of prompt +
  ``max_tokens`` blocks limits how many run; continuous vs waves: TTFT.
- ``chunked``: ``--requests`` (4) short prompts decoding ``--max-tokens`` 64 tokens, then ``--long-requests`` (2) of
  ``--long-prompt`` (1024) tokens arriving at 0.5 s and 1.0 s; chunked prefill off vs on
  (``--chunk``: long_prefill_token_threshold, 128): inter-token latency.
- ``policy``: the shuffled few-shot trace (``--requests`` 24, ``--groups`` 4, ``--shared`` 256-token preambles,
  16..32-token questions), all at once, ``--max-tokens`` 4, a pool of ``--num-blocks`` (56) blocks, at most
  ``--max-num-seqs`` (2) running: FCFS vs LPM vs DFS-weight hit rate, % of Belady, throughput, worst wait.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from typing import Any

from minikv.bench.common import machine_line, print_table, prompt_ids
from minikv.bench.online import replay_engine, replay_transformers, summarize

SCENARIOS = ("throughput", "poisson", "chunked", "policy")
DEFAULTS: dict[str, dict[str, Any]] = {
    "throughput": dict(requests=8, shared=1024, unique=64, max_tokens=32, rate=math.inf),
    "poisson": dict(requests=16, shared=256, unique=64, max_tokens=48, rate=3.0, num_blocks=80),
    "chunked": dict(requests=4, shared=0, unique=32, max_tokens=64, rate=math.inf, long_requests=2,
                    long_prompt=1024, long_max_tokens=8, chunk=128),
    "policy": dict(requests=24, shared=256, unique=32, max_tokens=4, rate=math.inf, groups=4, num_blocks=56,
                   max_num_seqs=2),
}


def configs(scenario: str, a: argparse.Namespace, longest: int) -> dict[str, dict[str, Any]]:
    """The engine configurations a scenario compares: label -> LLMEngine scheduling options."""
    if scenario in ("throughput", "poisson"):
        return {"continuous": {}, "waves": {"scheduler": "waves"}}
    if scenario == "chunked":
        return {"chunked off": {"enable_chunked_prefill": False, "max_num_batched_tokens": max(8192, longest)},
                "chunked on": {"enable_chunked_prefill": True, "long_prefill_token_threshold": a.chunk}}
    seqs = {"max_num_seqs": a.max_num_seqs}
    return {p: {"policy": p, **seqs} for p in ("fcfs", "lpm", "dfs-weight")}


def make_requests(scenario: str, a: argparse.Namespace, tokenizer: Any, vocab: int) -> tuple[list[list[int]], list[float]]:
    """The scenario's prompts (token ids) and arrival times (seconds from the start)."""
    from minikv.workloads import poisson_arrivals

    if scenario == "policy":
        from minikv.workloads import shuffled_few_shot_trace

        lo = max(1, a.unique // 2)
        trace = shuffled_few_shot_trace(a.requests, a.groups, a.shared, (lo, max(lo, a.unique)),
                                        vocab=min(vocab, 49152), seed=a.seed)
        return trace, poisson_arrivals(len(trace), a.rate, seed=a.seed)
    shared = prompt_ids(tokenizer, a.shared) if a.shared else []
    prompts = [shared + prompt_ids(tokenizer, a.unique, salt=f"Request {i}: ") for i in range(a.requests)]
    arrivals = poisson_arrivals(a.requests, a.rate, seed=a.seed)
    if scenario == "chunked":
        for j in range(a.long_requests):
            prompts.append(prompt_ids(tokenizer, a.long_prompt, salt=f"Long document {j}: "))
            arrivals.append(0.5 * (j + 1))
    order = sorted(range(len(prompts)), key=lambda i: arrivals[i])
    return [prompts[i] for i in order], [arrivals[i] for i in order]


def belady(prompts: list[list[int]], num_blocks: int, block_size: int) -> Any:
    """Belady's hit tokens per request, or None when :mod:`minikv.workloads.belady` is not there."""
    try:
        from minikv.workloads.belady import belady_hit_tokens
    except ImportError:
        return None
    return belady_hit_tokens(prompts, num_blocks, block_size)


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="minikv bench schedule", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="throughput", choices=SCENARIOS)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--requests", type=int, help="requests (chunked: the short ones)")
    ap.add_argument("--shared", type=int, help="shared prompt tokens (policy: each group's preamble)")
    ap.add_argument("--unique", type=int, help="unique prompt tokens per request (policy: longest question)")
    ap.add_argument("--max-tokens", type=int, help="new tokens per request")
    ap.add_argument("--rate", type=float, help="Poisson arrivals per second (inf: all at once)")
    ap.add_argument("--long-requests", type=int, help="chunked: long prompts, arriving at 0.5 s, 1.0 s, ...")
    ap.add_argument("--long-prompt", type=int, help="chunked: tokens of each long prompt")
    ap.add_argument("--chunk", type=int, help="chunked: long_prefill_token_threshold when chunking is on")
    ap.add_argument("--groups", type=int, help="policy: few-shot groups")
    ap.add_argument("--num-blocks", type=int, help="KV pool blocks (default: LLM's default pool; poisson: 80, policy: 56)")
    ap.add_argument("--max-num-seqs", type=int, help="requests running at once (default 256; policy: 2)")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--cache", default="radix", choices=["radix", "hash", "none"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="weights and KV of both minikv and transformers (default float32, the reference)")
    ap.add_argument("--attention", default="auto", choices=["auto", "torch", "triton"],
                    help="minikv's paged attention kernels (auto: Triton on CUDA, torch on CPU)")
    ap.add_argument("--transformers-requests", type=int, default=None,
                    help="transformers runs only the first N requests (its tokens/s is per request, so with "
                         "requests alike and all at once this is the same number, sooner)")
    ap.add_argument("--no-transformers", action="store_true", help="skip transformers' sequential generate")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="run the first configuration under torch.profiler and print its N costliest ops "
                         "(ms per step); its timings then include the profiler's overhead")
    ap.add_argument("--json-file", help="also write the JSON object to this file")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    a = ap.parse_args(argv)
    base = {"long_requests": 0, "long_prompt": 0, "long_max_tokens": 0, "chunk": 0, "groups": 4,
            "num_blocks": None, "max_num_seqs": 256} | DEFAULTS[a.scenario]
    for k, v in base.items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    for k in ("requests", "max_tokens", "groups", "max_num_seqs"):
        if getattr(a, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be >= 1")
    if a.shared < 0 or a.unique < 1 or not a.rate > 0:
        ap.error("--shared must be >= 0, --unique >= 1 and --rate > 0")
    return a


def run(argv: list[str]) -> int:
    a = parse(argv)
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    from minikv import SamplingParams
    from minikv.engine import LLMEngine
    from minikv.engine.parts import EngineParts

    options: dict[str, Any] = dict(prefix_cache=a.cache, block_size=a.block_size, device=a.device,
                                   attention=a.attention, dtype=a.dtype)
    if a.num_blocks is not None:
        options["num_blocks"] = a.num_blocks
    parts = EngineParts(a.model, **options)
    prompts, arrivals = make_requests(a.scenario, a, parts.tokenizer, parts.config.vocab_size)
    n = len(prompts)
    long_ids = {i for i, p in enumerate(prompts) if len(p) == a.long_prompt} if a.scenario == "chunked" else set()
    longest = max(map(len, prompts)) + max(a.max_tokens, a.long_max_tokens)
    confs = configs(a.scenario, a, longest)

    def params_for(i: int) -> int:
        return a.long_max_tokens if i in long_ids else a.max_tokens

    # each request's own SamplingParams (chunked: the long prompts make fewer tokens)
    per_request = {i: SamplingParams(max_tokens=params_for(i), temperature=0.0, ignore_eos=True) for i in range(n)}

    bar = tqdm(total=n * (len(confs) + (0 if a.no_transformers else 1)), desc=f"bench schedule {a.scenario}",
               unit="req", disable=a.no_progress, file=sys.stderr, leave=False)
    warm = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    results: dict[str, dict[str, Any]] = {}
    replays = {}
    for label, conf in confs.items():
        parts.cache.reset()
        engine = LLMEngine(parts=parts, **conf)
        engine.add_request("warm-up", {"prompt_token_ids": prompts[0][:32]}, warm)
        while engine.has_unfinished_requests():
            engine.step()
        parts.cache.reset()
        engine = LLMEngine(parts=parts, **conf)
        if a.profile and not replays:
            rep = _profiled(a.profile, label, lambda: _replay_mixed(engine, prompts, arrivals, per_request, bar.update))
        else:
            rep = _replay_mixed(engine, prompts, arrivals, per_request, bar.update)
        replays[label] = rep
        results[label] = summarize(rep)
    if not a.no_transformers:
        hf = AutoModelForCausalLM.from_pretrained(parts.path, dtype=parts.dtype).to(parts.device).eval()
        tok = parts.tokenizer
        pad = hf.config.pad_token_id if hf.config.pad_token_id is not None else tok.eos_token_id
        replay_transformers(hf, [prompts[0][:32]], [0.0], 2, pad)  # warm-up
        k = n if a.transformers_requests is None else max(1, min(n, a.transformers_requests))
        bar.total -= n - k
        groups = sorted({params_for(i) for i in range(k)})
        rep = _replay_hf_mixed(hf, prompts[:k], arrivals[:k], params_for, pad, bar.update) if len(groups) > 1 else \
            replay_transformers(hf, prompts[:k], arrivals[:k], a.max_tokens, pad, bar.update)
        replays["transformers"] = rep
        results["transformers"] = summarize(rep)
    bar.close()

    num_blocks = parts.kv_pool.num_blocks
    opt = belady(prompts, num_blocks, a.block_size)
    ref = replays.get("transformers")
    for label, rep in replays.items():
        row = results[label]
        if label != "transformers" and opt is not None:
            best = sum(opt)
            row["belady_hit_tokens"] = best
            row["pct_of_belady"] = 100.0 * row["hit_tokens"] / best if best else 100.0
            own = belady([prompts[i] for i in rep.served_order], num_blocks, a.block_size)
            row["pct_of_belady_own_order"] = 100.0 * row["hit_tokens"] / sum(own) if sum(own) else 100.0
        if ref is not None:
            row["same_tokens_as_transformers"] = sum(x == y for x, y in zip(rep.token_ids, ref.token_ids))
            row["compared_with_transformers"] = len(ref.token_ids)
    base_label = "transformers" if "transformers" in results else None
    if base_label:
        for row in results.values():
            row["speedup_vs_transformers"] = row["tokens_per_s"] / results[base_label]["tokens_per_s"]

    info = {"scenario": a.scenario, "model": a.model, "machine": machine_line(), "requests": n,
            "prompt_tokens": [len(p) for p in prompts], "arrivals_s": arrivals, "max_tokens": a.max_tokens,
            "transformers_requests": len(replays["transformers"].arrivals) if "transformers" in replays else 0,
            "num_blocks": num_blocks, "block_size": a.block_size, "prefix_cache": a.cache,
            "attention": parts.attention, "configs": {k: {kk: str(vv) for kk, vv in v.items()} for k, v in confs.items()}}
    blob = json.dumps({**info, "results": results}, indent=1, default=float)
    if a.json_file:
        with open(a.json_file, "w") as f:
            f.write(blob + "\n")
    if a.json:
        print(blob)
        return 0
    lengths = info["prompt_tokens"]
    longer = f" ({a.long_max_tokens} for the long ones)" if long_ids else ""
    print(f"bench schedule {a.scenario}: {n} requests, prompts {min(lengths)}..{max(lengths)} tokens, "
          f"{a.max_tokens} new each{longer}, pool {num_blocks} blocks of {a.block_size}, prefix_cache={a.cache}, "
          f"model {a.model}, attention {parts.attention} ({machine_line()})")
    print_table(*table(results))
    if info["transformers_requests"] and info["transformers_requests"] < n:
        print(f"transformers ran the first {info['transformers_requests']} of the {n} requests")
    if opt is None:
        print("% of Belady: n/a (minikv.workloads.belady is not on this branch)")
    return 0


def table(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the printed table."""
    headers = ["config", "out tok/s", "x hf", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms",
               "worst wait ms", "hit rate", "% Belady", "(own order)", "preempt", "steps", "= hf"]
    rows = []
    for label, r in results.items():
        f = lambda k, fmt: fmt.format(r[k]) if k in r and r[k] == r[k] else "-"  # noqa: E731 (nan -> "-")
        rows.append([label, f("tokens_per_s", "{:,.1f}"), f("speedup_vs_transformers", "{:.2f}x"),
                     f("ttft_p50_ms", "{:,.0f}"), f("ttft_p99_ms", "{:,.0f}"), f("itl_p50_ms", "{:,.0f}"),
                     f("itl_p99_ms", "{:,.0f}"), f("max_wait_ms", "{:,.0f}"),
                     f("hit_rate", "{:.1%}") if label != "transformers" else "-",
                     f("pct_of_belady", "{:.0f}%"), f("pct_of_belady_own_order", "{:.0f}%"),
                     f("preemptions", "{}") if label != "transformers" else "-", f("steps", "{}"),
                     same(r)])
    return headers, rows


def same(r: dict[str, Any]) -> str:
    """``k/n``: requests whose tokens equal transformers' of the ``n`` compared, or "-"."""
    if "same_tokens_as_transformers" not in r:
        return "-"
    return f"{r['same_tokens_as_transformers']}/{r['compared_with_transformers']}"


def _profiled(top: int, label: str, go: Any) -> Any:
    """``go()`` under torch.profiler; prints the ``top`` ops by self CPU time, in ms per engine step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rep = go()
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    steps = max(1, rep.steps)
    print(f"profile of {label!r}: {steps} steps; self CPU ms per step (calls per step)", file=sys.stderr)
    for e in ops:
        print(f"  {e.key:<50} {e.self_cpu_time_total / 1e3 / steps:9.2f} ms  ({e.count / steps:.0f})", file=sys.stderr)
    return rep


def _replay_mixed(engine: Any, prompts: list[list[int]], arrivals: list[float], per_request: dict[int, Any],
                  on_finish: Any) -> Any:
    """:func:`replay_engine` with each request's own SamplingParams."""
    return replay_engine(_PerRequest(engine, per_request), prompts, arrivals, None, on_finish)


class _PerRequest:
    """An engine whose ``add_request`` ignores the params given and uses the request's own."""

    def __init__(self, engine: Any, params: dict[int, Any]) -> None:
        self._engine, self._params = engine, params

    def add_request(self, rid: int, prompt: Any, _params: Any, arrival_time: float | None = None) -> None:
        self._engine.add_request(rid, prompt, self._params[rid], arrival_time=arrival_time)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _replay_hf_mixed(hf: Any, prompts: list[list[int]], arrivals: list[float], tokens_for: Any, pad: int,
                     on_finish: Any) -> Any:
    """:func:`replay_transformers` when requests want different numbers of new tokens: one call per request."""
    import time

    from minikv.bench.online import Replay

    start = time.perf_counter()
    merged = Replay(start, [start + t for t in arrivals], [None] * len(prompts), [[] for _ in prompts],
                    [[] for _ in prompts], [len(p) for p in prompts], [0] * len(prompts))
    for i, p in enumerate(prompts):
        one = replay_transformers(hf, [p], [max(0.0, merged.arrivals[i] - time.perf_counter())], tokens_for(i), pad,
                                  on_finish)
        merged.admitted[i], merged.token_times[i], merged.token_ids[i] = one.admitted[0], one.token_times[0], one.token_ids[0]
        merged.steps += one.steps
    return merged

"""``minikv bench offload``: what a CPU offload tier buys when the working set outgrows the KV pool.

Two parts, in one process:

1. **Hit rate** (no model: the bookkeeping of :func:`minikv.workloads.replay`
   over a one-layer, one-head pool, so the tier really copies, but bytes are
   few; the hit rate does not depend on the model). Chat traces of
   ``--conversations`` x ``--turns`` (``multi-turn-rr``: every conversation
   speaks once per round, always in the same order, so an LRU pool smaller
   than the conversations misses all; ``multi-turn``: at random) are
   replayed through each cache in a pool of ``--capacity-tokens`` (default
   32k tokens) without a tier and with tiers of ``--tier-blocks``. Reported:
   hit rate, the part served by the tier, the gain over no tier, and what
   the tier stored, loaded and dropped.
2. **The engine** on the model (``--model``): a smaller round-robin chat
   trace (``--engine-conversations`` x ``--engine-turns``) sent one request
   at a time to an ``LLM`` whose pool of ``--engine-pool-tokens`` holds
   about a third of it, without and with a tier that holds it all: hit
   rate and TTFT (mean, p50, p90), and the same greedy first tokens.
3. **Time per block** on the model (``--model``, default SmolLM2-135M; ``none``
   skips it): the TTFT of a ``--prompt-blocks``-block prompt (plus one
   token, the last-token rule) when it misses, when it hits in the pool, and
   when every block comes back from the tier; ``(miss - hit) / blocks`` is
   the recompute cost of one block and ``(tier - hit) / blocks`` its
   copy-back cost, beside the pool-to-host and host-to-pool copies timed
   alone (warmed up, best of at least 5). Best of ``--repeats``. On a CPU both levels are host memory, so
   the copy is a plain memcpy; on CUDA it crosses PCIe from pinned memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from minikv.bench.common import best_of, machine_line, print_table, prompt_ids
from minikv.kv import KVPool
from minikv.prefix import BlockHashCache, RadixCache
from minikv.prefix.offload import OffloadTier
from minikv.workloads import multi_turn_trace, replay

TRACES = ("multi-turn-rr", "multi-turn")
CACHES = {
    "hash": lambda nb, bs, tier: BlockHashCache(nb, bs, hash_fn="xxh3_128", offload=tier),
    "radix": lambda nb, bs, tier: RadixCache(nb, bs, offload=tier),
}


def hit_rates(args: argparse.Namespace, tiers: list[int]) -> dict:
    """Replay each trace through each cache, without a tier and with each tier size."""
    bs, nb = args.block_size, args.capacity_tokens // args.block_size
    out: dict = {"num_blocks": nb, "block_size": bs, "capacity_tokens": nb * bs, "traces": {}}
    for kind in args.traces:
        trace = multi_turn_trace(args.conversations, args.turns, seed=args.seed,
                                 interleave="round-robin" if kind == "multi-turn-rr" else "random")
        tokens = sum(map(len, trace))
        need = max(-(-len(t) // bs) for t in trace)
        if nb < need:
            raise SystemExit(f"error: --capacity-tokens {args.capacity_tokens} is too small for the trace: its "
                             f"longest prompt needs {need} blocks of {bs}; give at least {need * bs}")
        rows = []
        for cache_name in args.caches:
            base = None
            for tier_blocks in [0, *tiers]:
                pool = KVPool(1, 1, 1, bs, nb)
                tier = OffloadTier(pool, tier_blocks) if tier_blocks else None
                cache = CACHES[cache_name](nb, bs, tier)
                t0 = time.perf_counter()
                hits = sum(replay(cache, trace))
                s = cache.stats()
                rate = hits / tokens
                base = rate if base is None else base
                ts = tier.stats() if tier else None
                rows.append({"cache": cache_name, "tier_blocks": tier_blocks, "hit_rate": rate,
                             "pool_hit_rate": s.pool_hit_tokens / tokens, "tier_hit_rate": s.offload_hit_tokens / tokens,
                             "gain": rate / base if base else float("inf"), "stored": ts.stored if ts else 0,
                             "loaded": ts.loaded if ts else 0, "dropped": ts.dropped if ts else 0,
                             "seconds": time.perf_counter() - t0})  # fmt: skip
        out["traces"][kind] = {"requests": len(trace), "prompt_tokens": tokens, "runs": rows}
    return out


def engine_run(args: argparse.Namespace) -> dict:
    """The round-robin chats through the engine, one request at a time, without and with the tier."""
    from minikv import LLM, SamplingParams

    one = SamplingParams(max_tokens=1, temperature=0.0)
    bs = args.block_size
    pool_blocks = args.engine_pool_tokens // bs
    rows, first_tokens = [], []
    for tier_blocks in (0, args.engine_tier_blocks):
        llm = LLM(args.model, prefix_cache=args.time_cache, block_size=bs, device=args.device, num_blocks=pool_blocks,
                  cpu_offload_blocks=tier_blocks or None)  # fmt: skip
        vocab = min(llm.config.vocab_size, 49152)
        trace = multi_turn_trace(args.engine_conversations, args.engine_turns, vocab=vocab, seed=args.seed,
                                 interleave="round-robin")  # fmt: skip
        llm.generate({"prompt_token_ids": trace[0][:8]}, one)  # warm up, then start clean
        llm.reset_prefix_cache()
        ttfts, firsts = [], []
        t0 = time.perf_counter()
        for ids in trace:
            out = llm.generate({"prompt_token_ids": ids}, one)[0]
            ttfts.append(out.metrics.ttft)
            firsts.append(out.token_ids[0])
        wall = time.perf_counter() - t0
        s = llm.cache_stats()
        ttfts.sort()
        rows.append({"tier_blocks": tier_blocks, "hit_rate": s.hit_rate, "tier_hit_rate": s.offload_hit_rate,
                     "ttft_mean": sum(ttfts) / len(ttfts), "ttft_p50": ttfts[len(ttfts) // 2],
                     "ttft_p90": ttfts[int(0.9 * (len(ttfts) - 1))], "seconds": wall})  # fmt: skip
        first_tokens.append(firsts)
    return {"model": args.model, "cache": args.time_cache, "pool_blocks": pool_blocks, "requests": len(trace),
            "prompt_tokens": sum(map(len, trace)), "same_first_tokens": first_tokens[0] == first_tokens[1],
            "runs": rows}  # fmt: skip


def block_times(args: argparse.Namespace) -> dict:
    """TTFT of a miss, a pool hit and a tier hit of one prompt, and the copies alone, per block."""
    from minikv import LLM, SamplingParams

    n = args.prompt_blocks
    llm = LLM(args.model, prefix_cache=args.time_cache, block_size=args.block_size, device=args.device,
              cpu_offload_blocks=n + 1)
    ids = prompt_ids(llm.tokenizer, n * args.block_size + 1)
    one = SamplingParams(max_tokens=1, temperature=0.0)
    ttft: dict[str, float] = {"miss": float("inf"), "pool": float("inf"), "tier": float("inf")}
    cached: dict[str, int] = {}
    for _ in range(args.repeats):
        llm.reset_prefix_cache()
        for case in ("miss", "pool", "tier"):
            if case == "tier":
                llm.cache.evict(llm.cache.num_blocks)  # every cached block goes to the tier
            out = llm.generate({"prompt_token_ids": ids}, one)[0]
            ttft[case] = min(ttft[case], out.metrics.ttft)
            cached[case] = out.num_cached_tokens
    if cached != {"miss": 0, "pool": n * args.block_size, "tier": n * args.block_size}:
        raise AssertionError(f"the cases did not hit as planned: {cached}")
    pool = llm.kv_pool
    tier = OffloadTier(pool, n)
    blocks, slots = list(range(n)), list(range(n))
    for _ in range(2):  # the first copies fault the host pages in: not what a warm tier pays
        pool.save_blocks(blocks, tier.host, slots)
        pool.load_blocks(tier.host, slots, blocks)
    save = best_of(lambda: pool.save_blocks(blocks, tier.host, slots), max(5, args.repeats))
    load = best_of(lambda: pool.load_blocks(tier.host, slots, blocks), max(5, args.repeats))
    return {"model": args.model, "cache": args.time_cache, "device": str(llm.device), "dtype": str(llm.dtype),
            "prompt_blocks": n, "bytes_per_block": pool.bytes_per_block, "ttft": ttft,
            "recompute_ms_per_block": 1e3 * (ttft["miss"] - ttft["pool"]) / n,
            "copy_back_ms_per_block": 1e3 * (ttft["tier"] - ttft["pool"]) / n,
            "save_ms_per_block": 1e3 * save / n, "load_ms_per_block": 1e3 * load / n}  # fmt: skip


def _list(text: str, choices, what: str, ap: argparse.ArgumentParser) -> list[str]:
    got = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in got if k not in choices]
    if bad or not got:
        ap.error(f"unknown {what} {', '.join(map(repr, bad)) or '(none given)'}; choose from {', '.join(choices)}")
    return got


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="minikv bench offload", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", default=",".join(TRACES), help="comma-separated, of: " + ", ".join(TRACES))
    ap.add_argument("--caches", default=",".join(CACHES), help="comma-separated: hash, radix (default: both)")
    ap.add_argument("--capacity-tokens", type=int, default=32 * 1024, help="KV pool size in tokens (default 32768)")
    ap.add_argument("--tier-blocks", default="2048,8192,32768",
                    help="comma-separated tier sizes in blocks (default: 1x, 4x and 16x the default pool)")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--conversations", type=int, default=200, help="chat traces: conversations (200)")
    ap.add_argument("--turns", type=int, default=8, help="chat traces: turns each (8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="smollm2-135m", help="model for the time per block ('none': skip it)")
    ap.add_argument("--time-cache", default="hash", choices=list(CACHES), help="cache for the time per block")
    ap.add_argument("--prompt-blocks", type=int, default=64, help="blocks of the timed prompt (64)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engine-conversations", type=int, default=12, help="engine part: conversations (12; 0 skips)")
    ap.add_argument("--engine-turns", type=int, default=4, help="engine part: turns each (4)")
    ap.add_argument("--engine-pool-tokens", type=int, default=2048, help="engine part: KV pool in tokens (2048)")
    ap.add_argument("--engine-tier-blocks", type=int, default=1024, help="engine part: tier in blocks (1024)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args(argv)
    args.traces = _list(args.traces, TRACES, "trace(s)", ap)
    args.caches = _list(args.caches, list(CACHES), "cache(s)", ap)
    try:
        tiers = [int(x) for x in args.tier_blocks.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--tier-blocks must be comma-separated whole numbers, got {args.tier_blocks!r}")
    if not tiers or min(tiers) < 1:
        ap.error("--tier-blocks must give sizes >= 1")
    if min(args.block_size, args.conversations, args.turns, args.prompt_blocks, args.repeats, args.engine_turns,
           args.engine_pool_tokens, args.engine_tier_blocks) < 1:
        ap.error("--block-size, --conversations, --turns, --prompt-blocks, --repeats and the --engine-* sizes "
                 "must be >= 1")
    report = {"machine": machine_line(), "seed": args.seed, "hit_rate": hit_rates(args, tiers)}
    if args.model != "none":
        if args.engine_conversations > 0:
            report["engine"] = engine_run(args)
        report["time_per_block"] = block_times(args)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print_report(report, args)
    return 0


def print_report(report: dict, args: argparse.Namespace) -> None:
    load = " load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    h = report["hit_rate"]
    print(f"CPU offload tier, pool {h['num_blocks']:,} blocks of {h['block_size']} ({h['capacity_tokens']:,} tokens), "
          f"seed {report['seed']}  ({report['machine']},{load})")  # fmt: skip
    for kind, r in h["traces"].items():
        print(f"\ntrace {kind}: {args.conversations} conversations x {args.turns} turns, {r['requests']} requests, "
              f"{r['prompt_tokens']:,} prompt tokens")  # fmt: skip
        print_table(
            ["cache", "tier blocks", "tier tokens", "hit rate", "pool hits", "tier hits", "x no tier",
             "stored", "loaded", "dropped", "s"],
            [[x["cache"], f"{x['tier_blocks']:,}", f"{x['tier_blocks'] * h['block_size']:,}", f"{x['hit_rate']:.1%}",
              f"{x['pool_hit_rate']:.1%}", f"{x['tier_hit_rate']:.1%}", f"{x['gain']:.1f}", f"{x['stored']:,}",
              f"{x['loaded']:,}", f"{x['dropped']:,}", f"{x['seconds']:.1f}"] for x in r["runs"]],
        )  # fmt: skip
    e = report.get("engine")
    if e is not None:
        print(f"\nengine: {e['model']}, {e['cache']} cache, round-robin chats, {e['requests']} requests one at a time, "
              f"{e['prompt_tokens']:,} prompt tokens, pool {e['pool_blocks']} blocks of {h['block_size']}; same first "
              f"tokens with and without the tier: {e['same_first_tokens']}")  # fmt: skip
        print_table(
            ["tier blocks", "hit rate", "tier hits", "TTFT mean ms", "p50 ms", "p90 ms", "s"],
            [[f"{x['tier_blocks']:,}", f"{x['hit_rate']:.1%}", f"{x['tier_hit_rate']:.1%}",
              f"{1e3 * x['ttft_mean']:.1f}", f"{1e3 * x['ttft_p50']:.1f}", f"{1e3 * x['ttft_p90']:.1f}",
              f"{x['seconds']:.1f}"] for x in e["runs"]],
        )  # fmt: skip
    t = report.get("time_per_block")
    if t is None:
        return
    print(f"\ntime per block: {t['model']} ({t['device']}, {t['dtype']}), {t['cache']} cache, a prompt of "
          f"{t['prompt_blocks']} blocks + 1 token, {t['bytes_per_block']:,} bytes of K/V per block, best of "
          f"{args.repeats}")  # fmt: skip
    print_table(
        ["case", "TTFT ms", "ms per block"],
        [["miss (recompute every block)", f"{1e3 * t['ttft']['miss']:.1f}", f"{t['recompute_ms_per_block']:.3f}"],
         ["pool hit", f"{1e3 * t['ttft']['pool']:.1f}", "-"],
         ["tier hit (copy every block back)", f"{1e3 * t['ttft']['tier']:.1f}", f"{t['copy_back_ms_per_block']:.3f}"],
         ["copy pool -> host alone", "-", f"{t['save_ms_per_block']:.3f}"],
         ["copy host -> pool alone", "-", f"{t['load_ms_per_block']:.3f}"]],
    )  # fmt: skip
    ratio = t["recompute_ms_per_block"] / max(t["copy_back_ms_per_block"], 1e-9)
    print(f"recompute / copy-back per block: {ratio:.0f}x", file=sys.stdout)

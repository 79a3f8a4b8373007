"""``minikv bench evict``: eviction policies against Belady's offline optimum, no model.

Each seeded trace is replayed (:func:`minikv.workloads.replay`: ``match`` ->
``allocate`` -> ``insert`` -> ``release``, one request at a time) through
each cache (block hash, radix) under each eviction policy, in a pool of
``--capacity-tokens`` (default 32k tokens, 2,048 blocks of 16). Reported per
run: hit tokens, hit rate, % of the infinite cache's ideal (whole blocks),
% of Belady's offline optimum at the same capacity
(:func:`minikv.workloads.belady_hit_tokens`; the prefix-tree version,
leaves only, gives the same hits and is checked to), evictions, seconds.

Traces: ``multi-turn`` (``--conversations`` x ``--turns`` chats interleaved
at random), ``multi-turn-rr`` (the same in rounds: each conversation comes
back after all the others, LRU's worst case), ``multi-turn-long`` (random
interleaving, user and reply turns 8x longer), and the other kinds of
:data:`minikv.workloads.TRACE_KINDS` with ``--requests`` prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

from tqdm import tqdm

from minikv.bench.common import machine_line, print_table
from minikv.prefix import BlockHashCache, PrefixCache, RadixCache
from minikv.prefix.policies import EVICTION_POLICIES
from minikv.workloads import (
    TRACE_KINDS,
    Trace,
    belady_hit_tokens,
    belady_tree_hit_tokens,
    ideal_hit_tokens,
    make_trace,
    multi_turn_trace,
    percent_of_optimum,
    replay,
)

CACHES: dict[str, Callable[..., PrefixCache]] = {
    "hash": lambda nb, bs, policy: BlockHashCache(nb, bs, hash_fn="xxh3_128", policy=policy),
    "radix": lambda nb, bs, policy: RadixCache(nb, bs, policy=policy),
}
CHAT_TRACES = ("multi-turn", "multi-turn-rr", "multi-turn-long")
DEFAULT_TRACES = (*CHAT_TRACES, "few-shot", "skewed")


def build_trace(kind: str, args: argparse.Namespace) -> Trace:
    """The trace of one kind at the sizes the arguments give."""
    if kind in CHAT_TRACES:
        kw: dict = {"seed": args.seed, "vocab": args.vocab}
        if kind == "multi-turn-rr":
            kw["interleave"] = "round-robin"
        if kind == "multi-turn-long":
            kw.update(user_len=(128, 512), reply_len=(256, 1024))
        return multi_turn_trace(args.conversations, args.turns, **kw)
    return make_trace(kind, args.requests, vocab=args.vocab, seed=args.seed)


def names(text: str, choices: list[str], what: str, ap: argparse.ArgumentParser) -> list[str]:
    got = [k.strip() for k in text.split(",") if k.strip()]
    if got == ["all"]:
        return choices
    bad = [k for k in got if k not in choices]
    if bad or not got:
        ap.error(f"unknown {what} {', '.join(map(repr, bad)) or '(none given)'}; choose from {', '.join(choices)}")
    return got


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="minikv bench evict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    kinds = [*CHAT_TRACES, *TRACE_KINDS]
    ap.add_argument("--traces", default=",".join(DEFAULT_TRACES),
                    help=f"comma-separated, of: {', '.join(kinds)} (or 'all'; default: %(default)s)")
    ap.add_argument("--policies", default=",".join(EVICTION_POLICIES),
                    help="comma-separated eviction policies (default: %(default)s)")
    ap.add_argument("--caches", default=",".join(CACHES), help="comma-separated: hash, radix (default: both)")
    ap.add_argument("--capacity-tokens", type=int, default=32 * 1024, help="pool size in tokens (default 32768)")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--conversations", type=int, default=200, help="multi-turn traces: conversations (200)")
    ap.add_argument("--turns", type=int, default=8, help="multi-turn traces: turns each (8)")
    ap.add_argument("--requests", type=int, default=1600, help="other traces: prompts (1600)")
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = ap.parse_args(argv)  # fmt: skip
    traces = names(args.traces, kinds, "trace(s)", ap)
    policies = names(args.policies, list(EVICTION_POLICIES), "policy(ies)", ap)
    caches = names(args.caches, list(CACHES), "cache(s)", ap)
    if min(args.block_size, args.conversations, args.turns, args.requests) < 1:
        ap.error("--block-size, --conversations, --turns and --requests must be >= 1")
    bs = args.block_size
    nb = args.capacity_tokens // bs

    built = {kind: build_trace(kind, args) for kind in traces}
    for kind, trace in built.items():
        need = max(-(-len(t) // bs) for t in trace)
        if nb < need:
            print(f"error: --capacity-tokens {args.capacity_tokens} ({nb} blocks of {bs}) is too small for trace "
                  f"{kind!r}: its longest prompt needs {need} blocks; give at least {need * bs}", file=sys.stderr)
            return 2
    bar = tqdm(total=len(traces) * (1 + len(caches) * len(policies)), desc="bench evict", unit="run",
               disable=args.no_progress, file=sys.stderr, leave=False)  # fmt: skip
    report: dict = {"machine": machine_line(), "capacity_tokens": nb * bs, "num_blocks": nb, "block_size": bs,
                    "seed": args.seed, "traces": {}}  # fmt: skip
    for kind, trace in built.items():
        tokens = sum(map(len, trace))
        ideal = sum(ideal_hit_tokens(trace, block_size=bs))
        opt = belady_hit_tokens(trace, nb, bs)
        if belady_tree_hit_tokens(trace, nb, bs) != opt:  # see minikv.workloads.belady: they agree
            raise AssertionError(f"Belady's block and tree optima differ on trace {kind!r}")
        bar.update()
        rows = []
        for cache_name in caches:
            for policy in policies:
                bar.set_postfix_str(f"{kind} {cache_name} {policy}")
                cache = CACHES[cache_name](nb, bs, policy)
                t0 = time.perf_counter()
                hits = sum(replay(cache, trace))
                rows.append({"cache": cache_name, "policy": policy, "hit_tokens": hits,
                             "hit_rate": hits / tokens, "of_ideal": percent_of_optimum(hits, ideal),
                             "of_belady": percent_of_optimum(hits, sum(opt)),
                             "evictions": cache.stats().evictions, "seconds": time.perf_counter() - t0})  # fmt: skip
                bar.update()
        report["traces"][kind] = {"requests": len(trace), "prompt_tokens": tokens, "ideal_hit_tokens": ideal,
                                  "belady_hit_tokens": sum(opt), "runs": rows}  # fmt: skip
    bar.close()
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    load = " load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    print(f"eviction policies vs Belady, pool {nb:,} blocks of {bs} ({nb * bs:,} tokens), seed {args.seed}  "
          f"({report['machine']},{load})")  # fmt: skip
    for kind, r in report["traces"].items():
        print(f"\ntrace {kind}: {r['requests']} requests, {r['prompt_tokens']:,} prompt tokens; infinite cache hits "
              f"{r['ideal_hit_tokens'] / r['prompt_tokens']:.1%}, Belady at this size "
              f"{r['belady_hit_tokens'] / r['prompt_tokens']:.1%} "
              f"({percent_of_optimum(r['belady_hit_tokens'], r['ideal_hit_tokens']):.1f}% of ideal)")  # fmt: skip
        print_table(
            ["cache", "policy", "hit tokens", "hit rate", "% of ideal", "% of Belady", "evictions", "s"],
            [[x["cache"], x["policy"], f"{x['hit_tokens']:,}", f"{x['hit_rate']:.1%}", f"{x['of_ideal']:.1f}",
              f"{x['of_belady']:.1f}", f"{x['evictions']:,}", f"{x['seconds']:.2f}"] for x in r["runs"]],
        )  # fmt: skip
        best = max(r["runs"], key=lambda x: x["hit_tokens"])
        print(f"best: {best['cache']} {best['policy']} at {best['of_belady']:.1f}% of Belady")
    return 0

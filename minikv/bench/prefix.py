"""``minikv bench prefix``: bookkeeping cost and hit rate of the hash and radix prefix caches.

Each seeded synthetic trace (``minikv.workloads``) is replayed through each
cache the way the engine drives it, one request at a time, with no model:
``match`` -> ``allocate`` the rest -> ``insert`` (full blocks; the partial last
block too at radix page size 1) -> ``release``. Reported per cache:

- cost: seconds in each step over the whole trace, in microseconds per
  prompt token, from the fastest of ``--repeats`` replays (a fresh cache
  each); ``/ sha256`` and ``/ xxh3`` divide a cache's total by the block-hash
  cache's (radix / hash is the ratio to read);
- hit rate: hit tokens over prompt tokens, beside the ideal of an infinite
  cache: whole blocks for the block-granular caches, token-level for radix
  page size 1 (``minikv.workloads.ideal_hit_tokens``).

By default the pool holds every block the trace allocates, so nothing is
evicted and every hit rate should equal its ideal; ``--num-blocks`` makes the
pool tight, and eviction policy then decides what hits.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable

from minikv.bench.common import machine_line, print_table
from minikv.prefix import BlockHashCache, PrefixCache, RadixCache
from minikv.workloads import (
    PHASES,
    TRACE_KINDS,
    VOCAB,
    blocks_to_fit,
    ideal_hit_tokens,
    make_trace,
    replay,
)

DEFAULT_TRACES = ("system", "multi-turn", "few-shot")


def caches(block_size: int) -> list[tuple[str, Callable[[int], PrefixCache], bool]]:
    """(name, constructor from num_blocks, token-granular?) of each cache compared."""
    bs = block_size
    return [
        ("hash sha256", lambda nb: BlockHashCache(nb, bs, hash_fn="sha256"), False),
        ("hash xxh3_128", lambda nb: BlockHashCache(nb, bs, hash_fn="xxh3_128"), False),
        (f"radix page {bs}", lambda nb: RadixCache(nb, bs), False),
        ("radix page 1", lambda nb: RadixCache(nb, bs, page_size=1), True),
    ]


def time_replay(
    make: Callable[[], PrefixCache], trace: list[list[int]], repeats: int
) -> tuple[dict[str, float], list[int], int]:
    """Phase times of the fastest of ``repeats`` replays, its hits and its evictions."""
    best: dict[str, float] | None = None
    hits: list[int] = []
    evictions = 0
    for _ in range(repeats):
        cache = make()
        times: dict[str, float] = {}
        gc.collect()
        gc.disable()  # as timeit does: a collection mid-run would be charged to one cache
        try:
            hits = replay(cache, trace, timings=times)
        finally:
            gc.enable()
        if best is None or sum(times.values()) < sum(best.values()):
            best, evictions = times, cache.stats().evictions
    assert best is not None
    return best, hits, evictions


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="minikv bench prefix", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    ap.add_argument("--requests", type=int, default=2000, help="requests a trace (default 2000)")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="replays per cache; the fastest counts")
    ap.add_argument(
        "--traces", default=",".join(DEFAULT_TRACES),
        help=f"comma-separated, of: {', '.join(TRACE_KINDS)} (or 'all'; default: %(default)s)",
    )  # fmt: skip
    ap.add_argument(
        "--num-blocks", type=int, default=None,
        help="pool size in blocks, the same for every trace (default: enough to never evict)",
    )  # fmt: skip
    ap.add_argument("--vocab", type=int, default=VOCAB)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    kinds = [k.strip() for k in args.traces.split(",")]
    if kinds == ["all"]:
        kinds = list(TRACE_KINDS)
    bad = [k for k in kinds if k not in TRACE_KINDS]
    if bad or args.requests < 1 or args.repeats < 1 or args.block_size < 1:
        ap.error(
            f"unknown trace(s) {', '.join(map(repr, bad))}; choose from {', '.join(TRACE_KINDS)}"
            if bad
            else "--requests, --repeats and --block-size must be >= 1"
        )
    bs = args.block_size
    load = ""
    if hasattr(os, "getloadavg"):  # the machine may be shared: say how busy it was
        load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    print(
        f"prefix cache bookkeeping, {args.requests} requests a trace, block size {bs}, "
        f"best of {args.repeats}  ({machine_line()}{load})"
    )
    for kind in kinds:
        trace = make_trace(kind, args.requests, vocab=args.vocab, seed=args.seed)
        tokens = sum(map(len, trace))
        ideal_blk = ideal_hit_tokens(trace, block_size=bs)
        ideal_tok = ideal_hit_tokens(trace)
        fit = blocks_to_fit(trace, bs)
        nb = fit if args.num_blocks is None else args.num_blocks
        need = max(-(-len(t) // bs) for t in trace) + 1
        if nb < need:
            print(
                f"error: --num-blocks {nb} is too small for trace {kind!r}: its longest prompt "
                f"needs {need} blocks of {bs} tokens (with a radix copy source); give at least "
                f"{need}",
                file=sys.stderr,
            )
            return 2
        print(
            f"\ntrace {kind}: {len(trace)} requests, {tokens:,} prompt tokens (mean "
            f"{tokens / len(trace):.0f}, max {max(map(len, trace))}), vocab {args.vocab}, seed "
            f"{args.seed}; pool {nb:,} blocks"
            + (" (fits: no eviction)" if nb >= fit else f" (tight: {fit:,} would fit)")
        )
        print(
            f"ideal hit rate of an infinite cache: {sum(ideal_blk) / tokens:.1%} in whole blocks, "
            f"{sum(ideal_tok) / tokens:.1%} token-level"
        )
        results = []
        for name, make, token_level in caches(bs):
            times, hits, evictions = time_replay(lambda: make(nb), trace, args.repeats)
            results.append((name, times, hits, evictions, ideal_tok if token_level else ideal_blk))
        us = lambda t: f"{t / tokens * 1e6:.3f}"  # noqa: E731
        total = {name: sum(times.values()) for name, times, *_ in results}
        rows = [
            [
                name,
                *(us(times[p]) for p in PHASES),
                us(total[name]),
                f"{total[name] / total['hash sha256']:.2f}x",
                f"{total[name] / total['hash xxh3_128']:.2f}x",
                f"{sum(hits) / tokens:.1%}",
                f"{sum(ideal) / tokens:.1%}" + (" tok" if ideal is ideal_tok else " blk"),
                f"{evictions:,}",
            ]
            for name, times, hits, evictions, ideal in results
        ]
        print_table(
            ["cache (us/token)", *PHASES, "total", "/ sha256", "/ xxh3", "hit rate", "ideal",
             "evictions"],
            rows,
        )  # fmt: skip
        equal = [name for name, _, hits, _, ideal in results if hits == ideal]
        below = [
            f"{name} {sum(hits) / tokens:.1%} < {sum(ideal) / tokens:.1%}"
            for name, _, hits, _, ideal in results
            if hits != ideal
        ]
        if not below:
            print("hit rates equal the ideal: every request hit what an infinite cache would")
        else:
            print(
                "hit rates below the ideal: " + "; ".join(below)
                + (f" (equal: {', '.join(equal)})" if equal else "")
            )  # fmt: skip
    return 0

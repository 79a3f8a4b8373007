"""Benchmarks: each case runs minikv beside a baseline in the same process and prints ratios.

``minikv bench generate`` (or ``python -m minikv.bench generate``).
"""

from __future__ import annotations

import sys

CASES = {
    "generate": ("minikv.bench.generate", "prefill and decode tokens/s, minikv vs transformers"),
    "batch": ("minikv.bench.batch", "batched decode tokens/s: paged vs contiguous KV vs transformers"),
    "ttft": ("minikv.bench.ttft", "TTFT of a prefix-cache miss, a hit and the suffix alone, minikv vs transformers"),
    "cascade": ("minikv.bench.cascade", "decode over a shared prefix: shared-prefix (cascade) attention on vs off"),
    "schedule": ("minikv.bench.schedule", "online engine under real-time arrivals: waves vs continuous, chunking, policies"),
    "prefix": ("minikv.bench.prefix", "prefix cache bookkeeping us/token and hit rate vs ideal: hash vs radix"),
    "evict": ("minikv.bench.evict", "eviction policies (LRU, LFU, SLRU, shallow, duel) vs Belady's optimum, no model"),
    "offload": ("minikv.bench.offload", "CPU offload tier: multi-turn hit rate with and without it, recompute vs copy-back per block"),
    "serve": ("minikv.bench.serve", "any OpenAI-compatible server (minikv, vLLM, SGLang): TTFT, TPOT, throughput, cached tokens"),
    "serve-overhead": ("minikv.bench.serve_overhead", "minikv serve vs the offline engine on the same requests: tokens/s"),
    "leak": ("minikv.bench.leak", "timing side channel: attack AUC vs prefix length, secret recovery, salts, LPM order"),
    "collisions": ("minikv.bench.collisions", "truncated block hashes on a long trace: wrong hits and tokens vs sha256, verify"),
    "attention": ("minikv.bench.attention", "GPU: paged decode / prefill attention, Triton vs PyTorch, GB/s and % of peak"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in CASES:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown benchmark {argv[0]!r}", file=sys.stderr)
        print("usage: minikv bench CASE [options]   (CASE --help for options)\n\ncases:")
        for name, (_, what) in CASES.items():
            print(f"  {name:<14} {what}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    import importlib

    return importlib.import_module(CASES[argv[0]][0]).run(argv[1:])

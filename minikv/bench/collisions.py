"""``minikv bench collisions``: what a truncated block hash costs on a long trace, next to sha256 and verify.

A trace of ``--requests`` prompts (multi-turn chats, few-shot prompts and
Zipf-popular documents, interleaved) is replayed through a block-hash cache
of ``--num-blocks`` blocks of 16 without a model
(:func:`minikv.security.collisions.count_collisions`), once per hash:
sha256 (minikv's default: trusted, no token check), its first 32 and 16
bits without the token check, and 16 bits with ``verify`` (every hit
compares the block's tokens). Columns: hit rate; wrong hit blocks and the
prompt tokens served from another prefix's K/V; requests hurt; how many of
those minikv's insert refused afterwards (``caught``) and how many went
unnoticed (``silent``); hits that named one block twice; collisions
``verify`` turned into misses; the ``C / 2**b`` arithmetic for comparison.

Then ``--engine-requests`` prompts through the engine itself (tiny-llama,
greedy, 8 tokens each) with an 8- and a 16-bit hash and no token check,
against the same prompts without a cache: outputs that differ, requests
that failed, and KV blocks still held once idle.
"""

from __future__ import annotations

import argparse
import random
import time

from minikv.bench.common import machine_line, print_table


def mixed_trace(n: int, vocab: int, seed: int) -> list[list[int]]:
    from minikv.workloads import make_trace

    third = -(-n // 3)
    trace = (make_trace("multi-turn", third, vocab=vocab, seed=seed) + make_trace("few-shot", third, vocab=vocab, seed=seed + 1)
             + make_trace("skewed", third, vocab=vocab, seed=seed + 2))[:n]
    random.Random(seed).shuffle(trace)
    return trace


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="minikv bench collisions", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--num-blocks", type=int, default=4096, help="cache size in blocks of 16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine-requests", type=int, default=300, help="0 skips the engine part")
    args = ap.parse_args(argv)

    from minikv.security.collisions import count_collisions

    trace = mixed_trace(args.requests, 49152, args.seed)
    blocks = sum(len(t) // 16 for t in trace)
    print(f"trace: {len(trace):,} requests, {sum(map(len, trace)):,} prompt tokens ({blocks:,} full blocks), "
          f"cache of {args.num_blocks:,} blocks of 16, seed {args.seed} ({machine_line()})")
    rows = []
    for bits, verify in ((256, None), (32, False), (16, False), (16, True)):
        t0 = time.perf_counter()
        c = count_collisions(trace, args.num_blocks, 16, bits, verify)
        rows.append([c.name, "yes" if c.verify else "no", f"{c.hit_rate:.1%}", f"{c.wrong_blocks:,}",
                     f"{c.wrong_tokens:,}", f"{c.requests_hurt:,}", f"{c.caught_at_insert:,}", f"{c.silent:,}",
                     f"{c.repeated_blocks:,}", f"{c.detected:,}", f"{c.expected:.3g}", f"{time.perf_counter() - t0:.0f}"])
    print_table(["hash", "verify", "hit rate", "wrong blocks", "wrong tokens", "requests hurt", "caught", "silent",
                 "block twice", "collisions seen", "C/2^b", "s"], rows)
    if args.engine_requests:
        _engine(args)
    return 0


def _engine(args) -> None:
    from minikv import LLM, SamplingParams
    from minikv.security.collisions import truncated_sha256

    trace = [t[:400] for t in mixed_trace(args.engine_requests, 259, args.seed)]
    params = SamplingParams(max_tokens=8, temperature=0.0)
    ref = LLM("tiny-llama", device="cpu")
    want = [ref.generate({"prompt_token_ids": t}, params)[0].token_ids for t in trace]
    rows = []
    for bits in (8, 16):
        llm = LLM("tiny-llama", device="cpu", prefix_cache="hash", num_blocks=1024,
                  prefix_cache_options={"hash_fn": truncated_sha256(bits), "verify": False})
        wrong = failed = 0
        errors: dict[str, int] = {}
        for t, w in zip(trace, want):
            try:
                wrong += llm.generate({"prompt_token_ids": t}, params)[0].token_ids != w
            except Exception as e:  # noqa: BLE001 - counted and named below
                failed += 1
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
        held = llm.cache_stats().num_used
        rows.append([f"sha256[:{bits} bits]", str(len(trace)), str(wrong), str(failed),
                     ", ".join(f"{k} x{v}" for k, v in errors.items()) or "-", str(held)])
    print(f"\nthe engine (tiny-llama, pool of 1,024 blocks, verify off, {len(trace)} prompts of <= 400 tokens, "
          "8 greedy tokens each) against no cache:")
    print_table(["hash", "requests", "wrong outputs", "failed", "errors", "blocks held when idle"], rows)

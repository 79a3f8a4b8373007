"""``minikv bench ttft``: time to first token of a prefix-cache miss, a hit, and the suffix alone.

A shared system prompt of ``--prefix-tokens`` tokens, then a stream of
requests that each add a unique ``--suffix-tokens`` question:

- miss: the whole prompt is computed (the cache was just reset);
- hit: the system prompt's blocks come from the cache, only the rest is computed;
- suffix alone: the question by itself, no prefix at all (the floor a hit can reach).

minikv runs with ``prefix_cache=--cache``; transformers runs the same three
cases with a ``DynamicCache`` of the prefix computed once and copied for each
hit (what a user of plain transformers would do by hand). Best of ``--repeats``;
each repeat uses a new question so only the prefix can hit. Also prints the
hit rate over the stream.
"""

from __future__ import annotations

import argparse
import copy

import torch

from minikv.bench.common import best_of, machine_line, print_table, prompt_ids


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="minikv bench ttft", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prefix-tokens", type=int, default=1024)
    ap.add_argument("--suffix-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", default="hash", choices=["hash", "radix"])
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--stream", type=int, default=16, help="requests in the hit-rate stream")
    ap.add_argument("--device", default=None)
    ap.add_argument("--attention", default="auto", choices=["auto", "torch", "triton"],
                    help="minikv's paged attention kernels (auto: Triton on CUDA, torch on CPU)")
    ap.add_argument("--no-transformers", action="store_true", help="skip the transformers columns")
    args = ap.parse_args(argv)

    from minikv import LLM, SamplingParams

    llm = LLM(args.model, prefix_cache=args.cache, block_size=args.block_size, device=args.device,
              attention=args.attention)
    prefix = prompt_ids(llm.tokenizer, args.prefix_tokens)
    counter = iter(range(10**6))

    def question() -> list[int]:
        return prompt_ids(llm.tokenizer, args.suffix_tokens, salt=f"Question {next(counter)}: ")

    one = SamplingParams(max_tokens=1, temperature=0.0)
    ttfts: dict[str, list[float]] = {"miss": [], "hit": [], "suffix": []}

    def timed(case: str, ids: list[int]) -> None:
        out = llm.generate({"prompt_token_ids": ids}, one)[0]
        ttfts[case].append(out.metrics.ttft)

    hits = []
    for i in range(args.repeats + 1):  # the first round warms up and is not counted
        llm.reset_prefix_cache()
        timed("miss", prefix + question())  # computes (and caches) the prefix
        q = question()
        out = llm.generate({"prompt_token_ids": prefix + q}, one)[0]
        ttfts["hit"].append(out.metrics.ttft)
        hits.append(out.num_cached_tokens)
        timed("suffix", q)
        if i == 0:
            ttfts = {k: [] for k in ttfts}
    llm.reset_prefix_cache()  # the hit rate of a stream of args.stream requests sharing the prefix
    llm.generate([{"prompt_token_ids": prefix + question()} for _ in range(args.stream)], one)
    stats = llm.cache_stats()
    best = {k: min(v) for k, v in ttfts.items()}

    hf_best: dict[str, float] = {}
    if not args.no_transformers:
        from transformers import AutoModelForCausalLM, DynamicCache

        hf = AutoModelForCausalLM.from_pretrained(llm.path, dtype=llm.dtype).to(llm.device).eval()
        dev = llm.device

        def fwd(ids: list[int], past=None) -> None:
            with torch.inference_mode():
                hf(torch.tensor([ids], device=dev), past_key_values=past, use_cache=True, logits_to_keep=1)

        with torch.inference_mode():
            prefix_cache = DynamicCache(config=hf.config)
            hf(torch.tensor([prefix], device=dev), past_key_values=prefix_cache, use_cache=True, logits_to_keep=1)
        fwd(prefix + question()), fwd(question(), copy.deepcopy(prefix_cache))  # warm-up
        hf_best["miss"] = best_of(lambda: fwd(prefix + question()), args.repeats)
        hf_best["hit"] = best_of(lambda: fwd(question(), copy.deepcopy(prefix_cache)), args.repeats)
        hf_best["suffix"] = best_of(lambda: fwd(question()), args.repeats)

    n_p, n_s = len(prefix), args.suffix_tokens
    labels = {"miss": f"miss ({n_p + n_s:,} tokens)", "hit": f"hit ({hits[-1]:,} cached + {n_p + n_s - hits[-1]} new)",
              "suffix": f"suffix alone ({n_s} tokens)"}
    headers = ["case", "minikv ms"] + (["transformers ms", "minikv / transformers"] if hf_best else [])
    rows = []
    for k in ("miss", "hit", "suffix"):
        row = [labels[k], f"{best[k] * 1e3:.1f}"]
        if hf_best:
            row += [f"{hf_best[k] * 1e3:.1f}", f"{best[k] / hf_best[k]:.2f}x"]
        rows.append(row)
    print(f"model {args.model}, attention {llm.attention}, prefix_cache={args.cache}, block size {args.block_size}, best of {args.repeats} "
          f"({machine_line()})")
    print_table(headers, rows)
    print(f"hit / suffix alone: {best['hit'] / best['suffix']:.2f}x   miss / hit: {best['miss'] / best['hit']:.1f}x   "
          f"hit rate over a stream of {args.stream}: {stats.hit_rate:.1%} ({stats.hit_tokens:,} of {stats.query_tokens:,} "
          "prompt tokens)")
    return 0

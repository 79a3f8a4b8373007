"""``minikv bench generate``: prefill and decode speed of minikv vs transformers, same model, same process.

Prefill: the time to the first token of a long prompt (default 1024 tokens).
Decode: tokens per second at batch 1, measured as the time of generating
``1 + N`` tokens minus the time of generating 1, divided by N.
Both engines load the same checkpoint directory and use greedy decoding.
Where minikv's decode steps replay CUDA graphs (CUDA, Triton kernels), one
more row times the same engine eager, for the graphs' own ratio.
"""

from __future__ import annotations

import argparse

import torch

from minikv.bench.common import best_of, machine_line, print_table, prompt_ids


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="minikv bench generate", description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompt-tokens", type=int, default=1024)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--attention", default="auto", choices=["auto", "torch", "triton"],
                    help="minikv's paged attention kernels (auto: Triton on CUDA, torch on CPU)")
    args = ap.parse_args(argv)

    from transformers import AutoModelForCausalLM

    from minikv import LLM, SamplingParams

    llm = LLM(args.model, device=args.device, attention=args.attention)
    hf = AutoModelForCausalLM.from_pretrained(llm.path, dtype=llm.dtype).to(llm.device).eval()
    long_ids = prompt_ids(llm.tokenizer, args.prompt_tokens)
    short_ids = prompt_ids(llm.tokenizer, 32)
    n = args.decode_tokens

    def mk(ids: list[int], new: int):
        return lambda: llm.generate({"prompt_token_ids": ids}, SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True))

    def hf_gen(ids: list[int], new: int):
        x = torch.tensor([ids], device=llm.device)
        def go():
            with torch.inference_mode():
                hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, min_new_tokens=new,
                            do_sample=False, pad_token_id=hf.config.eos_token_id)
        return go

    mk(short_ids, 4)(), hf_gen(short_ids, 4)()  # warm-up
    r = args.repeats
    pre_m = best_of(mk(long_ids, 1), r)
    pre_h = best_of(hf_gen(long_ids, 1), r)
    dec_m = (best_of(mk(short_ids, n + 1), r) - best_of(mk(short_ids, 1), r)) / n
    dec_h = (best_of(hf_gen(short_ids, n + 1), r) - best_of(hf_gen(short_ids, 1), r)) / n

    runner = llm.llm_engine.runner
    graphs = runner.graphs if runner is not None else None
    extra = []
    if graphs is not None:  # decode steps replayed CUDA graphs: the same engine eager, for the ratio
        runner.graphs = None
        try:
            dec_e = (best_of(mk(short_ids, n + 1), r) - best_of(mk(short_ids, 1), r)) / n
        finally:
            runner.graphs = graphs
        extra = [["decode tokens/s, eager (no CUDA graphs)", f"{1 / dec_e:.1f}", "",
                  f"graphs: {dec_e / dec_m:.2f}x eager"]]

    p = len(long_ids)
    print(f"model {args.model}  attention {llm.attention}  prompt {p} tokens, decode {n} tokens at batch 1, best of {r}  ({machine_line()})")
    print_table(
        ["metric", "minikv", "transformers", "minikv / transformers"],
        [
            ["prefill tokens/s", f"{p / pre_m:,.0f}", f"{p / pre_h:,.0f}", f"{pre_h / pre_m:.2f}x"],
            ["prefill time (ms)", f"{pre_m * 1e3:.0f}", f"{pre_h * 1e3:.0f}", ""],
            ["decode tokens/s", f"{1 / dec_m:.1f}", f"{1 / dec_h:.1f}", f"{dec_h / dec_m:.2f}x"],
            ["decode ms/token", f"{dec_m * 1e3:.1f}", f"{dec_h * 1e3:.1f}", ""],
            *extra,
        ],
    )
    return 0

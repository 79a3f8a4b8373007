"""``minikv bench batch``: batched decode speed, paged vs contiguous KV vs transformers, same model, same process.

A batch of prompts of mixed lengths (spread evenly over ``--min-prompt``..``--max-prompt``
tokens) generates ``--decode-tokens`` tokens each, greedy, ignoring EOS:

- minikv paged: one KV pool in blocks of ``--block-size``, gathered through block tables;
- minikv contiguous: one padded ``[batch, kv_heads, max_len, head_dim]`` cache per layer;
- transformers: ``generate`` on the left-padded batch with an attention mask.

Decode tokens/s = ``batch * N / (time(1 + N new tokens) - time(1 new token))``,
best of ``--repeats`` interleaved runs each, so prefill is not counted. Both minikv layouts
get the same KV-cache budget; when the padded rows of the contiguous layout do
not all fit in it, that layout runs the batch in waves (paging's memory win).
"""

from __future__ import annotations

import argparse

import torch

from minikv.bench.common import best_of, machine_line, print_table, prompt_ids

MiB = 1 << 20


def prompt_lengths(batch: int, shortest: int, longest: int) -> list[int]:
    """``batch`` lengths spread evenly from ``shortest`` to ``longest``."""
    if batch == 1:
        return [longest]
    return [shortest + (longest - shortest) * i // (batch - 1) for i in range(batch)]


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="minikv bench batch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--min-prompt", type=int, default=20)
    ap.add_argument("--max-prompt", type=int, default=200)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--kv-cache-memory", type=float, default=None,
                    help="KV-cache budget in MiB, the same for both layouts (default: LLM's default)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--attention", default="auto", choices=["auto", "torch", "triton"],
                    help="minikv's paged attention kernels (auto: Triton on CUDA, torch on CPU)")
    args = ap.parse_args(argv)

    from transformers import AutoModelForCausalLM

    from minikv import LLM, SamplingParams

    memory = None if args.kv_cache_memory is None else int(args.kv_cache_memory * MiB)
    paged = LLM(args.model, device=args.device, kv_layout="paged", block_size=args.block_size, kv_cache_memory=memory,
                attention=args.attention)
    contiguous = LLM(args.model, device=args.device, kv_layout="contiguous", kv_cache_memory=memory)
    hf = AutoModelForCausalLM.from_pretrained(paged.path, dtype=paged.dtype).to(paged.device).eval()
    tok = paged.tokenizer
    lengths = prompt_lengths(args.batch, args.min_prompt, args.max_prompt)
    prompts = [prompt_ids(tok, n, salt=f"{i}. ") for i, n in enumerate(lengths)]
    n, b, r = args.decode_tokens, len(prompts), args.repeats

    def minikv_gen(llm: LLM, new: int):
        params = SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True)
        return lambda: llm.generate([{"prompt_token_ids": p} for p in prompts], params)

    pad = hf.config.pad_token_id if hf.config.pad_token_id is not None else tok.eos_token_id
    width = max(lengths)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=paged.device)  # left padding
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=paged.device)

    def hf_gen(new: int):
        def go():
            with torch.inference_mode():
                return hf.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                   do_sample=False, pad_token_id=pad)
        return go

    engines = {"paged": lambda new: minikv_gen(paged, new), "contiguous": lambda new: minikv_gen(contiguous, new),
               "transformers": hf_gen}
    for make in engines.values():  # warm-up
        make(2)()
    prefill = {name: float("inf") for name in engines}
    full = dict(prefill)
    for _ in range(r):  # interleaved, so that a burst of load elsewhere hits every engine alike
        for name, make in engines.items():
            prefill[name] = min(prefill[name], best_of(make(1), 1))
            full[name] = min(full[name], best_of(make(n + 1), 1))
    decode = {name: (full[name] - prefill[name]) / (b * n) for name in engines}  # seconds per generated token

    same = [o.token_ids for o in minikv_gen(paged, n)()] == [o.token_ids for o in minikv_gen(contiguous, n)()]
    hf_tokens = hf_gen(n)()[:, width:].tolist()
    same_hf = sum(o.token_ids == t for o, t in zip(minikv_gen(paged, n)(), hf_tokens))

    longest = max(lengths) + n + 1
    rows = min(b, contiguous.kv_cache_memory // (longest * contiguous.kv_bytes_per_token))
    pool = paged.kv_pool
    need = sum(-(-(p + n + 1) // pool.block_size) for p in lengths)
    print(f"model {args.model}  paged attention {paged.attention}  batch {b}, prompts {min(lengths)}..{max(lengths)} tokens, decode {n} tokens each, "
          f"block size {args.block_size}, best of {r}  ({machine_line()})")
    print(f"KV budget {contiguous.kv_cache_memory / MiB:,.0f} MiB each: paged {pool.num_blocks} blocks, the batch "
          f"needs {need}{'' if need <= pool.num_blocks else ' (runs in waves)'}; contiguous {rows} rows of "
          f"{longest} tokens{'' if rows >= b else ' (runs in waves)'}")
    p, c, h = decode["paged"], decode["contiguous"], decode["transformers"]
    print_table(
        ["metric", "minikv paged", "minikv contiguous", "transformers", "paged / contiguous", "paged / transformers"],
        [
            ["decode tokens/s", f"{1 / p:,.1f}", f"{1 / c:,.1f}", f"{1 / h:,.1f}", f"{c / p:.2f}x", f"{h / p:.2f}x"],
            ["decode ms/step", f"{p * b * 1e3:.1f}", f"{c * b * 1e3:.1f}", f"{h * b * 1e3:.1f}", "", ""],
            ["prefill + 1 token (ms)", f"{prefill['paged'] * 1e3:.0f}", f"{prefill['contiguous'] * 1e3:.0f}",
             f"{prefill['transformers'] * 1e3:.0f}", f"{prefill['contiguous'] / prefill['paged']:.2f}x",
             f"{prefill['transformers'] / prefill['paged']:.2f}x"],
        ],
    )
    print(f"greedy tokens: paged == contiguous: {'yes' if same else 'NO'}; "
          f"paged == transformers for {same_hf}/{b} prompts")
    return 0

"""``minikv bench attention``: paged attention kernels on a GPU, Triton vs PyTorch, in the same run.

Decode (one new token per sequence), for every batch x context in
``--batches`` x ``--contexts``, with ``--kv-heads`` KV heads, ``--group`` query
heads per KV head, head dim ``--head-dim``, blocks of ``--block-size`` tokens
and a shuffled block table:

- ``triton``: :func:`~minikv.attention.triton_decode.triton_paged_decode_attention`,
  reading K/V through the block table in place (split-K chosen automatically);
- ``torch paged``: the engine's PyTorch path (:func:`~minikv.attention.paged.paged_decode_sdpa`:
  gather through the table, then one masked SDPA);
- ``torch ref``: :func:`~minikv.attention.torch_ref.paged_decode_attention`, the spec;
- ``sdpa contiguous``: SDPA on K/V already laid out ``[batch, Hkv, context, D]``
  (no paging, no gather): what a contiguous cache would cost.

Each decode row reports the time, the bytes moved (K/V read + q + output)
per second and that as a % of the card's peak HBM bandwidth (``--peak-gbs``,
or a table of known cards). Prefill over a cached prefix (``--prefills``,
``batch:prefix:new``) reports TFLOP/s of the Triton kernel beside the
PyTorch gather + SDPA path. On a machine without CUDA it says so and exits 2;
``--device cpu`` runs a tiny case under Triton's interpreter, only to check
that the benchmark itself works (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F

from minikv.bench.common import machine_line, print_table

PEAK_HBM_GBS = {"H200": 4800, "H100 SXM": 3350, "H100 PCIe": 2000, "H100": 3350, "A100-SXM4-80GB": 2039,
                "A100": 1555, "L40S": 864, "L4": 300, "A10": 600, "RTX 4090": 1008}
"""Peak memory bandwidth in GB/s by (a substring of) the device name, from the vendors' data sheets."""


def peak_gbs(device_name: str) -> float | None:
    """The card's peak HBM bandwidth in GB/s, or None for a card not in :data:`PEAK_HBM_GBS`."""
    for key, value in PEAK_HBM_GBS.items():
        if key.lower() in device_name.lower():
            return float(value)
    return None


def time_ms(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of one call of ``fn`` in ms (CUDA events on a GPU), after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def paged_case(lens: list[int], kv_heads: int, group: int, head_dim: int, block_size: int,
               dtype: torch.dtype, device: torch.device, seed: int = 0):
    """A pool holding one sequence per entry of ``lens`` in shuffled blocks, and its block tables."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    per_seq = [-(-n // block_size) for n in lens]
    num_blocks = sum(per_seq)
    shape = (num_blocks, block_size, kv_heads, head_dim)
    k_cache = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    v_cache = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    perm = torch.randperm(num_blocks, generator=g)
    tables = torch.full((len(lens), max(per_seq)), -1, dtype=torch.int32)
    at = 0
    for b, n in enumerate(per_seq):
        tables[b, :n] = perm[at:at + n].to(torch.int32)
        at += n
    return k_cache, v_cache, tables.to(device)


def bench_decode(batch: int, context: int, args, device: torch.device, dtype: torch.dtype) -> dict:
    """One decode row: every method's ms on the same pool, and the Triton kernel's bandwidth."""
    from minikv.attention.paged import gather_slots, paged_decode_sdpa
    from minikv.attention.torch_ref import paged_decode_attention
    from minikv.attention.triton_decode import triton_paged_decode_attention

    hkv, group, d, bs = args.kv_heads, args.group, args.head_dim, args.block_size
    k_cache, v_cache, tables = paged_case([context] * batch, hkv, group, d, bs, dtype, device)
    q = torch.randn(batch, hkv * group, d, device=device, dtype=dtype)
    lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    scale = d ** -0.5
    long_tables = tables.long()
    slots = gather_slots(long_tables, context, bs)
    valid = (torch.arange(context, device=device)[None, :] < lens[:, None])[:, None, None, :]
    k_contig = k_cache[long_tables.clamp(min=0)].flatten(1, 2)[:, :context].transpose(1, 2).contiguous()
    v_contig = v_cache[long_tables.clamp(min=0)].flatten(1, 2)[:, :context].transpose(1, 2).contiguous()
    qg = q.view(batch, hkv * group, 1, d)

    methods = {
        "triton": lambda: triton_paged_decode_attention(q, k_cache, v_cache, tables, lens, scale,
                                                        max_context_len=context),
        "torch paged": lambda: paged_decode_sdpa(q, k_cache, v_cache, slots, valid, scale),
        "torch ref": lambda: paged_decode_attention(q, k_cache, v_cache, long_tables, lens, scale),
        "sdpa contiguous": lambda: F.scaled_dot_product_attention(qg, k_contig, v_contig, scale=scale,
                                                                  enable_gqa=True),
    }
    want = methods["torch ref"]().float()
    err = (methods["triton"]().float() - want).abs().max().item()
    ms = {name: time_ms(fn, device, args.repeats) for name, fn in methods.items()}
    item = k_cache.element_size()
    moved = batch * context * hkv * d * 2 * item + 2 * q.numel() * item + tables.numel() * 4
    return {"batch": batch, "context": context, "ms": ms, "bytes": moved, "max_abs_err": err,
            "gbs": moved / (ms["triton"] * 1e-3) / 1e9}


def bench_prefill(batch: int, prefix: int, new: int, args, device: torch.device, dtype: torch.dtype) -> dict:
    """One prefill-over-prefix row: ``new`` tokens per sequence after ``prefix`` cached ones."""
    from minikv.attention.paged import gather_slots
    from minikv.attention.triton_prefill import triton_paged_attention

    hkv, group, d, bs = args.kv_heads, args.group, args.head_dim, args.block_size
    context = prefix + new
    k_cache, v_cache, tables = paged_case([context] * batch, hkv, group, d, bs, dtype, device, seed=1)
    q = torch.randn(batch * new, hkv * group, d, device=device, dtype=dtype)
    starts = torch.arange(0, batch * new + 1, new, dtype=torch.int32, device=device)
    lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    scale = d ** -0.5
    slots = gather_slots(tables.long(), context, bs)
    allowed = torch.ones(new, context, dtype=torch.bool, device=device).tril(diagonal=prefix)

    def torch_path() -> torch.Tensor:  # what the engine's PagedStep does for a prefix hit, per sequence
        out = torch.empty_like(q)
        for b in range(batch):
            kb = k_cache.flatten(0, 1).index_select(0, slots[b]).transpose(0, 1)[None]
            vb = v_cache.flatten(0, 1).index_select(0, slots[b]).transpose(0, 1)[None]
            qb = q[b * new:(b + 1) * new].transpose(0, 1)[None]
            o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=allowed, scale=scale, enable_gqa=True)
            out[b * new:(b + 1) * new] = o[0].transpose(0, 1)
        return out

    def triton_path() -> torch.Tensor:
        return triton_paged_attention(q, k_cache, v_cache, tables, starts, lens, scale, max_query_len=new)

    err = (triton_path().float() - torch_path().float()).abs().max().item()
    ms = {"triton": time_ms(triton_path, device, args.repeats), "torch paged": time_ms(torch_path, device, args.repeats)}
    visible = batch * (new * prefix + new * (new + 1) // 2)  # (query, key) pairs
    flops = 4 * hkv * group * d * visible
    return {"batch": batch, "prefix": prefix, "new": new, "ms": ms, "flops": flops, "max_abs_err": err,
            "tflops": {k: flops / (v * 1e-3) / 1e12 for k, v in ms.items()}}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="minikv bench attention", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=_ints, default=[1, 16, 64])
    ap.add_argument("--contexts", type=_ints, default=[1024, 4096, 16384])
    ap.add_argument("--prefills", default="1:1024:512,8:4096:256,1:16384:1024",
                    help="comma-separated batch:prefix:new cases for prefill over a cached prefix")
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--group", type=int, default=8, help="query heads per KV head")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--peak-gbs", type=float, default=None, help="the card's peak HBM GB/s (default: known cards)")
    ap.add_argument("--device", default=None, help="cuda (default); cpu runs one tiny case under the interpreter")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        if args.device is None:
            print("error: minikv bench attention measures GPU kernels and needs a CUDA GPU; none is visible "
                  "(pass --device cpu for a tiny smoke run under Triton's interpreter)")
            return 2
        os.environ.setdefault("TRITON_INTERPRET", "1")
        args.batches, args.contexts, args.prefills = [2], [40], "1:24:8"
        args.kv_heads, args.group, args.head_dim, args.dtype, args.repeats = 2, 2, 16, "float32", 1
    try:
        import triton  # noqa: F401
    except ImportError:
        print("error: minikv bench attention needs Triton; pip install triton")
        return 2
    dtype = getattr(torch, args.dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter)"
    peak = args.peak_gbs or (peak_gbs(name) if device.type == "cuda" else None)
    decode = [bench_decode(b, c, args, device, dtype) for b in args.batches for c in args.contexts]
    prefills = [bench_prefill(*map(int, case.split(":")), args, device, dtype)
                for case in args.prefills.split(",") if case]
    for row in decode:
        row["pct_peak"] = 100 * row["gbs"] / peak if peak else None
    if args.json:
        print(json.dumps({"machine": machine_line(), "device": name, "peak_gbs": peak, "dtype": args.dtype,
                          "kv_heads": args.kv_heads, "group": args.group, "head_dim": args.head_dim,
                          "block_size": args.block_size, "decode": decode, "prefill": prefills}, indent=1))
        return 0
    print(f"# {machine_line()}; {name}; {args.dtype}, Hkv={args.kv_heads}, group={args.group}, "
          f"D={args.head_dim}, block {args.block_size}; peak {peak or '?'} GB/s")
    names = list(decode[0]["ms"])
    rows = []
    for r in decode:
        pct = f"{r['pct_peak']:.0f}%" if r["pct_peak"] is not None else "?"
        speedup = r["ms"]["torch paged"] / r["ms"]["triton"]
        ref = r["ms"]["torch ref"] / r["ms"]["triton"]
        rows.append([f"{r['batch']} x {r['context']}", *(f"{r['ms'][n]:.3f}" for n in names), f"{r['gbs']:.0f}", pct,
                     f"{speedup:.1f}x", f"{ref:.1f}x", f"{r['max_abs_err']:.1e}"])
    print("\ndecode attention (ms per call)")
    print_table(["batch x context", *names, "triton GB/s", "% peak", "vs torch paged", "vs torch ref", "max err"], rows)
    rows = [[f"{r['batch']} x ({r['prefix']} + {r['new']})", f"{r['ms']['triton']:.3f}", f"{r['ms']['torch paged']:.3f}",
             f"{r['tflops']['triton']:.1f}", f"{r['tflops']['torch paged']:.1f}",
             f"{r['ms']['torch paged'] / r['ms']['triton']:.1f}x", f"{r['max_abs_err']:.1e}"] for r in prefills]
    print("\nprefill over a cached prefix")
    print_table(["batch x (prefix + new)", "triton ms", "torch ms", "triton TFLOP/s", "torch TFLOP/s", "speedup",
                 "max err"], rows)
    if not math.isfinite(sum(r["max_abs_err"] for r in decode + prefills)):
        print("error: a kernel returned non-finite values")
        return 1
    return 0

"""GPU check for minikv, run on a CUDA machine: ``python tools/gpu_check.py OUTDIR``.

1. greedy tokens on CUDA: paged == contiguous == transformers (fp32, tiny
   models) and prefix caching ("hash", "radix" at page size 1) == no cache;
2. the generate, ttft and batch benchmarks on a SmolLM2-shaped random model
   (same shapes and work as SmolLM2-135M; the real checkpoint is not needed
   for speed), bf16.
Each part's output goes to OUTDIR; exits non-zero if a parity check fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

SMOL_SHAPE = "tiny-llama:hidden=576,layers=30,heads=9,kv_heads=3,head_dim=64,inter=1536,vocab=49152,max_pos=8192,std=0.02"


def parity() -> bool:
    from transformers import AutoModelForCausalLM

    from minikv import LLM, SamplingParams

    ok = True
    sp = SamplingParams(max_tokens=16, temperature=0.0)
    shared = "You are a helpful assistant. Answer briefly and clearly. " * 3
    prompts = [shared + q for q in ("hello world", "a", "The quick brown fox")]
    for name in ["tiny-llama", "tiny-qwen2"]:
        base = LLM(name, device="cuda", dtype=torch.float32)
        want = [o.token_ids for o in base.generate(prompts, sp)]
        hf = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32).cuda().eval()
        for p, got in zip(prompts, want):
            ids = base.encode(p)
            x = torch.tensor([ids], device="cuda")
            ref = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=16, do_sample=False)[0, len(ids):]
            ok &= got == ref.tolist()
        cont = LLM(name, device="cuda", dtype=torch.float32, kv_layout="contiguous")
        ok &= [o.token_ids for o in cont.generate(prompts, sp)] == want
        for kind, opts in (("hash", {}), ("radix", {"page_size": 1})):
            llm = LLM(name, device="cuda", dtype=torch.float32, prefix_cache=kind, prefix_cache_options=opts)
            for _ in range(2):
                outs = llm.generate(prompts, sp)
                same = [o.token_ids for o in outs] == want
                ok &= same
                print(f"{name} {kind} {opts}: same tokens {same}, cached {[o.num_cached_tokens for o in outs]}")
        print(f"{name}: parity so far {'OK' if ok else 'FAILED'}", flush=True)
    return ok


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    print(torch.__version__, torch.cuda.get_device_name(0), flush=True)
    ok = parity()
    benches = {
        "bench_generate.txt": ["generate", "--repeats", "3"],
        "bench_ttft.txt": ["ttft", "--repeats", "3"],
        "bench_batch.txt": ["batch", "--repeats", "2"],
    }
    for fname, case in benches.items():
        cmd = [sys.executable, "-m", "minikv", "bench", *case, "--model", SMOL_SHAPE, "--device", "cuda"]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=70)
        except subprocess.TimeoutExpired as e:
            (out / fname).write_text(f"timed out after 70 s\n{e.stdout or ''}")
            continue
        (out / fname).write_text(res.stdout + "\n--- stderr tail ---\n" + res.stderr[-2000:])
        print(f"== {fname}\n{res.stdout}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

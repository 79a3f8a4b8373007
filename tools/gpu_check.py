"""GPU smoke check for minikv, run on a CUDA machine: ``python tools/gpu_check.py``.

1. greedy parity with transformers on CUDA (fp32) for the tiny models;
2. the paged and contiguous KV layouts give the same tokens on CUDA;
3. the generate and batch benchmarks on a SmolLM2-shaped random model (the
   real checkpoint is not needed for speed: same shapes, same work).
Prints a report; exits non-zero if a parity check fails.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import torch

SMOL_SHAPE = "tiny-llama:hidden=576,layers=30,heads=9,kv_heads=3,head_dim=64,inter=1536,vocab=49152,max_pos=8192,std=0.02"


def parity() -> bool:
    from transformers import AutoModelForCausalLM

    from minikv import LLM, SamplingParams

    ok = True
    prompts = ["hello world", "a", "The quick brown fox jumps over the lazy dog. " * 3]
    for name in ["tiny-llama", "tiny-qwen2", "tiny-llama:heads=6,kv_heads=3,head_dim=24,hidden=72"]:
        llm = LLM(name, device="cuda", dtype=torch.float32)
        hf = AutoModelForCausalLM.from_pretrained(llm.path, dtype=torch.float32).cuda().eval()
        sp = SamplingParams(max_tokens=24, temperature=0.0)
        batch = [o.token_ids for o in llm.generate(prompts, sp)]
        for p, got in zip(prompts, batch):
            ids = llm.encode(p)
            x = torch.tensor([ids], device="cuda")
            ref = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=24, do_sample=False)[0, len(ids):].tolist()
            same = got == ref
            ok &= same
            print(f"parity cuda fp32 {name:50s} {p[:12]!r:16s} {'OK' if same else 'MISMATCH'}")
        if "kv_layout" in inspect.signature(LLM.__init__).parameters:
            cont = LLM(name, device="cuda", dtype=torch.float32, kv_layout="contiguous")
            same = [o.token_ids for o in cont.generate(prompts, sp)] == batch
            ok &= same
            print(f"paged == contiguous on cuda {name}: {same}")
    return ok


def main() -> int:
    print(torch.__version__, torch.cuda.get_device_name(0))
    ok = parity()
    for case in (["generate", "--prompt-tokens", "1024"], ["batch"]):
        for dtype_note in ("bf16 (default on CUDA)",):
            print(f"\n== bench {case[0]} on {SMOL_SHAPE} {dtype_note}")
            subprocess.run([sys.executable, "-m", "minikv", "bench", *case, "--model", SMOL_SHAPE, "--device", "cuda"],
                           check=False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

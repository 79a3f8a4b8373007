"""GPU check for minikv, run on a CUDA machine with the packages installed: ``python tools/gpu_check.py OUTDIR``.

In one command, in under 5 minutes (each part has a time limit out of a total budget):

1. parity: greedy tokens on CUDA, fp32 tiny models: paged == contiguous ==
   transformers, prefix caching ("hash", "radix" at page size 1) == no cache,
   and the Triton attention backend (decode steps from CUDA graphs) == the
   PyTorch one, with and without hits;
2. the GPU tests: the Triton kernels compiled for real (fp32, fp16, bf16)
   against the PyTorch reference (``tests/test_triton_*.py``, the cascade
   kernel, ``-m gpu`` ones included) and the CUDA graphs (``tests/test_cuda_graphs.py``);
3. ``minikv bench attention`` (decode GB/s and % of peak, prefill TFLOP/s);
4. ``bench generate`` (with an eager row: CUDA graphs' ratio), ``ttft``, ``batch`` and
   ``cascade`` on a SmolLM2-shaped random model
   (same shapes and work as SmolLM2-135M; the real checkpoint is not needed
   for speed), bf16, with the PyTorch and the Triton attention backends.

Everything goes into one file, ``OUTDIR/gpu_results.md`` (plus a log per part).
Exits non-zero if a parity check or a GPU test fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

SMOL_SHAPE = "tiny-llama:hidden=576,layers=30,heads=9,kv_heads=3,head_dim=64,inter=1536,vocab=49152,max_pos=8192,std=0.02"
BUDGET_S = 285.0
ROOT = Path(__file__).resolve().parent.parent


def parity() -> bool:
    from transformers import AutoModelForCausalLM

    from minikv import LLM, SamplingParams

    ok = True
    sp = SamplingParams(max_tokens=16, temperature=0.0)
    shared = "You are a helpful assistant. Answer briefly and clearly. " * 3
    prompts = [shared + q for q in ("hello world", "a", "The quick brown fox")]
    for name in ["tiny-llama", "tiny-qwen2"]:
        base = LLM(name, device="cuda", dtype=torch.float32, attention="torch")
        want = [o.token_ids for o in base.generate(prompts, sp)]
        hf = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32).cuda().eval()
        for p, got in zip(prompts, want):
            ids = base.encode(p)
            x = torch.tensor([ids], device="cuda")
            ref = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=16, do_sample=False)[0, len(ids):]
            ok &= got == ref.tolist()
        cont = LLM(name, device="cuda", dtype=torch.float32, kv_layout="contiguous")
        ok &= [o.token_ids for o in cont.generate(prompts, sp)] == want
        for backend in ("torch", "triton"):
            for kind, opts in (("none", {}), ("hash", {}), ("radix", {"page_size": 1})):
                llm = LLM(name, device="cuda", dtype=torch.float32, prefix_cache=kind,
                          prefix_cache_options=opts or None, attention=backend)
                for _ in range(2):
                    outs = llm.generate(prompts, sp)
                    same = [o.token_ids for o in outs] == want
                    ok &= same
                    print(f"{name} {backend} {kind} {opts}: same tokens {same}, "
                          f"cached {[o.num_cached_tokens for o in outs]}", flush=True)
        print(f"{name}: parity so far {'OK' if ok else 'FAILED'}", flush=True)
    return ok


def run_part(title: str, cmd: list[str], limit: float, log: Path, env: dict | None = None) -> tuple[int, str]:
    """Run ``cmd`` with a time limit; its output goes to ``log``; returns (exit code, output)."""
    start = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=max(limit, 5), cwd=ROOT,
                             env={**os.environ, **(env or {})})
        code, text = res.returncode, res.stdout + "\n--- stderr tail ---\n" + res.stderr[-3000:]
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        code, text = 124, f"timed out after {limit:.0f} s\n{out}"
    log.write_text(text)
    print(f"== {title}: exit {code} in {time.perf_counter() - start:.0f} s\n{text[-4000:]}", flush=True)
    return code, text


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    left = lambda: BUDGET_S - (time.perf_counter() - t0)  # noqa: E731
    head = f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    print(head, flush=True)
    report = [f"# minikv GPU check\n\n{head}\n"]
    py = sys.executable
    code, text = run_part("parity", [py, "-c", "import sys; sys.path.insert(0, 'tools'); import gpu_check; "
                                              "sys.exit(0 if gpu_check.parity() else 1)"], min(70, left()), out / "parity.log")
    ok = code == 0
    report.append(f"## parity: {'OK' if ok else 'FAILED'}\n\n```\n{text[-3000:]}\n```\n")
    env = {"TRITON_INTERPRET": "0"}
    code, text = run_part("gpu tests", [py, "-m", "pytest", "-q", "-p", "no:randomly", "tests/test_triton_attention.py",
                                        "tests/test_triton_step.py", "tests/test_triton_cascade.py", "tests/test_cuda_graphs.py",
                                        "tests/test_bench_attention.py"],
                          min(90, left()), out / "gpu_tests.log", env)
    ok &= code == 0
    report.append(f"## GPU tests: exit {code}\n\n```\n{text[-1500:]}\n```\n")
    benches = [("bench attention", ["attention", "--repeats", "10"], 60)]
    for backend in ("torch", "triton"):
        model = ["--model", SMOL_SHAPE, "--device", "cuda", "--attention", backend]
        benches += [(f"bench generate ({backend})", ["generate", "--repeats", "2", *model], 25),
                    (f"bench ttft ({backend})", ["ttft", "--repeats", "2", *model], 25),
                    (f"bench batch ({backend})", ["batch", "--repeats", "1", *model], 25),
                    (f"bench cascade ({backend})", ["cascade", "--repeats", "2", *model], 25)]
    for title, case, limit in benches:
        if left() < 10:
            report.append(f"## {title}: not run (the 5-minute budget is spent)\n")
            continue
        fname = title.replace(" ", "_").replace("(", "").replace(")", "") + ".log"
        code, text = run_part(title, [py, "-m", "minikv", "bench", *case], min(limit, left()), out / fname, env)
        report.append(f"## {title}: exit {code}\n\n```\n{text.split('--- stderr tail ---')[0][-3000:]}\n```\n")
    report.append(f"total {time.perf_counter() - t0:.0f} s; {'all checks passed' if ok else 'A CHECK FAILED'}\n")
    (out / "gpu_results.md").write_text("\n".join(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

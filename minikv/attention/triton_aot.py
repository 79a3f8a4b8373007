"""Compile every Triton kernel for a GPU that is not here: ``python -m minikv.attention.triton_aot``.

The interpreter (``TRITON_INTERPRET=1``) checks what a kernel *computes*; it
never asks the GPU compiler anything. Triton can also compile ahead of time
for a named target (``GPUTarget("cuda", 90, 32)`` is an H100/H200) with the
``ptxas`` its wheel ships, on a machine with no GPU at all. That catches what
only real compilation sees: a ``tl.dot`` shape or dtype the target refuses,
bf16/fp16 conversions, more shared memory than one block may have (a launch
would fail with "out of resources"), whether the products really became
tensor-core instructions (``mma.sync``/``wgmma`` in the PTX), and whether K/V
are read in 16-byte vectors (``cp.async``, ``ld.global.v4``) rather than one
2-byte element per load, without which no kernel nears the card's bandwidth.
What it cannot tell is speed: that needs the GPU (``tools/gpu_check.py``).

How the launches are found: each scenario calls the real Python wrapper
(:func:`~minikv.attention.triton_decode.triton_paged_decode_attention` and the
others) on CPU tensors of the GPU's dtype, shape and strides, with every kernel
swapped for a recorder, so nothing runs. Triton's own argument binder then
turns each recorded launch into the signature, constexprs and specialization
(integers equal to 1, pointers and strides divisible by 16) a real launch on
the GPU would compile, and that is compiled.

Must run with ``TRITON_INTERPRET`` unset (the CLI re-executes itself so);
tests call :func:`run_in_subprocess`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# sm_90 (H100/H200): at most 227 KiB of shared memory per block (opt-in); 64K registers per SM
SM90_SHARED_LIMIT = 232_448
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}  # scenario names
KERNEL_MODULES = ("triton_decode", "triton_prefill", "triton_cascade", "triton_store")
ATTENTION_KERNELS = ("paged_decode_kernel", "paged_prefill_kernel", "shared_prefix_kernel")


@dataclass
class Compiled:
    """One kernel variant compiled for the target: its resources, and what its PTX uses."""

    scenario: str
    kernel: str
    constexprs: str
    shared_bytes: int
    num_warps: int
    registers: int | None
    local_bytes: int | None  # local memory per thread: spilled registers
    tensor_core: bool  # mma.sync / wgmma instructions in the PTX
    scalar_16bit_loads: int  # ld.global of one 2-byte element: K/V read without vectorizing
    error: str = ""


class _Recorder:
    """Stands in for a JIT kernel: ``kernel[grid](*args, **meta)`` records the launch, runs nothing."""

    def __init__(self, kernel, launches: list) -> None:
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        def launch(*args, **meta):
            self.launches.append((self.kernel, args, meta))
        return launch


@contextmanager
def recording():
    """Within: every kernel of minikv.attention's Triton modules records its launches instead of running."""
    import importlib

    from triton.runtime.jit import JITFunction

    launches: list = []
    saved = []
    for name in KERNEL_MODULES:
        mod = importlib.import_module(f"minikv.attention.{name}")
        for attr, value in list(vars(mod).items()):
            if isinstance(value, JITFunction):
                saved.append((mod, attr, value))
                setattr(mod, attr, _Recorder(value, launches))
        if hasattr(mod, "check_triton_device"):
            saved.append((mod, "check_triton_device", mod.check_triton_device))
            mod.check_triton_device = lambda *tensors: None
    try:
        yield launches
    finally:
        for mod, attr, value in saved:
            setattr(mod, attr, value)


def _bind(kernel, args: tuple, meta: dict, backend):
    """(signature, constexprs, attrs, options) exactly as ``kernel[grid](*args, **meta)`` would compile them.

    Triton's own binder does it, so the launch-time specialization matches a real
    launch: integer arguments equal to 1 become constants, and arguments (strides,
    pointers) divisible by 16 are marked so, which is what lets the compiler
    vectorize loads and pipeline them with ``cp.async``.
    """
    from triton import knobs
    from triton.runtime.jit import create_function_from_signature

    kw = dict(meta, debug=kernel.debug or knobs.runtime.debug,
              instrumentation_mode=knobs.compilation.instrumentation_mode,
              fpsan_homomorphic_casts=knobs.compilation.fpsan_homomorphic_casts)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **kw)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kw, bound, specialization, options)
    return signature, constexprs, attrs, options, str(specialization)


def _resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    """(registers, local-memory bytes per thread: spills) of a cubin, read by the ``cuobjdump`` Triton ships."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists():
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([str(tool), "-res-usage", str(path)], capture_output=True, text=True).stdout
    regs, local = re.search(r"REG:(\d+)", text), re.search(r"LOCAL:(\d+)", text)
    return (int(regs.group(1)) if regs else None), (int(local.group(1)) if local else None)


def scenarios(full: bool = True):
    """``(name, thunk)`` pairs; each thunk calls the wrappers the GPU engine and benches call.

    Head shapes: the attention bench's 8 query heads per kv head at dim 128, SmolLM2's
    9/3 at 64, an odd 14/2 at 80 and MHA 4/4. ``full``: every shape in bf16 and fp16 at
    block sizes 1, 16 and 64, plus fp32 (the GPU parity runs); else a quick set for tests.
    """
    from minikv.attention.triton_cascade import TritonCascadePlan, triton_cascade_decode
    from minikv.attention.triton_decode import triton_paged_decode_attention
    from minikv.attention.triton_prefill import triton_paged_attention
    from minikv.attention.triton_store import triton_write_kv

    bench, smol, odd, mha = (64, 8, 128), (9, 3, 64), (14, 2, 80), (4, 4, 64)
    if full:
        combos = [(dt, h, bs) for dt in (torch.bfloat16, torch.float16) for h in (bench, smol, odd, mha)
                  for bs in (1, 16, 64)]
        combos += [(torch.float32, h, 16) for h in (bench, smol)]
    else:
        combos = [(torch.bfloat16, h, 16) for h in (bench, smol, odd, mha)]
        combos += [(torch.bfloat16, bench, 1), (torch.bfloat16, bench, 64), (torch.float16, smol, 16),
                   (torch.float32, smol, 16)]
    fns = (triton_paged_decode_attention, triton_paged_attention, triton_write_kv,
           TritonCascadePlan, triton_cascade_decode)
    return [(f"{DTYPE_NAMES[dt]} Hq={hq} Hkv={hkv} D={d} block={bs}", _thunk(dt, hq, hkv, d, bs, *fns))
            for dt, (hq, hkv, d), bs in combos]


def _thunk(dtype, hq, hkv, d, bs, decode, prefill, store, plan_cls, cascade):
    def run():
        blocks_per_seq = max(1, 256 // bs)
        batch = 4
        cache = torch.zeros(batch * blocks_per_seq, bs, hkv, d, dtype=dtype)
        tables = torch.arange(batch * blocks_per_seq, dtype=torch.int32).view(batch, blocks_per_seq)
        lens = torch.full((batch,), blocks_per_seq * bs, dtype=torch.int32)
        q = torch.zeros(batch, hq, d, dtype=dtype)
        decode(q, cache, cache, tables, lens, num_splits=1)
        decode(q, cache, cache, tables, lens, num_splits=4)  # split-K and the merge kernel
        qp = torch.zeros(batch * 8, hq, d, dtype=dtype)
        starts = torch.arange(0, batch * 8 + 1, 8, dtype=torch.int32)
        prefill(qp, cache, cache, tables, starts, lens)
        kv = torch.zeros(batch, hkv, d, dtype=dtype)
        store(kv, kv, cache, cache, torch.arange(batch, dtype=torch.long))
        shared = tables.clone()
        shared[:, : blocks_per_seq // 2] = shared[0, : blocks_per_seq // 2]
        plan = plan_cls.build(shared, lens.tolist(), bs, min_seqs=2, min_blocks=1, min_saved_tokens=1)
        if plan is not None:
            cascade(q, cache, cache, plan)
    return run


def compile_all(capability: int = 90, full: bool = True) -> list[Compiled]:
    """Compile every distinct launch of every scenario for ``cuda:capability``; errors are recorded, not raised."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    seen, results = set(), []
    for name, thunk in scenarios(full):
        with recording() as launches:
            thunk()
        for kernel, args, meta in launches:
            sig, consts, attrs, options, key = _bind(kernel, args, meta, backend)
            if (kernel.__name__, key) in seen:
                continue
            seen.add((kernel.__name__, key))
            shown = ",".join(f"{kernel.arg_names[k[0]]}={v}" for k, v in consts.items())
            try:
                compiled = triton.compile(ASTSource(kernel, sig, consts, attrs), target=target,
                                          options=options.__dict__)
            except Exception as e:  # noqa: BLE001 - a report of what does not compile
                results.append(Compiled(name, kernel.__name__, shown, 0, 0, None, None, False, 0,
                                        f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"))
                continue
            ptx = compiled.asm["ptx"]
            regs, local = _resource_usage(compiled.asm["cubin"])
            results.append(Compiled(name, kernel.__name__, shown, compiled.metadata.shared,
                                    compiled.metadata.num_warps, regs, local,
                                    bool(re.search(r"\b(w?gmma\.mma_async|mma\.sync)", ptx)),
                                    len(re.findall(r"ld\.global(\.\w+)*\.[bu]16\b", ptx))))
    return results


def run_in_subprocess(capability: int = 90, full: bool = False, timeout: float = 900) -> list[Compiled]:
    """:func:`compile_all` in a fresh interpreter with ``TRITON_INTERPRET`` unset (as a test needs it)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    cmd = [sys.executable, "-m", "minikv.attention.triton_aot", "--json", "--capability", str(capability)]
    res = subprocess.run(cmd + ([] if full else ["--quick"]), capture_output=True, text=True, env=env,
                         timeout=timeout)
    if res.returncode not in (0, 1):
        raise RuntimeError(f"triton_aot failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return [Compiled(**row) for row in json.loads(res.stdout)]


def problems(results: list[Compiled], shared_limit: int = SM90_SHARED_LIMIT) -> list[str]:
    """What would fail or crawl on the target: a compile error, more shared memory than a block may
    have, or a 16-bit attention kernel whose products miss the tensor cores or whose loads are scalar."""
    bad = []
    for r in results:
        where = f"{r.kernel} [{r.scenario}; {r.constexprs}]"
        if r.error:
            bad.append(f"{where}: {r.error}")
        elif r.shared_bytes > shared_limit:
            bad.append(f"{where}: {r.shared_bytes} bytes of shared memory > {shared_limit}")
        elif r.kernel in ATTENTION_KERNELS and not r.scenario.startswith("fp32"):
            if not r.tensor_core:
                bad.append(f"{where}: no mma/wgmma instruction in the PTX (the products miss the tensor cores)")
            if r.scalar_16bit_loads:
                bad.append(f"{where}: {r.scalar_16bit_loads} scalar 2-byte loads (K/V not read in vectors)")
    return bad


TILE_KEYS = ("GROUP_P", "BLOCK_M", "BLOCK_Q", "BLOCK_N", "NUM_SPLITS", "RETURN_LSE", "BLOCK_T")


def _tiles(r: Compiled) -> str:
    """The constexprs that tell one variant of a kernel from another."""
    pairs = dict(kv.split("=", 1) for kv in r.constexprs.split(",") if "=" in kv)
    return " ".join(f"{k}={pairs[k]}" for k in TILE_KEYS if k in pairs)


def _table(results: list[Compiled]) -> str:
    lines = ["| kernel | scenario | tiles | shared KiB | warps | registers | local bytes | tensor cores | "
             "scalar 2-byte loads |", "|---|---|---|---:|---:|---:|---:|---|---:|"]
    for r in results:
        if r.error:
            lines.append(f"| {r.kernel} | {r.scenario} | {_tiles(r)} | ERROR: {r.error} | | | | | |")
        else:
            lines.append(f"| {r.kernel} | {r.scenario} | {_tiles(r)} | {r.shared_bytes / 1024:.1f} | {r.num_warps} | "
                         f"{r.registers if r.registers is not None else '?'} | "
                         f"{r.local_bytes if r.local_bytes is not None else '?'} | {'yes' if r.tensor_core else 'no'} | "
                         f"{r.scalar_16bit_loads} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m minikv.attention.triton_aot", description=__doc__.splitlines()[0])
    parser.add_argument("--capability", type=int, default=90, help="CUDA compute capability (90: H100/H200)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="the tests' smaller set of shapes")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.call([sys.executable, "-m", "minikv.attention.triton_aot", *(argv or sys.argv[1:])], env=env)
    results = compile_all(args.capability, full=not args.quick)
    bad = problems(results)
    if args.json:
        print(json.dumps([asdict(r) for r in results]))
    else:
        print(_table(results))
        print(f"\n{len(results)} kernel variants compiled for sm_{args.capability}; "
              + (f"{len(bad)} problems:\n" + "\n".join(bad) if bad else "no problems"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

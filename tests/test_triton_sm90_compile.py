"""Every Triton kernel compiles for an H100/H200 (sm_90), here, without a GPU.

The interpreter tests (``test_triton_*.py``) check what the kernels compute;
this checks what only the GPU compiler sees (see :mod:`minikv.attention.triton_aot`):
each launch the wrappers make, in bf16, fp16 and fp32, at the shapes of the
attention bench, SmolLM2, an odd head dim and MHA, compiles; fits in a block's
shared memory; runs its products on tensor cores; and reads K/V in vectors.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from minikv.attention import triton_aot
from minikv.attention.triton_aot import Compiled, problems

triton = pytest.importorskip("triton")
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas-blackwell"
pytestmark = pytest.mark.skipif(not PTXAS.exists(), reason=f"this triton wheel ships no ptxas for sm_90 ({PTXAS})")


@pytest.fixture(scope="module")
def sm90() -> list[Compiled]:
    return triton_aot.run_in_subprocess(capability=90, full=False)


def test_every_launch_compiles_for_sm90_without_problems(sm90):
    assert problems(sm90) == []
    kernels = {r.kernel for r in sm90}
    assert kernels == {"paged_decode_kernel", "merge_splits_kernel", "paged_prefill_kernel", "store_kv_kernel",
                       "shared_prefix_kernel", "merge_parts_kernel"}
    # every scenario's dtype and head shape is there: 8 scenarios, each with its decode kernel
    assert len({r.scenario for r in sm90 if r.kernel == "paged_decode_kernel"}) == 8


def test_16bit_attention_uses_tensor_cores_and_vector_loads(sm90):
    rows = [r for r in sm90 if r.kernel in triton_aot.ATTENTION_KERNELS and not r.scenario.startswith("fp32")]
    assert len(rows) >= 20
    assert all(r.tensor_core and r.scalar_16bit_loads == 0 for r in rows)
    assert all(r.registers is not None and 0 < r.registers <= 255 for r in sm90)
    assert all(r.local_bytes == 0 for r in rows), [(r.kernel, r.scenario, r.local_bytes) for r in rows if r.local_bytes]


def test_split_k_and_cascade_variants_are_compiled(sm90):
    """One split, several splits with the merge, and the cascade's own-blocks pass that returns its lse."""
    decode = [r.constexprs for r in sm90 if r.kernel == "paged_decode_kernel"]
    assert any("NUM_SPLITS=1" in c and "RETURN_LSE=False" in c for c in decode)
    assert any("NUM_SPLITS=4" in c for c in decode)
    assert any("RETURN_LSE=True" in c for c in decode)


def test_problems_names_each_failure():
    ok = Compiled("bf16 Hq=8", "paged_decode_kernel", "", 8_000, 4, 64, 0, True, 0)
    failing = [
        Compiled("bf16 Hq=8", "paged_prefill_kernel", "", 0, 0, None, None, False, 0, "CompilationError: bad dot"),
        Compiled("bf16 Hq=8", "shared_prefix_kernel", "", 300_000, 4, 64, 0, True, 0),
        Compiled("fp16 Hq=8", "paged_decode_kernel", "", 8_000, 4, 64, 0, False, 0),
        Compiled("bf16 Hq=8", "paged_decode_kernel", "", 8_000, 4, 64, 0, True, 48),
    ]
    assert problems([ok]) == []
    found = problems([ok, *failing])
    assert len(found) == 4
    assert "bad dot" in found[0] and "shared memory" in found[1]
    assert "tensor cores" in found[2] and "48 scalar 2-byte loads" in found[3]
    # fp32 runs on CUDA cores by design, and the merge/store kernels have no product
    assert problems([Compiled("fp32 Hq=8", "paged_decode_kernel", "", 8_000, 4, 64, 0, False, 0),
                     Compiled("bf16 Hq=8", "store_kv_kernel", "", 0, 4, 32, 0, False, 0)]) == []

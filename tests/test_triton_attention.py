"""The Triton kernels against their PyTorch specs in :mod:`minikv.attention.torch_ref`.

On CPU every kernel runs in Triton's interpreter (``tests/conftest.py`` sets
``TRITON_INTERPRET=1``), in fp32. The interpreter is slow, so the matrix is
paired, not crossed: every (query heads, kv heads) in {(4,4), (8,2), (5,1),
(14,2)} meets every head dim in {64, 80, 128} or a block size in {1, 16}
somewhere, and the (new tokens, context) mixes put lengths at, just under
and just over block boundaries. Each pool is full of random junk and every
sequence's blocks come from a shuffled permutation (table pads are -1), so
reading a wrong block, an unmasked position or a pad changes the answer.

Tolerance (fp32): ``atol = rtol = 2e-5``; the kernels differ from the
reference only in summation order (online softmax in base 2, tiled dot products).
"""

from __future__ import annotations

import itertools

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed")

from minikv.attention.torch_ref import paged_attention, paged_decode_attention, write_kv  # noqa: E402
from minikv.attention.triton_common import check_triton_device  # noqa: E402
from minikv.attention.triton_decode import triton_paged_decode_attention  # noqa: E402
from minikv.attention.triton_prefill import triton_paged_attention  # noqa: E402
from minikv.attention.triton_store import triton_write_kv  # noqa: E402
from minikv.errors import InvalidRequestError  # noqa: E402

ATOL = RTOL = 2e-5
GPU = pytest.mark.skipif(not torch.cuda.is_available(),
                         reason="needs a CUDA GPU: fp16/bf16 under Triton's CPU interpreter is not GPU arithmetic")


class Pool:
    """One layer of a junk-filled paged pool and shuffled block tables for sequences of ``lens`` tokens."""

    def __init__(self, heads: tuple[int, int], head_dim: int, block_size: int, lens: list[int],
                 dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.hq, self.hkv = heads
        self.d, self.bs = head_dim, block_size
        needed = [-(-n // block_size) for n in lens]
        num_blocks = sum(needed) + 3  # a few blocks no sequence owns
        shape = (num_blocks, block_size, self.hkv, head_dim)
        self.k_cache = torch.randn(shape, generator=gen).to(device, dtype)
        self.v_cache = torch.randn(shape, generator=gen).to(device, dtype)
        order = torch.randperm(num_blocks, generator=gen).tolist()
        width = max(needed) + 1  # one pad column past the longest sequence
        rows, used = [], 0
        for n in needed:
            rows.append(order[used:used + n] + [-1] * (width - n))
            used += n
        self.block_tables = torch.tensor(rows, dtype=torch.long, device=device)
        self.lens = torch.tensor(lens, dtype=torch.long, device=device)
        self.gen, self.device, self.dtype = gen, device, dtype

    def queries(self, num_tokens: int) -> torch.Tensor:  # [num_tokens, Hq, D]
        return torch.randn(num_tokens, self.hq, self.d, generator=self.gen).to(self.device, self.dtype)


# ---------------------------------------------------------------- store


@pytest.mark.parametrize("block_size,block_t", [(1, 16), (16, 4)])  # one program, or two full ones
def test_store_writes_exactly_what_write_kv_writes(block_size: int, block_t: int) -> None:
    pool = Pool((4, 2), 80, block_size, [40, 9])
    slots = torch.tensor([0, 5, -1, 17, 30, -1, 39, 41], dtype=torch.long)
    v = torch.randn(len(slots), 2, 80)
    # a non-contiguous k: the kernel follows token/head strides
    k = torch.randn(len(slots), 4, 80)[:, ::2]
    want_k, want_v = pool.k_cache.clone(), pool.v_cache.clone()
    write_kv(k, v, want_k, want_v, slots)
    triton_write_kv(k, v, pool.k_cache, pool.v_cache, slots, block_t=block_t)
    # a copy: bit for bit, including every slot it must leave alone (the -1 pads, the junk)
    assert torch.equal(pool.k_cache, want_k)
    assert torch.equal(pool.v_cache, want_v)


# ---------------------------------------------------------------- decode

# (heads, head_dim, block_size, context lens, several splits)
DECODE_CASES = [
    ((4, 4), 64, 16, [133, 18, 63, 1], 4),  # a one-token context beside long ones: its later splits are empty
    ((8, 2), 80, 1, [16, 17, 15, 33], 3),
    ((5, 1), 128, 16, [16, 17, 15, 32, 33], 2),  # at, under and over block boundaries
    ((14, 2), 64, 1, [1, 63, 18], 5),
    ((8, 2), 128, 16, [64, 65], 3),
    ((5, 1), 80, 1, [31, 2], 2),
    ((14, 2), 80, 32, [95, 32, 33], 3),  # the larger block sizes the kernel tiles as one block per tile
    ((4, 4), 128, 64, [130, 64], 2),
]


@pytest.mark.parametrize("heads,head_dim,block_size,lens,splits", DECODE_CASES,
                         ids=[f"h{h[0]}x{h[1]}-d{d}-bs{bs}-{len(n)}seqs-s{s}" for h, d, bs, n, s in DECODE_CASES])
def test_decode_matches_reference_with_one_and_several_splits(heads, head_dim, block_size, lens, splits) -> None:
    pool = Pool(heads, head_dim, block_size, lens)
    q = pool.queries(len(lens))
    scale = 0.3 if head_dim == 80 else None  # an explicit scale must be honoured too
    want = paged_decode_attention(q, pool.k_cache, pool.v_cache, pool.block_tables, pool.lens, scale)
    one = triton_paged_decode_attention(q, pool.k_cache, pool.v_cache, pool.block_tables, pool.lens, scale,
                                        num_splits=1)
    many = triton_paged_decode_attention(q, pool.k_cache, pool.v_cache, pool.block_tables, pool.lens, scale,
                                         num_splits=splits, block_n=16)
    torch.testing.assert_close(one, want, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(many, want, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(many, one, atol=ATOL, rtol=RTOL)


def test_decode_asks_for_more_splits_than_tiles() -> None:
    """Twelve splits of a 20-token context are cut back to its two 16-token tiles; still the reference."""
    pool = Pool((8, 2), 64, 16, [20, 3])
    q = pool.queries(2)
    want = paged_decode_attention(q, pool.k_cache, pool.v_cache, pool.block_tables, pool.lens)
    got = triton_paged_decode_attention(q, pool.k_cache, pool.v_cache, pool.block_tables, pool.lens, num_splits=12)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------- prefill over a cached prefix

# (heads, head_dim, block_size, [(new tokens, context len), ...]); new < context: a cached prefix
PREFILL_CASES = [
    ((8, 2), 80, 16, [(1, 133), (5, 18), (29, 63)]),
    ((5, 1), 64, 1, [(5, 18), (16, 16), (1, 1)]),  # a whole prompt, and a one-token prompt
    ((14, 2), 128, 16, [(29, 63), (3, 32), (1, 17)]),
    ((4, 4), 80, 1, [(7, 40), (2, 15), (17, 17)]),
    ((4, 4), 128, 16, [(1, 16), (1, 17), (1, 15)]),  # pure decode through the prefill kernel
    ((14, 2), 64, 1, [(20, 33), (12, 12)]),  # chunked prefill: chunk 2 of 13 + 20, beside a first chunk
    ((8, 2), 64, 16, [(16, 48), (33, 33)]),  # new tokens that fill whole blocks after whole cached blocks
    ((5, 1), 128, 32, [(9, 9), (6, 70)]),  # the larger block sizes, as in decode
    ((8, 2), 80, 64, [(3, 64), (1, 65), (40, 40)]),
]


@pytest.mark.parametrize("heads,head_dim,block_size,mix", PREFILL_CASES,
                         ids=[f"h{h[0]}x{h[1]}-d{d}-bs{bs}-" + "_".join(f"{n}of{c}" for n, c in m)
                              for h, d, bs, m in PREFILL_CASES])
def test_prefill_over_prefix_matches_reference(heads, head_dim, block_size, mix) -> None:
    pool = Pool(heads, head_dim, block_size, [c for _, c in mix])
    starts = torch.tensor([0, *itertools.accumulate(n for n, _ in mix)], dtype=torch.long)
    q = pool.queries(int(starts[-1]))
    scale = 0.3 if head_dim == 80 else None
    want = paged_attention(q, pool.k_cache, pool.v_cache, pool.block_tables, starts, pool.lens, scale)
    got = triton_paged_attention(q, pool.k_cache, pool.v_cache, pool.block_tables, starts, pool.lens, scale)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


def test_prefill_query_tiles_split_a_sequence_across_programs() -> None:
    """Small query tiles (2 tokens x 4 heads) put one sequence's new tokens in many programs."""
    pool = Pool((8, 2), 64, 16, [37, 12])
    starts = torch.tensor([0, 21, 21 + 12])
    q = pool.queries(33)
    want = paged_attention(q, pool.k_cache, pool.v_cache, pool.block_tables, starts, pool.lens)
    got = triton_paged_attention(q, pool.k_cache, pool.v_cache, pool.block_tables, starts, pool.lens, block_m=8)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------- where the kernels may run


def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(InvalidRequestError, match="TRITON_INTERPRET=1"):
        check_triton_device(torch.zeros(1))


# ---------------------------------------------------------------- GPU only: half precision


@GPU
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_gpu_matches_reference(dtype: torch.dtype) -> None:
    mix = [(1, 1000), (37, 300), (1, 17), (64, 64)]
    pool = Pool((8, 1), 128, 16, [c for _, c in mix], dtype=dtype, device="cuda")
    starts = torch.tensor([0, *itertools.accumulate(n for n, _ in mix)], device="cuda")
    q = pool.queries(int(starts[-1]))
    tol = dict(atol=2e-2, rtol=2e-2)  # half-precision inputs, fp32 accumulation in both
    want = paged_attention(q, pool.k_cache, pool.v_cache, pool.block_tables, starts, pool.lens)
    got = triton_paged_attention(q, pool.k_cache, pool.v_cache, pool.block_tables, starts, pool.lens)
    torch.testing.assert_close(got, want, **tol)
    dq = pool.queries(len(mix))
    want = paged_decode_attention(dq, pool.k_cache, pool.v_cache, pool.block_tables, pool.lens)
    for splits in (1, 8):
        got = triton_paged_decode_attention(dq, pool.k_cache, pool.v_cache, pool.block_tables, pool.lens,
                                            num_splits=splits)
        torch.testing.assert_close(got, want, **tol)
    k = torch.randn(5, 1, 128, device="cuda")
    v = torch.randn(5, 1, 128, device="cuda")
    slots = torch.tensor([0, 3, -1, 700, 17], device="cuda")
    want_k, want_v = pool.k_cache.clone(), pool.v_cache.clone()
    write_kv(k, v, want_k, want_v, slots)
    triton_write_kv(k, v, pool.k_cache, pool.v_cache, slots)
    assert torch.equal(pool.k_cache, want_k) and torch.equal(pool.v_cache, want_v)

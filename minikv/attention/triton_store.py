"""Triton kernel 1 of 3: store the step's new K/V into the paged pool.

The spec is :func:`minikv.attention.torch_ref.write_kv`; this kernel must leave
the cache exactly as it does (it is a copy, so "exactly" means bit for bit).

Triton in five lines (read this before the kernels):

- a kernel runs as a *grid* of independent **programs**; ``tl.program_id(0)``
  says which one we are. Here: one program per ``BLOCK_T`` new tokens.
- a program works on whole **blocks** of values at once: ``tl.arange(0, N)``
  is the vector ``[0, 1, ..., N-1]`` and ``N`` must be a power of two.
- memory is reached through **pointer arithmetic**: ``base + offsets`` is a
  block of addresses, ``tl.load`` / ``tl.store`` read and write all of them.
- a **mask** switches lanes off: a head dimension of 80 is loaded with a
  block of 128 lanes of which the last 48 are masked (never read, never
  written). That is how every kernel here handles sizes that are not powers of two.
- sizes marked ``tl.constexpr`` are compile-time constants: one compiled
  kernel per value.

The layout being written (see :mod:`minikv.kv.pool`)::

    k_cache[block, offset, kv_head, d]      slot = block * block_size + offset

so each token's slot picks ``(block, offset) = divmod(slot, block_size)`` and
its ``[num_kv_heads, head_dim]`` values go there: a program stores a tile of
``BLOCK_T`` tokens x all their heads in one masked store. A padding token
(slot ``-1``) and the lanes past the last token are masked rows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minikv.attention.triton_common import check_triton_device


@triton.jit
def store_kv_kernel(
    k_ptr, v_ptr,  # new K/V: [num_tokens, num_kv_heads, head_dim]
    k_cache_ptr, v_cache_ptr,  # one layer of the pool: [num_blocks, block_size, num_kv_heads, head_dim]
    slot_ptr,  # [num_tokens] int64, -1 = padding token (not written)
    num_tokens,
    stride_kt, stride_kh,  # strides of k (head_dim's stride is 1)
    stride_vt, stride_vh,
    stride_cb, stride_co, stride_ch,  # cache strides: block, offset, head (head_dim stride is 1)
    NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_T: tl.constexpr, ROW_P: tl.constexpr,  # tokens per program; a power of two >= NUM_KV_HEADS * HEAD_DIM
):
    # this program's BLOCK_T tokens; lanes past the last token load slot -1 and are masked like padding
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T]
    slots = tl.load(slot_ptr + tokens, mask=tokens < num_tokens, other=-1)
    block = slots // BLOCK_SIZE
    offset = slots % BLOCK_SIZE

    # one token's [NUM_KV_HEADS, HEAD_DIM] values as one row of ROW_P lanes: lane c is (head, d) = divmod(c, HEAD_DIM)
    c = tl.arange(0, ROW_P)
    head = c // HEAD_DIM
    d = c % HEAD_DIM
    mask = (slots >= 0)[:, None] & (c < NUM_KV_HEADS * HEAD_DIM)[None, :]  # [BLOCK_T, ROW_P]

    k = tl.load(k_ptr + tokens[:, None] * stride_kt + (head * stride_kh + d)[None, :], mask=mask)
    v = tl.load(v_ptr + tokens[:, None] * stride_vt + (head * stride_vh + d)[None, :], mask=mask)
    dst = (block * stride_cb + offset * stride_co)[:, None] + (head * stride_ch + d)[None, :]
    # .to(): the pool may hold a narrower dtype than the model computes in
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def triton_write_kv(
    k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
    v: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    slot_mapping: torch.Tensor,  # [num_tokens] long, -1 = padding (skipped)
    block_t: int = 16,
) -> None:
    """What :func:`~minikv.attention.torch_ref.write_kv` does, in one launch of ``block_t`` tokens per program.

    No shape or range checks on the hot path (a check that reads a GPU value
    stalls the launch queue); the reference's checks run in the tests.
    """
    num_tokens = k.shape[0]
    if num_tokens == 0:
        return
    check_triton_device(k, k_cache)
    _, block_size, num_kv_heads, head_dim = k_cache.shape
    assert k.stride(2) == 1 and v.stride(2) == 1 and k_cache.stride(3) == 1 and v_cache.stride() == k_cache.stride()
    store_kv_kernel[(triton.cdiv(num_tokens, block_t),)](
        k, v, k_cache, v_cache, slot_mapping, num_tokens,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=block_size,
        BLOCK_T=block_t, ROW_P=triton.next_power_of_2(num_kv_heads * head_dim),
    )

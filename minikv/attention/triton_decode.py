"""Triton kernel 2 of 3: paged decode attention, with an optional split-K (flash-decoding) pass.

The spec is :func:`minikv.attention.torch_ref.paged_decode_attention`: every
sequence has one new query token, which attends to all ``context_lens[b]``
tokens of its own cache (the new one included, already stored). That
reference first *gathers* each sequence's K/V into a contiguous copy; this
kernel never copies. It walks the block table and reads each key where it lies.

One program per ``(sequence, kv head, split)``. Built up in three steps:

1. **Gather through the table, in place.** Position ``pos`` of sequence
   ``b`` lives in block ``block_tables[b, pos // block_size]`` at offset
   ``pos % block_size``. A tile of ``BLOCK_N`` positions turns into
   ``BLOCK_N`` addresses, each computed from its own table entry, so one
   tile may span several pool blocks (block size 1: sixteen blocks per
   tile) or be exactly one block (``BLOCK_N == block_size``).
2. **Online softmax across tiles.** We never hold a whole row of scores.
   Per query row we carry ``m`` (largest score so far), ``l`` (sum of
   ``exp(score - m)``) and ``acc`` (sum of ``exp(score - m) * v``). A new tile
   with a larger max rescales the old ``l`` and ``acc`` by ``exp(m_old - m_new)``
   before adding its own terms; at the end ``out = acc / l``. Scores are kept in
   base 2 (``exp2`` is the cheap instruction): ``scale * log2(e)`` is folded
   into one multiply.
3. **Grouped heads in one tile.** The ``group = Hq // Hkv`` query heads that
   read the same kv head are the rows of one ``q`` tile ``[GROUP_P, D]``, so the
   K/V tile is loaded once for all of them and ``q @ k^T`` is a real matrix
   product (``tl.dot``, tensor cores on a GPU) even with one token per
   sequence. ``tl.dot`` wants at least 16 rows, so the group is padded to
   ``GROUP_P >= 16`` with masked rows that are never stored.

**Split-K.** A few sequences with long contexts give only ``batch * Hkv``
programs, too few to fill a GPU. Cut every context into ``num_splits``
ranges of ``split_len`` tokens; each program does steps 1-3 over its range
and writes its *normalized* partial output plus the log-sum-exp
``lse = m + log2(l)`` of its scores. :func:`merge_splits_kernel` then combines:
with ``w_s = 2 ** (lse_s - max_s lse_s)``, ``out = sum_s w_s * out_s / sum_s w_s``.
A split past a short sequence's end is empty: ``lse = -inf``, weight 0.
With one split the first kernel writes the final output and the merge is skipped
(unless ``RETURN_LSE``: shared-prefix attention merges the partial with another part,
:mod:`minikv.attention.triton_cascade`).

Accumulation is fp32 whatever the input dtype (fp32, fp16, bf16).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from minikv.attention.triton_common import check_triton_device, pow2_at_least

LOG2_E = 1.4426950408889634


@triton.jit
def paged_decode_kernel(
    q_ptr,  # [batch, Hq, D]
    k_cache_ptr, v_cache_ptr,  # [num_blocks, block_size, Hkv, D]
    block_tables_ptr,  # [batch, max_blocks] int
    context_lens_ptr,  # [batch] int, >= 1
    out_ptr,  # NUM_SPLITS == 1: [batch, Hq, D], q's dtype. Else: partials [batch, Hq, NUM_SPLITS, D] fp32
    lse_ptr,  # [batch, Hq, NUM_SPLITS] fp32, base-2 log-sum-exp per split (unused with one split)
    scale_log2,  # softmax scale * log2(e)
    split_len,  # tokens per split, a multiple of BLOCK_N
    stride_qb, stride_qh,
    stride_bt,
    stride_cb, stride_co, stride_ch,  # cache strides: block, offset, head
    stride_ob, stride_oh, stride_os,  # output strides: sequence, head, split (split unused with one split)
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    GROUP_P: tl.constexpr, DIM_P: tl.constexpr, BLOCK_N: tl.constexpr,
    NUM_SPLITS: tl.constexpr, DOT_PRECISION: tl.constexpr, RETURN_LSE: tl.constexpr = False,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context_len = tl.load(context_lens_ptr + seq)
    start = split * split_len
    end = tl.minimum(start + split_len, context_len)  # <= start: an empty split

    rows = tl.arange(0, GROUP_P)  # row g is query head kv_head * GROUP + g
    dims = tl.arange(0, DIM_P)
    row_ok = rows < GROUP
    dim_ok = dims < HEAD_DIM
    heads = kv_head * GROUP + rows
    q = tl.load(q_ptr + seq * stride_qb + heads[:, None] * stride_qh + dims[None, :],
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)  # [GROUP_P, DIM_P]
    q = q.to(k_cache_ptr.dtype.element_ty)

    m_i = tl.full([GROUP_P], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_P], tl.float32)
    acc = tl.zeros([GROUP_P, DIM_P], tl.float32)
    cols = tl.arange(0, BLOCK_N)
    for tile in range(start, end, BLOCK_N):
        # step 1: this tile's positions -> pool addresses, through the block table
        pos = tile + cols  # [BLOCK_N]
        pos_ok = pos < end
        block = tl.load(block_tables_ptr + seq * stride_bt + pos // BLOCK_SIZE, mask=pos_ok, other=0)
        token_base = block.to(tl.int64) * stride_cb + (pos % BLOCK_SIZE) * stride_co + kv_head * stride_ch
        kv_mask = pos_ok[:, None] & dim_ok[None, :]
        k = tl.load(k_cache_ptr + token_base[:, None] + dims[None, :], mask=kv_mask, other=0.0)  # [BLOCK_N, DIM_P]
        v = tl.load(v_cache_ptr + token_base[:, None] + dims[None, :], mask=kv_mask, other=0.0)

        # step 3: all GROUP query heads against the tile in one product
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale_log2  # [GROUP_P, BLOCK_N] fp32
        s = tl.where(pos_ok[None, :], s, float("-inf"))

        # step 2: online softmax, base 2
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)  # rescales what was summed under the old max (0 on the first tile)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    has_keys = l_i > 0
    out = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    out_mask = row_ok[:, None] & dim_ok[None, :]
    out_offs = seq * stride_ob + heads[:, None] * stride_oh + dims[None, :]
    if NUM_SPLITS == 1 and not RETURN_LSE:
        tl.store(out_ptr + out_offs, out.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        tl.store(out_ptr + out_offs + split * stride_os, out, mask=out_mask)
        lse = tl.where(has_keys, m_i + tl.log2(tl.where(has_keys, l_i, 1.0)), float("-inf"))
        num_q_heads = GROUP * tl.num_programs(1)  # lse is a contiguous [batch, Hq, NUM_SPLITS]
        tl.store(lse_ptr + (seq * num_q_heads + heads) * NUM_SPLITS + split, lse, mask=row_ok)


@triton.jit
def merge_splits_kernel(
    partial_ptr,  # [batch, Hq, NUM_SPLITS, D] fp32, each split's normalized output
    lse_ptr,  # [batch, Hq, NUM_SPLITS] fp32, base-2 log-sum-exp, -inf for an empty split
    out_ptr,  # [batch, Hq, D]
    stride_ob, stride_oh,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, NUM_SPLITS: tl.constexpr,
    SPLITS_P: tl.constexpr, DIM_P: tl.constexpr,
):
    """One program per (sequence, query head): weigh each split by ``2 ** lse`` and sum."""
    seq = tl.program_id(0)
    head = tl.program_id(1)
    splits = tl.arange(0, SPLITS_P)
    dims = tl.arange(0, DIM_P)
    split_ok = splits < NUM_SPLITS
    row = seq * NUM_HEADS + head
    lse = tl.load(lse_ptr + row * NUM_SPLITS + splits, mask=split_ok, other=float("-inf"))
    w = tl.exp2(lse - tl.max(lse, 0))  # [SPLITS_P]; split 0 always has keys, so the max is finite
    part = tl.load(partial_ptr + (row * NUM_SPLITS + splits[:, None]) * HEAD_DIM + dims[None, :],
                   mask=split_ok[:, None] & (dims[None, :] < HEAD_DIM), other=0.0)  # [SPLITS_P, DIM_P]
    out = tl.sum(part * w[:, None], 0) / tl.sum(w, 0)
    tl.store(out_ptr + seq * stride_ob + head * stride_oh + dims, out.to(out_ptr.dtype.element_ty),
             mask=dims < HEAD_DIM)


def decode_block_n(block_size: int) -> int:
    """Tokens per K/V tile: one pool block when it is 16..64 tokens, else clamped into 16..64."""
    return min(64, max(16, block_size))


def choose_num_splits(batch: int, num_kv_heads: int, max_context_len: int, block_n: int,
                      target_programs: int = 256, min_split_tokens: int = 256) -> int:
    """Splits that bring ``batch * Hkv * splits`` near ``target_programs`` (about two per SM on
    an H100/H200) without cutting any split below ``min_split_tokens`` tokens."""
    by_occupancy = -(-target_programs // max(1, batch * num_kv_heads))
    by_length = max(1, max_context_len // max(min_split_tokens, block_n))
    return max(1, min(by_occupancy, by_length, 64))


def triton_paged_decode_attention(
    q: torch.Tensor,  # [batch, Hq, D]
    k_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
    v_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
    block_tables: torch.Tensor,  # [batch, max_blocks] int
    context_lens: torch.Tensor,  # [batch] int, >= 1, the new token included
    scale: float | None = None,
    num_splits: int | None = None,
    max_context_len: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:  # [batch, Hq, D], q's dtype
    """What :func:`~minikv.attention.torch_ref.paged_decode_attention` computes, with no gather copy.

    The first six arguments are the reference's, so this function plugs in
    wherever a ``PagedDecodeFn`` is taken. ``num_splits``: None picks by
    :func:`choose_num_splits`; 1 is a single pass. ``max_context_len`` saves
    reading ``context_lens.max()`` back from the device (a sync) when the caller
    knows it. ``block_n``: tokens per tile (default :func:`decode_block_n`).
    """
    batch, num_q_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    group = num_q_heads // num_kv_heads
    out = torch.empty_like(q)
    if batch == 0:
        return out
    check_triton_device(q, k_cache, block_tables, context_lens)
    assert q.stride(2) == 1 and k_cache.stride(3) == 1 and v_cache.stride() == k_cache.stride()
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    if max_context_len is None:
        max_context_len = int(context_lens.max())
    block_n = decode_block_n(block_size) if block_n is None else block_n
    if num_splits is None:
        num_splits = choose_num_splits(batch, num_kv_heads, max_context_len, block_n)
    # every split a whole number of tiles, and no more splits than there are tiles
    split_len = block_n * -(-max_context_len // (block_n * num_splits))
    num_splits = -(-max_context_len // split_len)
    dim_p = pow2_at_least(head_dim, 16)
    meta = dict(GROUP=group, HEAD_DIM=head_dim, BLOCK_SIZE=block_size, GROUP_P=pow2_at_least(group, 16),
                DIM_P=dim_p, BLOCK_N=block_n, NUM_SPLITS=num_splits,
                DOT_PRECISION="ieee" if k_cache.dtype == torch.float32 else "tf32")
    grid = (batch, num_kv_heads, num_splits)
    common = (k_cache, v_cache, block_tables, context_lens)
    cache_strides = (k_cache.stride(0), k_cache.stride(1), k_cache.stride(2))
    if num_splits == 1:
        paged_decode_kernel[grid](q, *common, out, out, scale * LOG2_E, split_len,
                                  q.stride(0), q.stride(1), block_tables.stride(0), *cache_strides,
                                  out.stride(0), out.stride(1), 0, **meta)
        return out
    partial = torch.empty(batch, num_q_heads, num_splits, head_dim, dtype=torch.float32, device=q.device)
    lse = torch.empty(batch, num_q_heads, num_splits, dtype=torch.float32, device=q.device)
    paged_decode_kernel[grid](q, *common, partial, lse, scale * LOG2_E, split_len,
                              q.stride(0), q.stride(1), block_tables.stride(0), *cache_strides,
                              partial.stride(0), partial.stride(1), partial.stride(2), **meta)
    merge_splits_kernel[(batch, num_q_heads)](partial, lse, out, out.stride(0), out.stride(1),
                                              NUM_HEADS=num_q_heads, HEAD_DIM=head_dim, NUM_SPLITS=num_splits,
                                              SPLITS_P=pow2_at_least(num_splits), DIM_P=dim_p)
    return out

"""Triton kernel 3 of 3: prefill attention over a cached prefix (and chunked prefill).

The spec is :func:`minikv.attention.torch_ref.paged_attention`. Sequence ``b``
brings ``q_len`` new tokens (rows ``query_start_loc[b] : query_start_loc[b+1]``
of the flat ``q``, the "varlen" layout); they are the last ``q_len`` of its
``context_len`` cached tokens, whose K/V were stored just before. The first
``prefix_len = context_len - q_len`` tokens are a cached prefix (a prefix-cache
hit, or the earlier chunks of a chunked prefill): every new token sees all of
them. Among themselves the new tokens are causal. As one mask over key
position ``k`` for the new token at absolute position ``p = prefix_len + i``::

    visible(p, k) = k <= p          (which also keeps k < context_len)

so a prefill with no prefix, a prefill after a prefix hit, one chunk of a
chunked prefill and a single decode token are all the same kernel with
different ``prefix_len``; one launch serves a batch that mixes them.

Grid: ``(sequence, kv head, query tile)``. A program takes ``BLOCK_Q`` new
tokens times the ``GROUP`` query heads of one kv head as the
``BLOCK_M = BLOCK_Q * GROUP`` rows of its ``q`` tile (row ``r`` is token
``r // GROUP``, head ``r % GROUP``, packed with no padding between tokens), so
each K/V tile it reads serves every query head that needs it. It then walks
the keys ``0 .. last visible position`` tile by tile exactly as the decode kernel does
(:mod:`minikv.attention.triton_decode`: addresses through the block table,
online softmax in base 2, fp32 accumulators), adding the causal mask above.
Query tiles past a sequence's new tokens do no work (the grid is sized for
the longest sequence).

What a faster version would change (left out to keep the mask in one place):
tiles wholly inside the prefix need no mask, and keys after a tile's last
query are never loaded only because the loop stops there.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from minikv.attention.triton_common import check_triton_device, pow2_at_least
from minikv.attention.triton_decode import LOG2_E


@triton.jit
def paged_prefill_kernel(
    q_ptr,  # [num_tokens, Hq, D]
    k_cache_ptr, v_cache_ptr,  # [num_blocks, block_size, Hkv, D]
    block_tables_ptr,  # [batch, max_blocks] int
    query_start_loc_ptr,  # [batch + 1] int
    context_lens_ptr,  # [batch] int, new tokens included
    out_ptr,  # [num_tokens, Hq, D]
    scale_log2,  # softmax scale * log2(e)
    stride_qt, stride_qh,
    stride_bt,
    stride_cb, stride_co, stride_ch,  # cache strides: block, offset, head
    stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr, DIM_P: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    q_tile = tl.program_id(2)
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    context_len = tl.load(context_lens_ptr + seq)
    prefix_len = context_len - q_len

    rows = tl.arange(0, BLOCK_M)
    token = q_tile * BLOCK_Q + rows // GROUP  # index among this sequence's new tokens
    g = rows % GROUP
    row_ok = (rows < BLOCK_Q * GROUP) & (token < q_len)
    q_pos = prefix_len + token  # absolute position of each row's token
    heads = kv_head * GROUP + g
    dims = tl.arange(0, DIM_P)
    dim_ok = dims < HEAD_DIM
    q = tl.load(q_ptr + (q_start + token)[:, None] * stride_qt + heads[:, None] * stride_qh + dims[None, :],
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)  # [BLOCK_M, DIM_P]
    q = q.to(k_cache_ptr.dtype.element_ty)

    # keys 0 .. the tile's last token's position; a tile past the new tokens reads none
    tile_has_tokens = q_tile * BLOCK_Q < q_len
    kv_end = tl.where(tile_has_tokens, tl.minimum(prefix_len + (q_tile + 1) * BLOCK_Q, context_len), 0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DIM_P], tl.float32)
    cols = tl.arange(0, BLOCK_N)
    for tile in range(0, kv_end, BLOCK_N):
        pos = tile + cols  # key positions [BLOCK_N]
        pos_ok = pos < kv_end
        block = tl.load(block_tables_ptr + seq * stride_bt + pos // BLOCK_SIZE, mask=pos_ok, other=0)
        token_base = block.to(tl.int64) * stride_cb + (pos % BLOCK_SIZE) * stride_co + kv_head * stride_ch
        kv_mask = pos_ok[:, None] & dim_ok[None, :]
        k = tl.load(k_cache_ptr + token_base[:, None] + dims[None, :], mask=kv_mask, other=0.0)  # [BLOCK_N, DIM_P]
        v = tl.load(v_cache_ptr + token_base[:, None] + dims[None, :], mask=kv_mask, other=0.0)

        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale_log2  # [BLOCK_M, BLOCK_N]
        # the prefix/causal mask: key k is visible to the row at position p iff k <= p
        visible = pos_ok[None, :] & (pos[None, :] <= q_pos[:, None])
        s = tl.where(visible, s, float("-inf"))

        # every row sees key 0 in the first tile, so m_new is finite from then on
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + (q_start + token)[:, None] * stride_ot + heads[:, None] * stride_oh + dims[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])


def prefill_tile_rows(group: int, block_m: int = 64) -> tuple[int, int]:
    """``(BLOCK_Q, BLOCK_M)``: whole tokens per query tile, and the tile's rows (a power of two >= 16)."""
    block_m = pow2_at_least(max(block_m, group), 16)
    return block_m // group, block_m


def triton_paged_attention(
    q: torch.Tensor,  # [num_tokens, Hq, D]
    k_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
    v_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
    block_tables: torch.Tensor,  # [batch, max_blocks] int
    query_start_loc: torch.Tensor,  # [batch + 1] int, on q's device
    context_lens: torch.Tensor,  # [batch] int, on q's device, new tokens included
    scale: float | None = None,
    max_query_len: int | None = None,
    block_m: int = 64,
    block_n: int | None = None,
) -> torch.Tensor:  # [num_tokens, Hq, D], q's dtype
    """What :func:`~minikv.attention.torch_ref.paged_attention` computes, in one launch for the whole batch.

    ``max_query_len`` (the most new tokens of any sequence) sizes the grid;
    give it when known to save a device-to-host read. ``block_m``: rows of a
    query tile (tokens x grouped heads); ``block_n``: keys per tile.
    """
    num_tokens, num_q_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    group = num_q_heads // num_kv_heads
    batch = block_tables.shape[0]
    out = torch.empty_like(q)
    if num_tokens == 0 or batch == 0:
        return out
    check_triton_device(q, k_cache, block_tables, query_start_loc, context_lens)
    assert q.stride(2) == 1 and k_cache.stride(3) == 1 and v_cache.stride() == k_cache.stride()
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    if max_query_len is None:
        max_query_len = int((query_start_loc[1:] - query_start_loc[:-1]).max())
    block_q, block_m = prefill_tile_rows(group, block_m)
    block_n = min(64, max(16, block_size)) if block_n is None else block_n
    grid = (batch, num_kv_heads, -(-max_query_len // block_q))
    paged_prefill_kernel[grid](
        q, k_cache, v_cache, block_tables, query_start_loc, context_lens, out, scale * LOG2_E,
        q.stride(0), q.stride(1), block_tables.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), out.stride(0), out.stride(1),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_SIZE=block_size, BLOCK_Q=block_q, BLOCK_M=block_m,
        DIM_P=pow2_at_least(head_dim, 16), BLOCK_N=block_n,
        DOT_PRECISION="ieee" if k_cache.dtype == torch.float32 else "tf32",
    )
    return out

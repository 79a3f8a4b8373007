"""Triton shared-prefix ("cascade") decode attention: the shared blocks read once for all their sequences.

The spec is :func:`minikv.attention.cascade.cascade_decode` (and, through it,
:func:`~minikv.attention.torch_ref.paged_decode_attention`): the same answer,
with the shared prefix attended once. The split into parts and the
log-sum-exp merge are explained in :mod:`minikv.attention.cascade`; here
each part is a kernel and nothing is gathered:

1. :func:`shared_prefix_kernel`: one program per ``(group, kv head, row tile)``.
   The rows of its ``q`` tile are the query heads of *all* the group's members
   that read this kv head (``members * group`` rows, e.g. 8 sequences x 3 heads
   = 24 rows), so every K/V tile of the shared blocks is loaded once and
   multiplied against all of them (``tl.dot``: a real matrix product, where
   plain decode does one small product per sequence over the same keys). It
   writes each row's normalized output and base-2 log-sum-exp.
2. the decode kernel of :mod:`minikv.attention.triton_decode` over each
   sequence's *own* blocks (its block table shifted past the shared ones),
   with ``RETURN_LSE`` so it also writes its log-sum-exp;
3. :func:`merge_parts_kernel`: ``out = (2**lse_a * o_a + 2**lse_b * o_b) / (2**lse_a + 2**lse_b)``
   per row and head, computed with the larger lse subtracted (a part with no
   keys has ``lse = -inf`` and weighs nothing).

Which sequences share what is found on the host, once per step
(:func:`~minikv.attention.cascade.find_shared_prefixes`); :class:`TritonCascadePlan`
turns it into small index tensors that every layer reuses. fp32 accumulation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from minikv.attention import cascade as cascade_mod
from minikv.attention.cascade import SharedGroup, find_shared_prefixes
from minikv.attention.triton_common import check_triton_device, pow2_at_least
from minikv.attention.triton_decode import LOG2_E, decode_block_n, paged_decode_kernel


@triton.jit
def shared_prefix_kernel(
    q_ptr,  # [batch, Hq, D]
    k_cache_ptr, v_cache_ptr,  # [num_blocks, block_size, Hkv, D]
    members_ptr,  # [groups, max_members] int: batch rows of each group's members
    num_members_ptr,  # [groups] int
    blocks_ptr,  # [groups, max_shared] int: each group's shared block ids
    num_shared_ptr,  # [groups] int: shared blocks (all full)
    out_ptr,  # [batch, Hq, D] fp32: the shared part's normalized output (rows of grouped sequences)
    lse_ptr,  # [batch, Hq] fp32: its base-2 log-sum-exp
    scale_log2,
    stride_qb, stride_qh,
    stride_mg, stride_bg,
    stride_cb, stride_co, stride_ch,
    stride_ob, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, NUM_Q_HEADS: tl.constexpr,
    BLOCK_M: tl.constexpr, DIM_P: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    grp = tl.program_id(0)
    kv_head = tl.program_id(1)
    tile_m = tl.program_id(2)
    n_members = tl.load(num_members_ptr + grp)
    shared_len = tl.load(num_shared_ptr + grp) * BLOCK_SIZE

    rows = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)  # row r: member r // GROUP, query head kv_head * GROUP + r % GROUP
    row_ok = rows < n_members * GROUP
    member = tl.load(members_ptr + grp * stride_mg + rows // GROUP, mask=row_ok, other=0)
    heads = kv_head * GROUP + rows % GROUP
    dims = tl.arange(0, DIM_P)
    dim_ok = dims < HEAD_DIM
    q = tl.load(q_ptr + member[:, None].to(tl.int64) * stride_qb + heads[:, None] * stride_qh + dims[None, :],
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)  # [BLOCK_M, DIM_P]
    q = q.to(k_cache_ptr.dtype.element_ty)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DIM_P], tl.float32)
    cols = tl.arange(0, BLOCK_N)
    for tile in range(0, shared_len, BLOCK_N):
        pos = tile + cols
        pos_ok = pos < shared_len
        block = tl.load(blocks_ptr + grp * stride_bg + pos // BLOCK_SIZE, mask=pos_ok, other=0)
        token_base = block.to(tl.int64) * stride_cb + (pos % BLOCK_SIZE) * stride_co + kv_head * stride_ch
        kv_mask = pos_ok[:, None] & dim_ok[None, :]
        k = tl.load(k_cache_ptr + token_base[:, None] + dims[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_cache_ptr + token_base[:, None] + dims[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale_log2  # [BLOCK_M, BLOCK_N]
        s = tl.where(pos_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    offs = member[:, None].to(tl.int64) * stride_ob + heads[:, None] * stride_oh + dims[None, :]
    tl.store(out_ptr + offs, out, mask=row_ok[:, None] & dim_ok[None, :])
    lse = m_i + tl.log2(tl.where(l_i > 0, l_i, 1.0))
    tl.store(lse_ptr + member.to(tl.int64) * NUM_Q_HEADS + heads, lse, mask=row_ok)


@triton.jit
def merge_parts_kernel(
    o_a_ptr, lse_a_ptr,  # [batch, Hq, D] fp32, [batch, Hq] fp32 (-inf: no keys in this part)
    o_b_ptr, lse_b_ptr,  # the same layout (the decode kernel's partial with one split)
    out_ptr,  # [batch, Hq, D], q's dtype
    stride_ob, stride_oh,
    HEAD_DIM: tl.constexpr, DIM_P: tl.constexpr,
):
    """One program per (sequence, query head): the two parts weighed by ``2 ** lse``."""
    row = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    dims = tl.arange(0, DIM_P)
    ok = dims < HEAD_DIM
    lse_a = tl.load(lse_a_ptr + row)
    lse_b = tl.load(lse_b_ptr + row)
    top = tl.maximum(lse_a, lse_b)  # finite: every query sees at least one key
    w_a = tl.exp2(lse_a - top)
    w_b = tl.exp2(lse_b - top)
    o_a = tl.load(o_a_ptr + row * HEAD_DIM + dims, mask=ok, other=0.0)
    o_b = tl.load(o_b_ptr + row * HEAD_DIM + dims, mask=ok, other=0.0)
    out = (o_a * w_a + o_b * w_b) / (w_a + w_b)
    tl.store(out_ptr + tl.program_id(0) * stride_ob + tl.program_id(1) * stride_oh + dims,
             out.to(out_ptr.dtype.element_ty), mask=ok)


class TritonCascadePlan:
    """A decode step's shared groups as device tensors (built once per step, reused by every layer).

    ``members [G, max_members]``, ``num_members [G]``, ``blocks [G, max_shared]``,
    ``num_shared [G]``; for part 2, ``own_tables [B, W]`` (each sequence's block
    table after its shared blocks) and ``own_lens [B]`` (its tokens there).
    """

    def __init__(self, block_tables: torch.Tensor, context_lens: Sequence[int], block_size: int,
                 groups: list[SharedGroup]) -> None:
        device = block_tables.device
        self.groups, self.block_size = groups, block_size
        self.max_members = max(len(g.members) for g in groups)

        def padded(rows: list[tuple[int, ...]]) -> torch.Tensor:
            width = max(len(r) for r in rows)
            return torch.tensor([list(r) + [0] * (width - len(r)) for r in rows], dtype=torch.int32, device=device)

        self.members = padded([g.members for g in groups])
        self.blocks = padded([g.block_ids for g in groups])
        self.num_members = torch.tensor([len(g.members) for g in groups], dtype=torch.int32, device=device)
        self.num_shared = torch.tensor([len(g.block_ids) for g in groups], dtype=torch.int32, device=device)
        skip = [0] * len(context_lens)  # shared blocks per sequence
        for g in groups:
            for b in g.members:
                skip[b] = len(g.block_ids)
        width = block_tables.shape[1]
        cols = torch.arange(width, device=device)[None, :] + torch.tensor(skip, device=device)[:, None]
        self.own_tables = block_tables.gather(1, cols.clamp(max=width - 1)).contiguous()  # cols past the end: unread
        self.own_lens = torch.tensor([n - s * block_size for n, s in zip(context_lens, skip)], dtype=torch.int32,
                                     device=device)
        self.max_own_len = int(max(int(x) for x in self.own_lens.tolist()))

    @classmethod
    def build(cls, block_tables: torch.Tensor, context_lens: Sequence[int], block_size: int,
              min_seqs: int | None = None, min_blocks: int | None = None,
              min_saved_tokens: int | None = None) -> TritonCascadePlan | None:
        """The plan, or ``None`` when no group shares enough (thresholds as :class:`~minikv.attention.cascade.CascadePlan`)."""
        groups = find_shared_prefixes(
            block_tables.tolist(), list(context_lens), block_size,
            cascade_mod.MIN_SEQS if min_seqs is None else min_seqs,
            cascade_mod.MIN_SHARED_BLOCKS if min_blocks is None else min_blocks,
            cascade_mod.MIN_SAVED_TOKENS if min_saved_tokens is None else min_saved_tokens)
        return cls(block_tables, context_lens, block_size, groups) if groups else None


def triton_cascade_decode(
    q: torch.Tensor,  # [batch, Hq, D], one new token per sequence
    k_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
    v_cache: torch.Tensor,
    plan: TritonCascadePlan,
    scale: float | None = None,
) -> torch.Tensor:  # [batch, Hq, D], q's dtype
    """What :func:`~minikv.attention.cascade.cascade_decode` computes, in three Triton launches."""
    batch, num_q_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    group = num_q_heads // num_kv_heads
    check_triton_device(q, k_cache)
    assert q.stride(2) == 1 and k_cache.stride(3) == 1 and v_cache.stride() == k_cache.stride()
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    device, f32 = q.device, torch.float32
    dim_p = pow2_at_least(head_dim, 16)
    block_n = decode_block_n(block_size)
    precision = "ieee" if k_cache.dtype == torch.float32 else "tf32"
    cache_strides = (k_cache.stride(0), k_cache.stride(1), k_cache.stride(2))

    # part 1: each group's shared blocks against all its members' queries
    o_shared = torch.zeros(batch, num_q_heads, head_dim, dtype=f32, device=device)
    lse_shared = torch.full((batch, num_q_heads), float("-inf"), dtype=f32, device=device)
    rows = plan.max_members * group
    block_m = min(64, pow2_at_least(rows, 16))
    grid = (len(plan.groups), num_kv_heads, -(-rows // block_m))
    shared_prefix_kernel[grid](
        q, k_cache, v_cache, plan.members, plan.num_members, plan.blocks, plan.num_shared, o_shared, lse_shared,
        scale * LOG2_E, q.stride(0), q.stride(1), plan.members.stride(0), plan.blocks.stride(0), *cache_strides,
        o_shared.stride(0), o_shared.stride(1),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_SIZE=block_size, NUM_Q_HEADS=num_q_heads, BLOCK_M=block_m,
        DIM_P=dim_p, BLOCK_N=block_n, DOT_PRECISION=precision)

    # part 2: each sequence's own blocks, the decode kernel with one split that also returns its lse
    o_own = torch.empty(batch, num_q_heads, 1, head_dim, dtype=f32, device=device)
    lse_own = torch.empty(batch, num_q_heads, 1, dtype=f32, device=device)
    split_len = block_n * max(1, -(-plan.max_own_len // block_n))
    paged_decode_kernel[(batch, num_kv_heads, 1)](
        q, k_cache, v_cache, plan.own_tables, plan.own_lens, o_own, lse_own, scale * LOG2_E, split_len,
        q.stride(0), q.stride(1), plan.own_tables.stride(0), *cache_strides,
        o_own.stride(0), o_own.stride(1), o_own.stride(2),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_SIZE=block_size, GROUP_P=pow2_at_least(group, 16), DIM_P=dim_p,
        BLOCK_N=block_n, NUM_SPLITS=1, DOT_PRECISION=precision, RETURN_LSE=True)

    # part 3: merge
    out = torch.empty_like(q)
    merge_parts_kernel[(batch, num_q_heads)](o_shared, lse_shared, o_own, lse_own, out, out.stride(0), out.stride(1),
                                             HEAD_DIM=head_dim, DIM_P=dim_p)
    return out

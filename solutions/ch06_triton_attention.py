"""Chapter 06: paged attention in Triton (see chapters/06_triton_attention.ipynb).

Exercises 6.1-6.3: a block-table gather, the online-softmax loop of a paged
decode kernel, and the prefix/causal mask of prefill over a cached prefix.
Each is a Triton kernel (``@jit`` below is ``@triton.jit``); the plain Python function under it (given,
not an exercise) launches it with the signature of minikv's PyTorch reference
in :mod:`minikv.attention.torch_ref`. Check your work with
``minikv grade --chapter 6``, or ``minikv.grade.check("6.1")`` in the notebook.

Without a CUDA GPU the kernels run on the CPU in Triton's interpreter: this
file sets ``TRITON_INTERPRET=1`` before it imports triton when there is no
GPU (the variable is read when a kernel is defined). Use fp32 there.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402


def jit(fn):  # noqa: ANN001, ANN201 - a kernel in, a kernel out
    """``triton.jit``, keeping the kernel's docstring, so ``help(decode_kernel)`` shows its spec
    (the interpreter's wrapper drops it)."""
    kernel = triton.jit(fn)
    kernel.__doc__ = fn.__doc__
    return kernel


def pow2_at_least(n: int, floor: int = 1) -> int:
    """The smallest power of two ``>= max(n, floor)`` (``tl.arange`` takes powers of two only)."""
    p = floor
    while p < n:
        p *= 2
    return p


# ---- 6.1 ---------------------------------------------------------------------------------------


@jit
def gather_kv_kernel(
    cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim]: one layer's K (or V)
    block_table_ptr,  # [n_blocks] int: the sequence's blocks, in token order
    out_ptr,  # [length, num_kv_heads, head_dim], contiguous per head
    length,  # tokens to copy
    stride_cb, stride_co, stride_ch,  # cache strides: block, offset, kv head
    stride_ot, stride_oh,  # out strides: token, kv head
    BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, DIM_P: tl.constexpr,
):
    """Exercise 6.1: block-table gather.

    Copy the first ``length`` tokens of one sequence out of the paged cache
    into the contiguous ``out``, reading each token where it lies. Grid
    ``(cdiv(length, BLOCK_T), num_kv_heads)``: program ``(t, h)`` copies
    positions ``t * BLOCK_T .. t * BLOCK_T + BLOCK_T - 1`` of kv head ``h``,
    all ``HEAD_DIM`` values of each (a ``[BLOCK_T, DIM_P]`` tile).

    Position ``pos`` lives in block ``block_table[pos // BLOCK_SIZE]`` at
    offset ``pos % BLOCK_SIZE``; value ``d`` of kv head ``h`` is at
    ``cache_ptr + block * stride_cb + offset * stride_co + h * stride_ch + d``
    and goes to ``out_ptr + pos * stride_ot + h * stride_oh + d``.

    ``DIM_P`` is ``HEAD_DIM`` rounded up to a power of two and the last
    program's tile may run past ``length``: mask both, so that lanes
    ``pos >= length`` or ``d >= HEAD_DIM`` are neither read nor written (the
    table has no entry for them, and ``out`` ends at ``length``).
    """
    ### BEGIN SOLUTION
    tile = tl.program_id(0)
    head = tl.program_id(1)
    pos = tile * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T] positions of this program
    dims = tl.arange(0, DIM_P)
    pos_ok = pos < length
    block = tl.load(block_table_ptr + pos // BLOCK_SIZE, mask=pos_ok, other=0)  # one table entry per position
    src = block.to(tl.int64) * stride_cb + (pos % BLOCK_SIZE) * stride_co + head * stride_ch
    mask = pos_ok[:, None] & (dims < HEAD_DIM)[None, :]
    x = tl.load(cache_ptr + src[:, None] + dims[None, :], mask=mask)
    tl.store(out_ptr + pos[:, None] * stride_ot + head * stride_oh + dims[None, :], x, mask=mask)
    ### END SOLUTION


def gather_kv(
    cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    block_table: torch.Tensor,  # [n_blocks] long
    length: int,
    block_t: int = 16,
) -> torch.Tensor:  # [length, num_kv_heads, head_dim]
    """What ``torch_ref.gather_kv`` returns, copied by :func:`gather_kv_kernel` (given: not an exercise)."""
    _, block_size, num_kv_heads, head_dim = cache.shape
    out = torch.empty(length, num_kv_heads, head_dim, dtype=cache.dtype, device=cache.device)
    if length == 0:
        return out
    assert cache.stride(3) == 1, "each head's values must be contiguous"
    grid = (triton.cdiv(length, block_t), num_kv_heads)
    gather_kv_kernel[grid](cache, block_table, out, length,
                           cache.stride(0), cache.stride(1), cache.stride(2), out.stride(0), out.stride(1),
                           BLOCK_SIZE=block_size, HEAD_DIM=head_dim, BLOCK_T=block_t,
                           DIM_P=pow2_at_least(head_dim, 16))
    return out


# ---- 6.2 ---------------------------------------------------------------------------------------


@jit
def decode_kernel(
    q_ptr,  # [batch, num_q_heads, head_dim]
    k_cache_ptr, v_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables_ptr,  # [batch, max_blocks] int
    context_lens_ptr,  # [batch] int, >= 1, the new token included
    out_ptr,  # [batch, num_q_heads, head_dim]
    scale,  # softmax scale
    stride_qb, stride_qh,  # q strides: sequence, head
    stride_bt,  # block_tables row stride
    stride_cb, stride_co, stride_ch,  # cache strides: block, offset, kv head
    stride_ob, stride_oh,  # out strides: sequence, head
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    GROUP_P: tl.constexpr, DIM_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Exercise 6.2: online-softmax decode.

    Grid ``(batch, num_kv_heads)``: program ``(b, kv)`` computes the output
    of the ``GROUP`` query heads ``kv * GROUP .. kv * GROUP + GROUP - 1`` of
    sequence ``b``, whose one new token attends to its ``context_lens[b]``
    cached tokens. The given code loads their queries as the rows of one
    tile ``q [GROUP_P, DIM_P]`` (rows ``>= GROUP`` and lanes ``>= HEAD_DIM``
    are zero padding, never stored).

    You write the loop over the keys, ``BLOCK_N`` positions at a time:

    1. the tile's addresses through the block table, as in 6.1 (row
       ``b`` of the table starts at ``block_tables_ptr + b * stride_bt``), and
       masked loads of ``k`` and ``v`` ``[BLOCK_N, DIM_P]``;
    2. scores ``s = scale * q @ k^T`` ``[GROUP_P, BLOCK_N]``, ``-inf`` at
       positions ``>= context_len`` (``tl.dot(q, tl.trans(k), input_precision="ieee")``:
       exact fp32 on a GPU too, where tf32 is the default);
    3. the online softmax: carry per row ``m`` (the largest score so far),
       ``l`` (the sum of ``exp(s - m)``) and ``acc`` (the sum of
       ``exp(s - m) * v``, ``[GROUP_P, DIM_P]``, fp32). When a tile raises
       the max to ``m_new``, what was summed under the old max is rescaled
       by ``exp(m - m_new)`` before the tile's own terms are added.

    Then store ``acc / l`` to the rows ``< GROUP`` (in ``out``'s dtype).
    """
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    context_len = tl.load(context_lens_ptr + seq)
    rows = tl.arange(0, GROUP_P)  # row g is query head kv_head * GROUP + g
    dims = tl.arange(0, DIM_P)
    row_ok = rows < GROUP
    dim_ok = dims < HEAD_DIM
    heads = kv_head * GROUP + rows
    q = tl.load(q_ptr + seq * stride_qb + heads[:, None] * stride_qh + dims[None, :],
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)  # [GROUP_P, DIM_P]
    cols = tl.arange(0, BLOCK_N)
    ### BEGIN SOLUTION
    m_i = tl.full([GROUP_P], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_P], tl.float32)
    acc = tl.zeros([GROUP_P, DIM_P], tl.float32)
    for start in range(0, context_len, BLOCK_N):
        pos = start + cols  # [BLOCK_N]
        pos_ok = pos < context_len
        block = tl.load(block_tables_ptr + seq * stride_bt + pos // BLOCK_SIZE, mask=pos_ok, other=0)
        base = block.to(tl.int64) * stride_cb + (pos % BLOCK_SIZE) * stride_co + kv_head * stride_ch
        kv_mask = pos_ok[:, None] & dim_ok[None, :]
        k = tl.load(k_cache_ptr + base[:, None] + dims[None, :], mask=kv_mask, other=0.0)  # [BLOCK_N, DIM_P]
        v = tl.load(v_cache_ptr + base[:, None] + dims[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # [GROUP_P, BLOCK_N]
        s = tl.where(pos_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp(m_i - m_new)  # 0 on the first tile (m_i = -inf)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(out_ptr + seq * stride_ob + heads[:, None] * stride_oh + dims[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])
    ### END SOLUTION


def paged_decode_attention(
    q: torch.Tensor,  # [batch, num_q_heads, head_dim]
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables: torch.Tensor,  # [batch, max_blocks] long
    context_lens: torch.Tensor | Sequence[int],  # [batch]
    scale: float | None = None,
) -> torch.Tensor:  # [batch, num_q_heads, head_dim]
    """``torch_ref.paged_decode_attention``, computed by :func:`decode_kernel` in one launch (given).

    It plugs into the engine: ``LLM("tiny-llama", paged_decode_attention=paged_decode_attention)``.
    """
    batch, num_q_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    out = torch.empty_like(q)
    if batch == 0:
        return out
    q = q.contiguous()
    lens = torch.as_tensor(context_lens, device=q.device)
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    group = num_q_heads // num_kv_heads
    decode_kernel[(batch, num_kv_heads)](
        q, k_cache, v_cache, block_tables, lens, out, scale,
        q.stride(0), q.stride(1), block_tables.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), out.stride(0), out.stride(1),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_SIZE=block_size, GROUP_P=pow2_at_least(group, 16),
        DIM_P=pow2_at_least(head_dim, 16), BLOCK_N=max(16, block_size),
    )
    return out


# ---- 6.3 ---------------------------------------------------------------------------------------


@jit
def prefill_kernel(
    q_ptr,  # [num_tokens, num_q_heads, head_dim]: every sequence's new tokens, one after another
    k_cache_ptr, v_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables_ptr,  # [batch, max_blocks] int
    query_start_loc_ptr,  # [batch + 1] int: sequence b's new tokens are rows start[b] .. start[b + 1] - 1
    context_lens_ptr,  # [batch] int, the new tokens included
    out_ptr,  # [num_tokens, num_q_heads, head_dim]
    scale,
    stride_qt, stride_qh,  # q strides: token, head
    stride_bt,
    stride_cb, stride_co, stride_ch,  # cache strides: block, offset, kv head
    stride_ot, stride_oh,  # out strides: token, head
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_Q: tl.constexpr, DIM_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Exercise 6.3: prefix and causal mask.

    Prefill over a cached prefix. Sequence ``b`` brings ``q_len`` new tokens;
    they are the last ``q_len`` of its ``context_len`` tokens, whose K/V are
    all in the cache already, so the first ``prefix_len = context_len - q_len``
    are a cached prefix. Grid ``(batch, num_q_heads, cdiv(max q_len, BLOCK_Q))``:
    program ``(b, h, t)`` handles new tokens ``t * BLOCK_Q ..`` of sequence
    ``b`` for query head ``h`` (kv head ``h // GROUP``); the given code loads
    them as the rows of ``q [BLOCK_Q, DIM_P]`` (rows ``>= q_len`` are padding).

    You write the rest: the loop of 6.2 over key tiles (one query head per
    row here, no grouping), with the mask that makes it prefill. New token
    ``i`` sits at absolute position ``p = prefix_len + i``, and key ``k`` is
    visible to it iff ``k <= p``: the whole prefix, the new tokens before it,
    and itself; never a later one. A tile's keys past its last row's
    position are never visible, so the loop may stop there. Store the rows
    ``< q_len``.
    """
    seq = tl.program_id(0)
    head = tl.program_id(1)
    q_tile = tl.program_id(2)
    kv_head = head // GROUP
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    context_len = tl.load(context_lens_ptr + seq)
    token = q_tile * BLOCK_Q + tl.arange(0, BLOCK_Q)  # [BLOCK_Q] index among the sequence's new tokens
    row_ok = token < q_len
    dims = tl.arange(0, DIM_P)
    dim_ok = dims < HEAD_DIM
    q = tl.load(q_ptr + (q_start + token)[:, None] * stride_qt + head * stride_qh + dims[None, :],
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)  # [BLOCK_Q, DIM_P]
    cols = tl.arange(0, BLOCK_N)
    ### BEGIN SOLUTION
    prefix_len = context_len - q_len
    q_pos = prefix_len + token  # [BLOCK_Q] absolute position of each row's token
    kv_end = tl.minimum(prefix_len + (q_tile + 1) * BLOCK_Q, context_len)  # keys past the last row: never visible
    m_i = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, DIM_P], tl.float32)
    for start in range(0, kv_end, BLOCK_N):
        pos = start + cols
        pos_ok = pos < kv_end
        block = tl.load(block_tables_ptr + seq * stride_bt + pos // BLOCK_SIZE, mask=pos_ok, other=0)
        base = block.to(tl.int64) * stride_cb + (pos % BLOCK_SIZE) * stride_co + kv_head * stride_ch
        kv_mask = pos_ok[:, None] & dim_ok[None, :]
        k = tl.load(k_cache_ptr + base[:, None] + dims[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_cache_ptr + base[:, None] + dims[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # [BLOCK_Q, BLOCK_N]
        visible = pos_ok[None, :] & (pos[None, :] <= q_pos[:, None])  # the prefix/causal mask
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: key 0 is visible to every row
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # a tile past q_len saw no key: nothing to store
    tl.store(out_ptr + (q_start + token)[:, None] * stride_ot + head * stride_oh + dims[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])
    ### END SOLUTION


def paged_prefill_attention(
    q: torch.Tensor,  # [num_tokens, num_q_heads, head_dim]
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables: torch.Tensor,  # [batch, max_blocks] long
    query_start_loc: torch.Tensor | Sequence[int],  # [batch + 1]
    context_lens: torch.Tensor | Sequence[int],  # [batch]
    scale: float | None = None,
) -> torch.Tensor:  # [num_tokens, num_q_heads, head_dim]
    """``torch_ref.paged_attention``, computed by :func:`prefill_kernel` in one launch (given)."""
    num_tokens, num_q_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    out = torch.empty_like(q)
    starts = torch.as_tensor(query_start_loc, device=q.device)
    lens = torch.as_tensor(context_lens, device=q.device)
    batch = lens.shape[0]
    if num_tokens == 0 or batch == 0:
        return out
    q = q.contiguous()
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    max_q_len = int((starts[1:] - starts[:-1]).max())
    block_q = 16
    prefill_kernel[(batch, num_q_heads, triton.cdiv(max_q_len, block_q))](
        q, k_cache, v_cache, block_tables, starts, lens, out, scale,
        q.stride(0), q.stride(1), block_tables.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), out.stride(0), out.stride(1),
        GROUP=num_q_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=block_size, BLOCK_Q=block_q,
        DIM_P=pow2_at_least(head_dim, 16), BLOCK_N=max(16, block_size),
    )
    return out

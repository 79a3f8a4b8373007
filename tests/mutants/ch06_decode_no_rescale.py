"""6.2: moves the running max but adds each tile's terms to l and acc without rescaling the old ones."""

import triton
import triton.language as tl

TARGET = "6.2"
EXPECT = "not rescaled by exp(m_old - m_new)"


@triton.jit
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
    """6.2: moves the running max but adds each tile's terms to l and acc without rescaling the old ones."""
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
        l_i = l_i + tl.sum(p, 1)
        acc = acc + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(out_ptr + seq * stride_ob + heads[:, None] * stride_oh + dims[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])

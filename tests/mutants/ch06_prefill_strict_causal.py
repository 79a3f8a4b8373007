"""6.3: k < p instead of k <= p: a token does not attend to itself."""

import triton
import triton.language as tl

TARGET = "6.3"
EXPECT = "does not see itself"


@triton.jit
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
    """6.3: k < p instead of k <= p: a token does not attend to itself."""
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
        visible = pos_ok[None, :] & (pos[None, :] < q_pos[:, None])  # the prefix/causal mask
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

"""6.1: reads table entry pos // BLOCK_SIZE + 1, the next block, for every position."""

import triton
import triton.language as tl

TARGET = "6.1"
EXPECT = "off by one in the block index"


@triton.jit
def gather_kv_kernel(
    cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim]: one layer's K (or V)
    block_table_ptr,  # [n_blocks] int: the sequence's blocks, in token order
    out_ptr,  # [length, num_kv_heads, head_dim], contiguous per head
    length,  # tokens to copy
    stride_cb, stride_co, stride_ch,  # cache strides: block, offset, kv head
    stride_ot, stride_oh,  # out strides: token, kv head
    BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, DIM_P: tl.constexpr,
):
    """6.1: reads table entry pos // BLOCK_SIZE + 1, the next block, for every position."""
    tile = tl.program_id(0)
    head = tl.program_id(1)
    pos = tile * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T] positions of this program
    dims = tl.arange(0, DIM_P)
    pos_ok = pos < length
    block = tl.load(block_table_ptr + pos // BLOCK_SIZE + 1, mask=pos_ok, other=0)  # one table entry per position
    src = block.to(tl.int64) * stride_cb + (pos % BLOCK_SIZE) * stride_co + head * stride_ch
    mask = pos_ok[:, None] & (dims < HEAD_DIM)[None, :]
    x = tl.load(cache_ptr + src[:, None] + dims[None, :], mask=mask)
    tl.store(out_ptr + pos[:, None] * stride_ot + head * stride_oh + dims[None, :], x, mask=mask)

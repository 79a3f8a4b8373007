"""2.4 bug: reads every slot of the sequence's blocks, including those past context_len in the last block."""

import torch

TARGET = "2.4"
EXPECT = "not masked"


def paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale=None):
    batch, heads, dim = q.shape
    bs, kv_heads = k_cache.shape[1], k_cache.shape[2]
    scale = dim ** -0.5 if scale is None else scale
    out = torch.empty_like(q)
    for b, n in enumerate(torch.as_tensor(context_lens).tolist()):
        blocks = block_tables[b, : -(-n // bs)]
        k = k_cache[blocks].flatten(0, 1).repeat_interleave(heads // kv_heads, dim=1)  # whole blocks
        v = v_cache[blocks].flatten(0, 1).repeat_interleave(heads // kv_heads, dim=1)
        w = (torch.einsum("hd,nhd->hn", q[b], k) * scale).softmax(-1)
        out[b] = torch.einsum("hn,nhd->hd", w, v)
    return out

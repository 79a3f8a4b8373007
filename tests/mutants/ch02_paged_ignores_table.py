"""2.4 bug: reads the pool as if each sequence's tokens sat in blocks 0, 1, 2, ... (the block table is never used)."""

import torch

TARGET = "2.4"
EXPECT = "block table is ignored"


def paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale=None):
    batch, heads, dim = q.shape
    kv_heads = k_cache.shape[2]
    scale = dim ** -0.5 if scale is None else scale
    out = torch.empty_like(q)
    for b, n in enumerate(torch.as_tensor(context_lens).tolist()):
        k = k_cache.flatten(0, 1)[:n].repeat_interleave(heads // kv_heads, dim=1)
        v = v_cache.flatten(0, 1)[:n].repeat_interleave(heads // kv_heads, dim=1)
        w = (torch.einsum("hd,nhd->hn", q[b], k) * scale).softmax(-1)
        out[b] = torch.einsum("hn,nhd->hd", w, v)
    return out

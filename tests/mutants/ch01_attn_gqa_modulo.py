"""1.3 bug: query head h reads KV head h % num_kv_heads (repeat, not repeat_interleave)."""

import torch

TARGET = "1.3"
EXPECT = "h % 2"


def decode_attention(q, keys, values, scale):
    group = q.shape[0] // keys.shape[0]
    k = keys.repeat(group, 1, 1)
    v = values.repeat(group, 1, 1)
    scores = torch.einsum("hd,hld->hl", q, k) * scale
    return torch.einsum("hl,hld->hd", scores.softmax(dim=-1), v)

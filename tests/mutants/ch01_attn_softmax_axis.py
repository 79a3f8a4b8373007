"""1.3 bug: softmax over the heads instead of over the cached positions."""

import torch

TARGET = "1.3"
EXPECT = "the softmax runs over the query heads"


def decode_attention(q, keys, values, scale):
    group = q.shape[0] // keys.shape[0]
    k = keys.repeat_interleave(group, dim=0)
    v = values.repeat_interleave(group, dim=0)
    scores = torch.einsum("hd,hld->hl", q, k) * scale  # [heads, length]
    return torch.einsum("hl,hld->hd", scores.softmax(dim=0), v)

"""1.3 bug: forgets to multiply the scores by the scale."""

import torch

TARGET = "1.3"
EXPECT = "the scale is missing"


def decode_attention(q, keys, values, scale):
    group = q.shape[0] // keys.shape[0]
    k = keys.repeat_interleave(group, dim=0)
    v = values.repeat_interleave(group, dim=0)
    scores = torch.einsum("hd,hld->hl", q, k)
    return torch.einsum("hl,hld->hd", scores.softmax(dim=-1), v)

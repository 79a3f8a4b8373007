"""Attention over a contiguous K/V, in plain PyTorch: the spec the faster paths must match."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """One new token attends to every cached token (including its own K/V, already appended).

    q ``[num_heads, head_dim]``; keys, values ``[num_kv_heads, length, head_dim]``;
    returns ``[num_heads, head_dim]``. Query head ``h`` reads KV head
    ``h // (num_heads // num_kv_heads)`` (grouped-query attention).
    """
    group = q.shape[0] // keys.shape[0]
    k = keys.repeat_interleave(group, dim=0).float()  # [num_heads, length, head_dim]
    v = values.repeat_interleave(group, dim=0).float()
    scores = torch.einsum("hd,hld->hl", q.float(), k) * scale  # [num_heads, length]
    return torch.einsum("hl,hld->hd", scores.softmax(dim=-1), v).to(q.dtype)


def causal_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """The last ``T`` of ``length`` positions attend causally: q ``[T, Hq, D]`` -> ``[T, Hq, D]``.

    keys, values ``[Hkv, length, D]`` hold every token of the sequence, new ones last.
    Uses PyTorch's fused scaled-dot-product attention.
    """
    T, L = q.shape[0], keys.shape[1]
    qh = q.transpose(0, 1)[None]  # [1, Hq, T, D]
    if T == L:
        out = F.scaled_dot_product_attention(qh, keys[None], values[None], is_causal=True, scale=scale, enable_gqa=True)
    elif T == 1:
        out = F.scaled_dot_product_attention(qh, keys[None], values[None], scale=scale, enable_gqa=True)
    else:
        allowed = torch.ones(T, L, dtype=torch.bool, device=q.device).tril(diagonal=L - T)
        out = F.scaled_dot_product_attention(qh, keys[None], values[None], attn_mask=allowed, scale=scale, enable_gqa=True)
    return out[0].transpose(0, 1)

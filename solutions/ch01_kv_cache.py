"""Chapter 01: the KV cache (see chapters/01_kv_cache.ipynb).

Exercises 1.1-1.3: how big the cache is, a contiguous cache the engine can
use, and one decode step of attention that reads it. Check your work with
``minikv grade --chapter 1``, or ``minikv.grade.check("1.2")`` in the notebook.
"""

from __future__ import annotations

import torch

from minikv.errors import KVCacheFull


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Exercise 1.1: KV bytes per token.

    Each token leaves, in every layer, one key and one value vector per KV
    head, each ``head_dim`` numbers of ``dtype_bytes`` bytes. Return how many
    bytes one token adds to the cache, as an ``int``.

    >>> kv_bytes_per_token(num_layers=30, num_kv_heads=3, head_dim=64, dtype_bytes=2)  # SmolLM2-135M in bf16
    23040
    """
    ### BEGIN SOLUTION
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes
    ### END SOLUTION


class KVCache:
    """Exercise 1.2: contiguous KV cache.

    Keys and values of one sequence for every layer, in buffers allocated once:
    ``[num_layers, num_kv_heads, max_len, head_dim]`` for K and the same for V
    (heads before positions, so each head's keys are one contiguous run).

    ``append(layer, k, v)``: ``k``, ``v`` ``[T, num_kv_heads, head_dim]`` are
    the keys and values of ``T`` new tokens for ``layer``. Store them right
    after the tokens already stored in that layer, then return every key and
    value stored in that layer so far, each ``[num_kv_heads, length, head_dim]``.
    If they do not fit in ``max_len``, raise ``KVCacheFull`` and store nothing.

    ``lengths[layer]`` is the number of tokens stored in each layer;
    ``len(cache)`` the number stored in the last layer (the engine appends
    layer by layer, so the last layer is the last to grow).

    >>> cache = KVCache(num_layers=2, num_kv_heads=3, head_dim=8, max_len=10)
    >>> keys, values = cache.append(0, torch.zeros(4, 3, 8), torch.zeros(4, 3, 8))
    >>> keys.shape, cache.lengths, len(cache)
    (torch.Size([3, 4, 8]), [4, 0], 0)
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        ### BEGIN SOLUTION
        self.max_len = max_len
        self.k = torch.zeros(num_layers, num_kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.lengths = [0] * num_layers
        ### END SOLUTION

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``, ``v`` ``[T, num_kv_heads, head_dim]``; return all of ``layer``'s ``[num_kv_heads, length, head_dim]``."""
        ### BEGIN SOLUTION
        start = self.lengths[layer]
        end = start + k.shape[0]
        if end > self.max_len:
            raise KVCacheFull(f"this cache holds {self.max_len} tokens per layer, but {end} are needed")
        self.k[layer, :, start:end] = k.transpose(0, 1)  # [T, H, D] -> [H, T, D]
        self.v[layer, :, start:end] = v.transpose(0, 1)
        self.lengths[layer] = end
        return self.k[layer, :, :end], self.v[layer, :, :end]
        ### END SOLUTION

    def __len__(self) -> int:
        """Tokens stored in the last layer."""
        ### BEGIN SOLUTION
        return self.lengths[-1]
        ### END SOLUTION


def decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """Exercise 1.3: decode attention.

    One new token attends to every cached token of its sequence (its own K/V
    is already appended). ``q`` ``[num_heads, head_dim]``; ``keys``, ``values``
    ``[num_kv_heads, length, head_dim]``; returns ``[num_heads, head_dim]``.

    For query head ``h`` and its KV head ``g = h // (num_heads // num_kv_heads)``
    (grouped-query attention: consecutive query heads share one KV head),
    ``out[h] = softmax(scale * keys[g] @ q[h]) @ values[g]``, the softmax
    taken over the ``length`` cached positions.

    >>> q, kv = torch.zeros(4, 8), torch.ones(2, 5, 8)   # 4 query heads share 2 KV heads
    >>> decode_attention(q, kv, kv, scale=8 ** -0.5).shape
    torch.Size([4, 8])
    """
    ### BEGIN SOLUTION
    num_heads, head_dim = q.shape
    num_kv_heads = keys.shape[0]
    group = num_heads // num_kv_heads
    q = q.reshape(num_kv_heads, group, head_dim)  # query heads g*group .. g*group+group-1 read KV head g
    scores = q @ keys.transpose(1, 2) * scale  # [num_kv_heads, group, length]
    weights = scores.softmax(dim=-1)  # over the cached positions
    out = weights @ values  # [num_kv_heads, group, head_dim]
    return out.reshape(num_heads, head_dim)
    ### END SOLUTION

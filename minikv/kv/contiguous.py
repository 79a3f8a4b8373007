"""Chapter 01's cache: one preallocated, contiguous K/V buffer per sequence.

Simple and fast to read, but every sequence reserves room for its longest
possible length up front, and two sequences can never share their prefix.
Chapter 02 replaces it with paged blocks; it stays here as a baseline.
"""

from __future__ import annotations

import torch

from minikv.errors import KVCacheFull


class ContiguousKVCache:
    """K and V of one sequence for every layer, ``[num_layers, num_kv_heads, max_len, head_dim]``.

    ``append(layer, k, v)`` writes the new tokens' keys and values after the
    ones already stored in that layer and returns views of everything stored
    so far, ready for attention. Heads come before positions so that the
    returned ``[num_kv_heads, length, head_dim]`` views are contiguous per head.

    >>> cache = ContiguousKVCache(num_layers=2, num_kv_heads=3, head_dim=8, max_len=10)
    >>> keys, values = cache.append(0, torch.zeros(4, 3, 8), torch.zeros(4, 3, 8))
    >>> keys.shape, cache.lengths
    (torch.Size([3, 4, 8]), [4, 0])
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        self.max_len = max_len
        self.k = torch.zeros(num_layers, num_kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.lengths = [0] * num_layers

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: [T, num_kv_heads, head_dim] -> all keys, values: [num_kv_heads, length + T, head_dim]
        start = self.lengths[layer]
        end = start + k.shape[0]
        if end > self.max_len:
            raise KVCacheFull(f"the contiguous cache holds {self.max_len} tokens but {end} are needed")
        self.k[layer, :, start:end] = k.transpose(0, 1)
        self.v[layer, :, start:end] = v.transpose(0, 1)
        self.lengths[layer] = end
        return self.k[layer, :, :end], self.v[layer, :, :end]

    def __len__(self) -> int:
        return self.lengths[-1]

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

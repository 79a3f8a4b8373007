"""1.2 bug: refuses to fill the cache exactly to max_len (>= instead of >)."""

import torch

from minikv.errors import KVCacheFull

TARGET = "1.2"
EXPECT = "raised KVCacheFull, but minikv's did not"


class KVCache:
    def __init__(self, num_layers, num_kv_heads, head_dim, max_len, dtype=torch.float32, device="cpu"):
        self.max_len = max_len
        self.k = torch.zeros(num_layers, num_kv_heads, max_len + 1, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.lengths = [0] * num_layers

    def append(self, layer, k, v):
        start = self.lengths[layer]
        end = start + k.shape[0]
        if end >= self.max_len:
            raise KVCacheFull(f"needs {end} > {self.max_len}")
        self.k[layer, :, start:end] = k.transpose(0, 1)
        self.v[layer, :, start:end] = v.transpose(0, 1)
        self.lengths[layer] = end
        return self.k[layer, :, :end], self.v[layer, :, :end]

    def __len__(self):
        return self.lengths[-1]

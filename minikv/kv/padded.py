"""The batched contiguous baseline's KV store: one padded ``[rows, Hkv, row_len, D]`` K/V tensor per layer.

This is how a batch is served without paging (Hugging Face's static cache
works the same way): every sequence owns one *row* with room for the longest
sequence of the batch, whether it needs it or not. The engine hands rows out
with :class:`~minikv.engine.row_manager.RowManager`; the attention step that
reads and writes them is :class:`~minikv.attention.padded.PaddedStep`.
"""

from __future__ import annotations

import torch

from minikv.kv.pool import bytes_per_token


class PaddedKVCache:
    """K and V for ``num_rows`` sequences of up to ``row_len`` tokens, every layer.

    ``k[layer]``, ``v[layer]``: ``[num_rows, num_kv_heads, row_len, head_dim]``
    (heads before positions, so a row prefix is what SDPA reads). Zeroed, so
    masked-out positions hold finite values.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, num_rows: int, row_len: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        self.num_rows, self.row_len = num_rows, row_len
        kv = torch.zeros(2, num_layers, num_rows, num_kv_heads, row_len, head_dim, dtype=dtype, device=device)
        self.k, self.v = kv[0], kv[1]

    @staticmethod
    def num_bytes(num_layers: int, num_kv_heads: int, head_dim: int, num_rows: int, row_len: int,
                  dtype: torch.dtype) -> int:
        return num_rows * row_len * bytes_per_token(num_layers, num_kv_heads, head_dim, dtype)

"""The batched contiguous baseline's attention step, over a :class:`~minikv.kv.padded.PaddedKVCache`.

Every sequence owns one padded *row* of the cache (see :mod:`minikv.kv.padded`).
Decode is one fused SDPA call over all rows with a length mask, with no
gather, so it is the fair baseline that :class:`~minikv.attention.paged.PagedStep` is measured against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minikv.attention.reference import causal_attention
from minikv.kv.padded import PaddedKVCache

__all__ = ["PaddedKVCache", "PaddedStep"]  # PaddedKVCache lives in minikv.kv.padded


class PaddedStep:
    """One forward pass: sequence ``b`` lives in row ``rows[b]`` and has ``context_lens[b]`` tokens after this step.

    ``query_start_loc`` (B + 1 ints) splits the flat new tokens by sequence;
    the new tokens of a sequence are the last ones of its context.
    """

    def __init__(self, cache: PaddedKVCache, rows: list[int], query_start_loc: list[int],
                 context_lens: list[int], scale: float) -> None:
        self.cache, self.rows, self.scale = cache, list(rows), scale
        self.starts, self.context_lens = list(query_start_loc), list(context_lens)
        device = cache.k.device
        row_of, pos_of = [], []
        for b, (row, ctx) in enumerate(zip(self.rows, self.context_lens)):
            n = self.starts[b + 1] - self.starts[b]
            row_of += [row] * n
            pos_of += range(ctx - n, ctx)
        self.token_rows = torch.tensor(row_of, dtype=torch.long, device=device)  # [T]
        self.token_pos = torch.tensor(pos_of, dtype=torch.long, device=device)  # [T]
        self.is_decode = all(e - s == 1 for s, e in zip(self.starts, self.starts[1:]))
        if self.is_decode and self.rows:
            # Decode reads rows 0..R-1 in place; rows not in this batch get a dummy length of 1.
            self.num_rows = max(self.rows) + 1
            self.max_len = max(self.context_lens)
            lens = torch.ones(self.num_rows, dtype=torch.long)
            lens[self.rows] = torch.tensor(self.context_lens)
            valid = torch.arange(self.max_len)[None, :] < lens[:, None]  # [R, max_len]
            self.valid = valid[:, None, None, :].to(device)
            self.in_place = self.rows == list(range(self.num_rows))
            self.row_index = torch.tensor(self.rows, dtype=torch.long, device=device)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q [T, Hq, D]; k, v [T, Hkv, D] -> [T, Hq, D]
        k_rows, v_rows = self.cache.k[layer], self.cache.v[layer]  # [rows, Hkv, row_len, D]
        k_rows[self.token_rows, :, self.token_pos] = k.to(k_rows.dtype)
        v_rows[self.token_rows, :, self.token_pos] = v.to(v_rows.dtype)
        if self.is_decode:
            return self._decode(q, k_rows, v_rows)
        out = torch.empty_like(q)
        for b, (row, ctx) in enumerate(zip(self.rows, self.context_lens)):
            start, end = self.starts[b], self.starts[b + 1]
            if end == start:
                continue
            if end - start == ctx:  # the whole context is new
                kb, vb = k[start:end].transpose(0, 1), v[start:end].transpose(0, 1)
            else:
                kb, vb = k_rows[row, :, :ctx], v_rows[row, :, :ctx]
            out[start:end] = causal_attention(q[start:end], kb, vb, self.scale)
        return out

    def _decode(self, q: torch.Tensor, k_rows: torch.Tensor, v_rows: torch.Tensor) -> torch.Tensor:
        batch, num_q_heads, head_dim = q.shape
        num_kv_heads = k_rows.shape[1]
        qg = q.view(batch, num_kv_heads, num_q_heads // num_kv_heads, head_dim)  # head h = kv * group + g
        if not self.in_place:
            full = qg.new_zeros((self.num_rows, *qg.shape[1:]))
            qg = full.index_copy_(0, self.row_index, qg)
        keys = k_rows[: self.num_rows, :, : self.max_len]  # [R, Hkv, max_len, D], a view
        values = v_rows[: self.num_rows, :, : self.max_len]
        out = F.scaled_dot_product_attention(qg, keys, values, attn_mask=self.valid, scale=self.scale)
        if not self.in_place:
            out = out.index_select(0, self.row_index)
        return out.reshape(batch, num_q_heads, head_dim)

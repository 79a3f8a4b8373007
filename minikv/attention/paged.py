"""The paged backend: every sequence's K/V live in blocks of one shared :class:`~minikv.kv.KVPool`.

:class:`PagedStep` is the engine's :class:`~minikv.attention.backend.AttentionStep`
for the paged layout. Per layer it writes the new K/V at the slot mapping
(what :func:`~minikv.attention.torch_ref.write_kv` does, minus its checks,
which would stall a GPU every layer), then attends through the block
tables. It computes what :func:`~minikv.attention.torch_ref.paged_attention`
computes, faster:

- decode rows (one new token; a whole decode step, or the decoding
  sequences of a mixed step beside prefill chunks): one gather of their
  blocks into ``[batch, Hkv, max_len, D]``, then one fused SDPA call with a
  length mask (:func:`paged_decode_sdpa`); or, when sequences share leading
  blocks (a prefix-cache hit), shared-prefix attention that reads and
  attends the shared blocks once for all of them
  (:func:`~minikv.attention.cascade.cascade_decode`);
- prefill of a sequence whose whole context is new: causal SDPA straight on
  the new k/v, no gather;
- prefill (or a prefill chunk) after a cached prefix: gather that
  sequence's blocks, SDPA with a bottom-right causal mask.

Grouped-query decode without copying K/V per query head: the
``group = Hq // Hkv`` query heads that share a KV head are laid along SDPA's
query-length axis, ``q [B, Hkv, group, D]``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from minikv.attention import cascade as cascade_mod
from minikv.attention.reference import causal_attention
from minikv.kv.pool import KVPool

# (q [B, Hq, D], k_cache, v_cache [num_blocks, block_size, Hkv, D], block_tables [B, max_blocks],
#  context_lens [B], scale) -> [B, Hq, D]: torch_ref.paged_decode_attention's signature
PagedDecodeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def gather_slots(
    block_tables: torch.Tensor,  # [batch, max_blocks] long, pads past each sequence's blocks
    max_len: int,
    block_size: int,
) -> torch.Tensor:  # [batch, max_len] long
    """Flat slot of token ``t < max_len`` of each sequence (past a sequence's own blocks: junk, to be masked)."""
    width = -(-max_len // block_size)
    tables = block_tables[:, :width].clamp(min=0)
    slots = tables[:, :, None] * block_size + torch.arange(block_size, device=tables.device)
    return slots.flatten(1)[:, :max_len]


def paged_decode_sdpa(
    q: torch.Tensor,  # [batch, Hq, D], one new token per sequence
    k_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
    v_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
    slots: torch.Tensor,  # [batch, max_len] long, from gather_slots
    valid: torch.Tensor,  # [batch, 1, 1, max_len] bool, position < context_len
    scale: float,
) -> torch.Tensor:  # [batch, Hq, D]
    """Batched decode attention: gather through the slots, then one masked SDPA."""
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    flat = slots.reshape(-1)
    k = k_cache.view(-1, num_kv_heads, head_dim).index_select(0, flat)  # [batch * max_len, Hkv, D]
    v = v_cache.view(-1, num_kv_heads, head_dim).index_select(0, flat)
    k = k.view(batch, -1, num_kv_heads, head_dim).transpose(1, 2)  # [batch, Hkv, max_len, D]
    v = v.view(batch, -1, num_kv_heads, head_dim).transpose(1, 2)
    qg = q.view(batch, num_kv_heads, num_q_heads // num_kv_heads, head_dim)  # head h = kv * group + g
    out = F.scaled_dot_product_attention(qg, k, v, attn_mask=valid, scale=scale)
    return out.reshape(batch, num_q_heads, head_dim)


class PagedStep:
    """One forward pass over a batch whose K/V live in ``pool``.

    ``slot_mapping [T]``: where each new token's K/V go (no ``-1`` padding
    here). ``block_tables [B, max_blocks]``, ``query_start_loc`` (B + 1 ints)
    and ``context_lens`` (B ints, new tokens included) as in
    :mod:`minikv.attention.torch_ref`. Everything that does not
    depend on the layer (gather slots, masks) is computed once here.
    ``decode_fn`` replaces the batched decode path (chapter 02 plugs a learner's
    ``paged_decode_attention`` in here).
    ``cascade``: on a decode step, use shared-prefix attention when sequences
    share enough full leading blocks for it to pay (the thresholds of
    :mod:`minikv.attention.cascade`); ``None`` (default) follows the module switch
    ``minikv.attention.cascade.ENABLED`` (on). A ``decode_fn`` takes precedence.
    """

    def __init__(
        self,
        pool: KVPool,
        slot_mapping: torch.Tensor,  # [T] long
        block_tables: torch.Tensor,  # [B, max_blocks] long
        query_start_loc: list[int],  # B + 1
        context_lens: list[int],  # B
        scale: float,
        decode_fn: PagedDecodeFn | None = None,
        cascade: bool | None = None,
    ) -> None:
        self.pool, self.scale, self.decode_fn = pool, scale, decode_fn
        self.slot_mapping = slot_mapping
        self.block_tables = block_tables
        self.starts = list(query_start_loc)
        self.context_lens = list(context_lens)
        n_new = [e - st for st, e in zip(self.starts, self.starts[1:])]
        self.is_decode = all(n == 1 for n in n_new)
        # rows with one new token decode together (a mixed step's too); the others prefill one by one
        self.decode_rows = [b for b, n in enumerate(n_new) if n == 1 and self.context_lens[b] > 1]
        if self.is_decode:
            self.decode_rows = list(range(len(n_new)))
        self.cascade_plan: cascade_mod.CascadePlan | None = None
        device = block_tables.device
        if self.decode_rows:
            rows = self.decode_rows
            tables = block_tables if self.is_decode else block_tables[rows]
            lens_list = [self.context_lens[b] for b in rows]
            self.decode_tables = tables
            self.decode_q_rows = torch.tensor([self.starts[b] for b in rows], device=device)
            max_len = max(lens_list)
            use_cascade = cascade_mod.ENABLED if cascade is None else cascade
            if use_cascade and decode_fn is None:  # the shared prefix is found once per step, not per layer
                self.cascade_plan = cascade_mod.CascadePlan.build(tables, lens_list, pool.block_size)
            self.lens = lens = torch.tensor(lens_list, device=device)
            if self.cascade_plan is None:
                self.slots = gather_slots(tables, max_len, pool.block_size)  # [B_decode, max_len]
                self.valid = (torch.arange(max_len, device=device)[None, :] < lens[:, None])[:, None, None, :]
        # prefill after a cached prefix: each such sequence's slots and causal mask, once for all layers
        self.prefix_reads: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        decoding = set(self.decode_rows)
        if not self.is_decode:
            for b, context_len in enumerate(self.context_lens):
                n = n_new[b]
                if b not in decoding and 0 < n < context_len:
                    slots = gather_slots(block_tables[b:b + 1], context_len, pool.block_size)[0]
                    allowed = torch.ones(n, context_len, dtype=torch.bool, device=device)
                    self.prefix_reads[b] = (slots, allowed.tril(diagonal=context_len - n))

    def _decode(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        """Attention of the one-token rows ``q [B_decode, Hq, D]``, batched (cascade, plugged fn or SDPA)."""
        if self.decode_fn is not None:
            return self.decode_fn(q, k_cache, v_cache, self.decode_tables, self.lens, self.scale)
        if self.cascade_plan is not None:
            return cascade_mod.cascade_decode(q, k_cache, v_cache, self.cascade_plan, self.scale)
        return paged_decode_sdpa(q, k_cache, v_cache, self.slots, self.valid, self.scale)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q [T, Hq, D]; k, v [T, Hkv, D] -> [T, Hq, D]
        k_cache, v_cache = self.pool.k_cache(layer), self.pool.v_cache(layer)
        # slot s is row s of the flat [num_blocks * block_size, Hkv, D] view; the runner never pads
        k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, self.slot_mapping, k.to(k_cache.dtype))
        v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, self.slot_mapping, v.to(v_cache.dtype))
        if self.is_decode:
            return self._decode(q, k_cache, v_cache)
        out = torch.empty_like(q)
        if self.decode_rows:
            out[self.decode_q_rows] = self._decode(q[self.decode_q_rows], k_cache, v_cache)
        decoding = set(self.decode_rows)
        for b, context_len in enumerate(self.context_lens):
            start, end = self.starts[b], self.starts[b + 1]
            if end == start or b in decoding:
                continue
            if b not in self.prefix_reads:  # the whole context is new: no need to read the cache
                out[start:end] = causal_attention(q[start:end], k[start:end].transpose(0, 1),
                                                  v[start:end].transpose(0, 1), self.scale)
                continue
            slots, allowed = self.prefix_reads[b]
            kb = k_cache.flatten(0, 1).index_select(0, slots).transpose(0, 1)  # [Hkv, context_len, D]
            vb = v_cache.flatten(0, 1).index_select(0, slots).transpose(0, 1)
            qb = q[start:end].transpose(0, 1)[None]  # [1, Hq, n_new, D]
            o = F.scaled_dot_product_attention(qb, kb[None], vb[None], attn_mask=allowed, scale=self.scale,
                                               enable_gqa=True)
            out[start:end] = o[0].transpose(0, 1)
        return out

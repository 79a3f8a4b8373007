"""The Triton paged backend: :class:`TritonPagedStep`, a drop-in for :class:`~minikv.attention.paged.PagedStep`.

Same pool, same constructor inputs, same answers (within float rounding);
only the kernels change. Per layer, ``attend`` is two launches:

1. :func:`~minikv.attention.triton_store.triton_write_kv` stores the new K/V at the slot mapping;
2. a decode step (one new token per sequence) runs
   :func:`~minikv.attention.triton_decode.triton_paged_decode_attention`, or,
   when sequences share enough cached blocks to pay (the thresholds of
   :mod:`minikv.attention.cascade`), the three launches of
   :func:`~minikv.attention.triton_cascade.triton_cascade_decode`; any
   other step (prefill, prefill after a cached prefix, chunked prefill, or a
   batch that mixes them with decode tokens) runs
   :func:`~minikv.attention.triton_prefill.triton_paged_attention` once for the whole batch.

Neither reads a copy of the cache: both walk the block tables in place, which
is what makes a prefix-cache hit cheap. Everything that does not depend on
the layer (the small index tensors on the device, the split count) is built
once in ``__init__`` and reused by every layer.
"""

from __future__ import annotations

import torch

from minikv.attention import cascade as cascade_mod
from minikv.attention.paged import PagedDecodeFn
from minikv.attention.triton_cascade import TritonCascadePlan, triton_cascade_decode
from minikv.attention.triton_decode import choose_num_splits, decode_block_n, triton_paged_decode_attention
from minikv.attention.triton_prefill import triton_paged_attention
from minikv.attention.triton_store import triton_write_kv
from minikv.kv.pool import KVPool


class TritonPagedStep:
    """One forward pass over a batch whose K/V live in ``pool``, attended by Triton kernels.

    Arguments as :class:`~minikv.attention.paged.PagedStep`: ``slot_mapping [T]``
    long (no padding), ``block_tables [B, max_blocks]``, ``query_start_loc``
    (B + 1 ints), ``context_lens`` (B ints, new tokens included), ``scale``,
    and ``decode_fn``, a replacement for the decode kernel (chapter 06 plugs a
    learner's kernel in here). ``num_splits``: split-K for decode steps; None
    lets :func:`~minikv.attention.triton_decode.choose_num_splits` pick.
    ``cascade``: shared-prefix attention on decode steps (None: the switch
    ``minikv.attention.cascade.ENABLED``); a ``decode_fn`` takes precedence.
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
        num_splits: int | None = None,
        cascade: bool | None = None,
    ) -> None:
        self.pool, self.scale, self.decode_fn = pool, scale, decode_fn
        device = pool.device
        self.slot_mapping = slot_mapping.to(device)
        self.block_tables = block_tables.to(device)
        starts, lens = list(query_start_loc), list(context_lens)
        q_lens = [e - s for s, e in zip(starts, starts[1:])]
        self.is_decode = all(n == 1 for n in q_lens)
        self.max_query_len = max(q_lens, default=0)
        self.max_context_len = max(lens, default=0)
        self.query_start_loc = torch.tensor(starts, dtype=torch.long, device=device)  # [B + 1]
        self.context_lens = torch.tensor(lens, dtype=torch.long, device=device)  # [B]
        if num_splits is None and self.is_decode and lens:
            num_splits = choose_num_splits(len(lens), pool.num_kv_heads, self.max_context_len,
                                           decode_block_n(pool.block_size))
        self.num_splits = num_splits or 1
        self.cascade_plan: TritonCascadePlan | None = None
        use_cascade = cascade_mod.ENABLED if cascade is None else cascade
        if self.is_decode and use_cascade and decode_fn is None and lens:  # found once per step, not per layer
            self.cascade_plan = TritonCascadePlan.build(self.block_tables, lens, pool.block_size)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q [T, Hq, D]; k, v [T, Hkv, D] -> [T, Hq, D]
        k_cache, v_cache = self.pool.k_cache(layer), self.pool.v_cache(layer)
        # the kernels take any token/head strides but need each head's D values dense
        q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
        triton_write_kv(k, v, k_cache, v_cache, self.slot_mapping)
        if self.is_decode and self.decode_fn is not None:
            return self.decode_fn(q, k_cache, v_cache, self.block_tables, self.context_lens, self.scale)
        if self.cascade_plan is not None:
            return triton_cascade_decode(q, k_cache, v_cache, self.cascade_plan, self.scale)
        if self.is_decode:
            return triton_paged_decode_attention(q, k_cache, v_cache, self.block_tables, self.context_lens,
                                                 self.scale, num_splits=self.num_splits,
                                                 max_context_len=self.max_context_len)
        return triton_paged_attention(q, k_cache, v_cache, self.block_tables, self.query_start_loc,
                                      self.context_lens, self.scale, max_query_len=self.max_query_len)

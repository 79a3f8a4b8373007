"""Paged attention in plain PyTorch: the reference every other backend is tested against.

Vocabulary (the same words as vLLM):

- ``k_cache`` / ``v_cache``: one layer of the paged pool,
  ``[num_blocks, block_size, num_kv_heads, head_dim]`` (see ``minikv.kv.pool``).
- ``slot_mapping``: for each new token, the flat slot ``block * block_size + offset``
  where its K/V go; ``-1`` marks a padding token that is not written.
- ``block_tables``: ``[batch, max_blocks]`` long, row ``b`` lists sequence
  ``b``'s blocks in token order, right-padded (any pad value: pads past a sequence's blocks never reach the output).
- ``query_start_loc``: ``[batch + 1]``, sequence ``b``'s new tokens are rows
  ``query_start_loc[b]:query_start_loc[b + 1]`` of the flat ``q``.
- ``context_lens``: ``[batch]``, tokens of sequence ``b`` in the cache *including*
  its new ones (write K/V first, then attend).

Grouped-query attention: query head ``h`` reads kv head ``h // (num_q_heads // num_kv_heads)``.
Math runs in at least fp32 (fp16/bf16 are upcast) and the result is cast back to ``q.dtype``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def write_kv(
    k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
    v: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    slot_mapping: torch.Tensor,  # [num_tokens] long, -1 = padding (skipped)
) -> None:
    """Write each token's K and V into its slot of the paged cache, in place."""
    num_blocks, block_size, num_kv_heads, head_dim = k_cache.shape
    if k.shape != v.shape or k.shape[1:] != (num_kv_heads, head_dim):
        raise ValueError(
            f"k {tuple(k.shape)} and v {tuple(v.shape)} must both be "
            f"[num_tokens, {num_kv_heads}, {head_dim}] to match the cache {tuple(k_cache.shape)}"
        )
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} differ")
    if slot_mapping.shape != (k.shape[0],):
        raise ValueError(f"slot_mapping {tuple(slot_mapping.shape)} must be [{k.shape[0]}]")

    slots = slot_mapping.to(device=k_cache.device, dtype=torch.long)
    keep = slots >= 0
    if not bool(keep.all()):
        k, v, slots = k[keep], v[keep], slots[keep]
    if slots.numel() and int(slots.max()) >= num_blocks * block_size:
        raise IndexError(
            f"slot {int(slots.max())} is past the pool's {num_blocks * block_size} slots"
        )
    # A slot indexes the flat [num_blocks * block_size, H, D] view of the cache.
    k_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slots, k.to(k_cache.dtype))
    v_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slots, v.to(v_cache.dtype))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _as_int_list(x: torch.Tensor | Sequence[int]) -> list[int]:
    return x.tolist() if isinstance(x, torch.Tensor) else [int(i) for i in x]


def _check_heads(q: torch.Tensor, k_cache: torch.Tensor) -> int:
    """Return the GQA group size ``num_q_heads // num_kv_heads``."""
    num_q_heads, head_dim = q.shape[-2:]
    _, _, num_kv_heads, cache_head_dim = k_cache.shape
    if head_dim != cache_head_dim:
        raise ValueError(f"q has head_dim {head_dim} but the cache has {cache_head_dim}")
    if num_q_heads % num_kv_heads:
        raise ValueError(
            f"{num_q_heads} query heads is not a multiple of {num_kv_heads} kv heads"
        )
    return num_q_heads // num_kv_heads


def gather_kv(
    cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    blocks: torch.Tensor,  # [n_blocks] long
    length: int,
) -> torch.Tensor:  # [length, num_kv_heads, head_dim]
    """The first ``length`` tokens of one sequence, read through its blocks, contiguous."""
    return cache[blocks].flatten(0, 1)[:length]


def paged_attention(
    q: torch.Tensor,  # [num_tokens, num_q_heads, head_dim]
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables: torch.Tensor,  # [batch, max_blocks] long
    query_start_loc: torch.Tensor | Sequence[int],  # [batch + 1]
    context_lens: torch.Tensor | Sequence[int],  # [batch]
    scale: float | None = None,
) -> torch.Tensor:  # [num_tokens, num_q_heads, head_dim]
    """Attention of every new token over its own sequence's cached K/V.

    Sequence ``b``'s ``q_len = query_start_loc[b+1] - query_start_loc[b]`` new
    tokens are the last ``q_len`` of its ``context_lens[b]`` cached tokens:
    each sees every earlier token and itself (causal among the new ones, full
    over the cached prefix). One function covers prefill (``q_len ==
    context_len``), prefill after a cached prefix (``q_len < context_len``)
    and decode (``q_len == 1``). ``scale`` defaults to ``1 / sqrt(head_dim)``.
    """
    group = _check_heads(q, k_cache)
    block_size = k_cache.shape[1]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    starts = _as_int_list(query_start_loc)
    lens = _as_int_list(context_lens)
    if len(starts) != len(lens) + 1 or len(lens) != block_tables.shape[0]:
        raise ValueError(
            f"query_start_loc has {len(starts)} entries, context_lens {len(lens)} and "
            f"block_tables {block_tables.shape[0]} rows; need batch + 1, batch, batch"
        )
    if starts and (starts[0] != 0 or starts[-1] != q.shape[0]):
        raise ValueError(f"query_start_loc must run from 0 to num_tokens={q.shape[0]}, got {starts}")

    compute = _compute_dtype(q.dtype)
    out = torch.zeros_like(q)
    for b, context_len in enumerate(lens):
        start, end = starts[b], starts[b + 1]
        q_len = end - start
        if q_len == 0:
            continue
        if not 0 < q_len <= context_len:
            raise ValueError(
                f"sequence {b} has {q_len} new tokens but context_len {context_len}; "
                f"context_lens must count the new tokens too"
            )
        blocks = block_tables[b, : -(-context_len // block_size)].to(k_cache.device)
        if blocks.numel() * block_size < context_len:
            raise ValueError(
                f"sequence {b}: context_len {context_len} needs {-(-context_len // block_size)} "
                f"blocks but block_tables has {block_tables.shape[1]} columns"
            )
        if bool((blocks < 0).any()):
            raise ValueError(f"sequence {b}: block table has padding inside its first {context_len} tokens")
        k = gather_kv(k_cache, blocks, context_len).to(compute)  # [context_len, Hkv, D]
        v = gather_kv(v_cache, blocks, context_len).to(compute)
        k = k.repeat_interleave(group, dim=1)  # [context_len, Hq, D], head h -> kv head h // group
        v = v.repeat_interleave(group, dim=1)
        qb = q[start:end].to(compute)  # [q_len, Hq, D]

        scores = torch.einsum("qhd,khd->hqk", qb, k) * scale  # [Hq, q_len, context_len]
        q_pos = torch.arange(context_len - q_len, context_len, device=q.device)
        k_pos = torch.arange(context_len, device=q.device)
        visible = k_pos[None, :] <= q_pos[:, None]  # [q_len, context_len]
        scores = scores.masked_fill(~visible, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[start:end] = torch.einsum("hqk,khd->qhd", probs, v).to(q.dtype)
    return out


def paged_decode_attention(
    q: torch.Tensor,  # [batch, num_q_heads, head_dim], one new token per sequence
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables: torch.Tensor,  # [batch, max_blocks] long
    context_lens: torch.Tensor,  # [batch], >= 1, including the new token
    scale: float | None = None,
) -> torch.Tensor:  # [batch, num_q_heads, head_dim]
    """Batched decode: each sequence's one new token attends to all its ``context_lens[b]`` tokens.

    Vectorised over the batch: gather every sequence's K/V through its block
    table into ``[batch, max_len, Hkv, D]`` and mask positions ``>= context_len``.
    Agrees with :func:`paged_attention` with ``q_len == 1`` per sequence.
    """
    group = _check_heads(q, k_cache)
    batch, num_q_heads, head_dim = q.shape
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    if batch == 0:
        return q.new_empty(q.shape)
    lens = torch.as_tensor(context_lens, device=q.device, dtype=torch.long)
    if lens.shape != (batch,) or block_tables.shape[0] != batch:
        raise ValueError(
            f"q has {batch} sequences, context_lens {tuple(lens.shape)}, "
            f"block_tables {tuple(block_tables.shape)}"
        )
    max_len = int(lens.max())
    if int(lens.min()) < 1 or max_len > block_tables.shape[1] * block_size:
        raise ValueError(
            f"context_lens must be in 1..{block_tables.shape[1] * block_size} "
            f"(the block tables' width), got {lens.tolist()}"
        )

    compute = _compute_dtype(q.dtype)
    # Pads (e.g. -1) may sit past a sequence's last block; point them at block 0, masked below.
    tables = block_tables[:, : -(-max_len // block_size)].to(k_cache.device).clamp(min=0)
    k = k_cache[tables].flatten(1, 2).to(compute)  # [batch, max_len_padded, Hkv, D]
    v = v_cache[tables].flatten(1, 2).to(compute)
    qg = q.to(compute).reshape(batch, num_kv_heads, group, head_dim)  # head h = kv * group + g

    scores = torch.einsum("bkgd,bskd->bkgs", qg, k) * scale  # [batch, Hkv, group, max_len_padded]
    positions = torch.arange(k.shape[1], device=q.device)
    valid = positions[None, :] < lens[:, None]  # [batch, max_len_padded]
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.einsum("bkgs,bskd->bkgd", probs, v)  # [batch, Hkv, group, D]
    return out.reshape(batch, num_q_heads, head_dim).to(q.dtype)

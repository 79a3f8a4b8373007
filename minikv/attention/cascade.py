"""Shared-prefix ("cascade") decode attention: attend a prefix that many sequences share once, not once each.

When several running sequences start with the same system prompt, a prefix
cache hands them the *same* blocks: their block tables begin with identical
block ids. Plain batched decode (:func:`~minikv.attention.paged.paged_decode_sdpa`)
still gathers those blocks once per sequence and attends over them once per
sequence: eight sequences on a 1,024-token prefix copy and read the same K/V
eight times every layer.

Softmax attention splits over any partition of the keys. For one query and
two disjoint key sets ``A`` (the shared prefix) and ``B`` (the sequence's own
blocks), with partial results ``o_A = softmax(q K_A) V_A`` and their
log-sum-exps ``lse_A = log sum exp(q K_A)`` (likewise for ``B``)::

    out = (exp(lse_A) * o_A + exp(lse_B) * o_B) / (exp(lse_A) + exp(lse_B))

So a decode step is done in two parts and merged (:func:`merge_partials`):

1. the shared part: the queries of *all* sequences of a group, stacked as
   ``[Hkv, seqs * group, D]``, against the shared K/V ``[Hkv, S, D]`` read
   once (a view of the pool when the shared block ids are consecutive, else
   one gather): one batched matmul where there were ``seqs`` matrix-vector
   products over copies;
2. each sequence's own blocks (after the shared ones, short in decode),
   gathered and attended as batched decode does today.

This is the idea of FlashInfer's cascade attention (Ye et al., 2024, "Cascade
Inference: Memory Bandwidth Efficient Shared Prefix Batch Decoding") and of
Hydragen (Juravsky et al., 2024, arXiv 2402.05099); the code here is our own,
in plain PyTorch for the CPU path.

It is used when it pays: at least ``MIN_SEQS`` (2) sequences sharing at
least ``MIN_SHARED_BLOCKS`` (1) full blocks and ``MIN_SAVED_TOKENS`` (512)
token reads spared. Only *full* blocks with identical ids are shared: the
shared part of a group is the longest run of leading block ids common to its
members, capped at each member's ``context_len // block_size``. Sequences are grouped by their
first block id, so a batch may hold several groups with different prefixes;
a sequence in no group attends all its blocks in part 2.

``ENABLED`` is the module-level switch (``PagedStep(cascade=None)`` reads it);
:func:`use_cascade` flips it for a ``with`` block (benchmarks, tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

ENABLED = True  # PagedStep's default when it is not told cascade=True/False
MIN_SEQS = 2  # a group needs at least this many sequences...
MIN_SHARED_BLOCKS = 1  # ...sharing at least this many full leading blocks...
# ...and must spare at least this many token reads, (members - 1) * shared tokens: below it the extra small
# ops cost more than the gathers they save (measured on the 2-core CPU, SmolLM2's heads: 8 sequences x 64
# shared tokens break even, 8 x 256 are ~6x faster, 2 x 64 ~4x slower)
MIN_SAVED_TOKENS = 512


@contextlib.contextmanager
def use_cascade(enabled: bool) -> Iterator[None]:
    """Within the ``with`` block, ``PagedStep`` uses shared-prefix attention iff ``enabled`` (then restore)."""
    global ENABLED
    before, ENABLED = ENABLED, bool(enabled)
    try:
        yield
    finally:
        ENABLED = before


@dataclass(frozen=True)
class SharedGroup:
    """Sequences ``members`` (rows of the batch, ascending) share their first ``len(block_ids)`` blocks."""

    members: tuple[int, ...]
    block_ids: tuple[int, ...]


def find_shared_prefixes(
    block_tables: Sequence[Sequence[int]],
    context_lens: Sequence[int],
    block_size: int,
    min_seqs: int = MIN_SEQS,
    min_blocks: int = MIN_SHARED_BLOCKS,
    min_saved_tokens: int = 0,
) -> list[SharedGroup]:
    """Groups of ``>= min_seqs`` sequences whose leading ``>= min_blocks`` *full* blocks have identical ids.

    A group is kept only if ``(members - 1) * shared tokens >= min_saved_tokens``.

    Sequences are grouped by their first block id; a group's shared part is
    its members' common leading block ids, capped at each member's full
    blocks (``context_len // block_size``), so padding and a partly written
    block are never shared.
    """
    by_first: dict[int, list[int]] = {}
    for b, (table, n) in enumerate(zip(block_tables, context_lens)):
        if n // block_size >= 1:
            by_first.setdefault(int(table[0]), []).append(b)
    groups = []
    for members in by_first.values():
        if len(members) < min_seqs:
            continue
        limit = min(context_lens[b] // block_size for b in members)
        first = block_tables[members[0]]
        shared = 0
        while shared < limit and all(block_tables[b][shared] == first[shared] for b in members):
            shared += 1
        if shared >= min_blocks and (len(members) - 1) * shared * block_size >= min_saved_tokens:
            groups.append(SharedGroup(tuple(members), tuple(int(x) for x in first[:shared])))
    return groups


def _rows(ids: Sequence[int], device: torch.device) -> slice | torch.Tensor:
    """A slice when ``ids`` are consecutive ascending (indexing is then a free view), else an index tensor."""
    if all(b - a == 1 for a, b in zip(ids, ids[1:])):
        return slice(ids[0], ids[-1] + 1)
    return torch.tensor(ids, dtype=torch.long, device=device)


class CascadePlan:
    """What a cascade decode step needs that does not depend on the layer: built once per step.

    ``groups`` as found by :func:`find_shared_prefixes`. For the second part,
    ``own_slots [B, L]`` are the flat pool slots of each sequence's tokens after
    its shared blocks (all its tokens when it is in no group), right-padded to
    the longest, and ``own_valid [B, 1, 1, L]`` marks the real ones.
    """

    def __init__(self, block_tables: torch.Tensor, context_lens: Sequence[int], block_size: int,
                 groups: list[SharedGroup]) -> None:
        device = block_tables.device
        self.groups = groups
        self.block_size = block_size
        self.members = [_rows(g.members, device) for g in groups]
        self.blocks = [_rows(g.block_ids, device) for g in groups]
        skip = [0] * len(context_lens)  # shared tokens per sequence
        for g in groups:
            for b in g.members:
                skip[b] = len(g.block_ids) * block_size
        own = [n - s for n, s in zip(context_lens, skip)]
        self.own_len = max(own, default=0)
        width = block_tables.shape[1]
        start = torch.tensor(skip, dtype=torch.long, device=device)
        pos = (start[:, None] + torch.arange(self.own_len, device=device)).clamp(max=width * block_size - 1)
        blocks = block_tables.gather(1, pos // block_size).clamp(min=0)  # pads (e.g. -1) are masked below
        self.own_slots = blocks * block_size + pos % block_size  # [B, L]
        lens = torch.tensor(own, dtype=torch.long, device=device)
        self.own_valid = (torch.arange(self.own_len, device=device)[None, :] < lens[:, None])[:, None, None, :]

    @classmethod
    def build(cls, block_tables: torch.Tensor, context_lens: Sequence[int], block_size: int,
              min_seqs: int | None = None, min_blocks: int | None = None,
              min_saved_tokens: int | None = None) -> CascadePlan | None:
        """The plan for this step, or ``None`` when no group shares enough to pay.

        Thresholds left ``None`` are read from the module (``MIN_SEQS``, ``MIN_SHARED_BLOCKS``, ``MIN_SAVED_TOKENS``).
        """
        groups = find_shared_prefixes(
            block_tables.tolist(), context_lens, block_size,
            MIN_SEQS if min_seqs is None else min_seqs,
            MIN_SHARED_BLOCKS if min_blocks is None else min_blocks,
            MIN_SAVED_TOKENS if min_saved_tokens is None else min_saved_tokens,
        )
        return cls(block_tables, context_lens, block_size, groups) if groups else None


def partial_attention(
    q: torch.Tensor,  # [..., M, D]
    k: torch.Tensor,  # [..., N, D] (any strides)
    v: torch.Tensor,  # [..., N, D]
    scale: float,
    valid: torch.Tensor | None = None,  # broadcastable to [..., M, N] bool, True = attend
) -> tuple[torch.Tensor, torch.Tensor]:  # out [..., M, D], lse [..., M, 1]
    """Softmax attention over one part of the keys, with its log-sum-exp for :func:`merge_partials`.

    A row with no valid key gives ``out = 0`` and ``lse = -inf`` (it then weighs nothing in the merge).
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    top = scores.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # fully masked rows: keep exp() at 0
    p = torch.exp(scores - top)
    total = p.sum(dim=-1, keepdim=True)
    out = torch.matmul(p, v) / total.clamp(min=torch.finfo(total.dtype).tiny)
    return out, top + torch.log(total)


def merge_partials(o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor, lse_b: torch.Tensor) -> torch.Tensor:
    """Attention over the union of two disjoint key sets, from each set's ``(out, lse)`` (shapes as returned)."""
    top = torch.maximum(lse_a, lse_b)  # finite: every query sees at least one key in one of the parts
    w_a, w_b = torch.exp(lse_a - top), torch.exp(lse_b - top)
    return (o_a * w_a + o_b * w_b) / (w_a + w_b)


def _own_part(qg: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, plan: CascadePlan,
              scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Part 2: ``qg [B, Hkv, group, D]`` over each sequence's own slots -> out, lse ``[B, Hkv, group, D | 1]``."""
    batch, num_kv_heads, _, head_dim = qg.shape
    flat = plan.own_slots.reshape(-1)
    k = k_cache.view(-1, num_kv_heads, head_dim).index_select(0, flat).to(qg.dtype)
    v = v_cache.view(-1, num_kv_heads, head_dim).index_select(0, flat).to(qg.dtype)
    k = k.view(batch, plan.own_len, num_kv_heads, head_dim).transpose(1, 2)  # [B, Hkv, L, D]
    v = v.view(batch, plan.own_len, num_kv_heads, head_dim).transpose(1, 2)
    return partial_attention(qg, k, v, scale, plan.own_valid)


def cascade_decode(
    q: torch.Tensor,  # [batch, Hq, D], one new token per sequence
    k_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
    v_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
    plan: CascadePlan,
    scale: float,
) -> torch.Tensor:  # [batch, Hq, D]
    """Decode attention of every sequence over its whole context, each shared prefix attended once.

    Computes what :func:`minikv.attention.torch_ref.paged_decode_attention`
    computes (in at least fp32, cast back to ``q.dtype``).
    """
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    group = num_q_heads // num_kv_heads
    compute = torch.promote_types(q.dtype, torch.float32)
    qg = q.to(compute).reshape(batch, num_kv_heads, group, head_dim)  # head h = kv * group + g

    # part 2: each sequence's own blocks, batched as plain decode: [B, Hkv, group, D], lse [B, Hkv, group, 1]
    if plan.own_len == 0:  # every sequence's context is all shared blocks
        out = qg.new_zeros(qg.shape)
        lse = qg.new_full((*qg.shape[:-1], 1), float("-inf"))
    else:
        out, lse = _own_part(qg, k_cache, v_cache, plan, scale)

    # part 1: per group, all members' queries against the shared K/V at once, then merge into their rows
    for grp, rows, blocks in zip(plan.groups, plan.members, plan.blocks):
        n = len(grp.members)
        ks = k_cache[blocks].flatten(0, 1).to(compute)  # [S, Hkv, D]: a view when the ids are consecutive
        vs = v_cache[blocks].flatten(0, 1).to(compute)
        qs = qg[rows].permute(1, 0, 2, 3).reshape(num_kv_heads, n * group, head_dim)  # [Hkv, n * group, D]
        o_s, lse_s = partial_attention(qs, ks.transpose(0, 1), vs.transpose(0, 1), scale)  # [Hkv, n * group, .]
        o_s = o_s.view(num_kv_heads, n, group, head_dim).transpose(0, 1)  # [n, Hkv, group, D]
        lse_s = lse_s.view(num_kv_heads, n, group, 1).transpose(0, 1)
        out[rows] = merge_partials(o_s, lse_s, out[rows], lse[rows])
    return out.reshape(batch, num_q_heads, head_dim).to(q.dtype)

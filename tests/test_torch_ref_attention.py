"""The PyTorch paged attention against plain dense causal attention on contiguous K/V.

Blocks are handed out in a shuffled order, so every sequence's blocks are
scattered through the pool, and the pool starts full of junk, so reading a
wrong slot or an unmasked position changes the answer.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from minikv.attention.torch_ref import paged_attention, paged_decode_attention, write_kv
from minikv.kv import BlockAllocator, BlockTable, KVPool, make_block_table_tensor

ATOL = 1e-5
BLOCK_SIZES = [1, 16, 32]
HEADS = [(4, 4), (8, 2), (6, 1)]  # (query heads, kv heads): MHA, GQA, MQA
HEAD_DIMS = [16, 24, 64]
# A Latin square: every (block size, heads), (block size, head_dim) and (heads, head_dim)
# pair appears once, in 9 cases instead of 27.
CASES = [
    (bs, HEADS[j], HEAD_DIMS[(i + j) % 3]) for i, bs in enumerate(BLOCK_SIZES) for j in range(3)
]
CASE_IDS = [f"bs{bs}-h{hq}x{hkv}-d{d}" for bs, (hq, hkv), d in CASES]


def dense_causal_attention(
    q: torch.Tensor,  # [L, Hq, D]
    k: torch.Tensor,  # [L, Hkv, D]
    v: torch.Tensor,  # [L, Hkv, D]
    scale: float,
) -> torch.Tensor:  # [L, Hq, D] float64
    """Textbook causal attention, one head at a time, in float64."""
    length, num_q_heads, _ = q.shape
    group = num_q_heads // k.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    out = torch.empty(q.shape, dtype=torch.float64)
    for h in range(num_q_heads):
        kv = h // group
        scores = (q[:, h].double() @ k[:, kv].double().T) * scale
        scores = scores.masked_fill(~causal, float("-inf"))
        out[:, h] = torch.softmax(scores, dim=-1) @ v[:, kv].double()
    return out


class Case:
    """Random sequences with their dense K/V and a scattered, junk-filled paged pool."""

    def __init__(self, block_size: int, heads: tuple[int, int], head_dim: int, seed: int = 0) -> None:
        self.bs = block_size
        self.hq, self.hkv = heads
        self.d = head_dim
        # head_dim 24 also checks that an explicit scale is honoured
        self.scale_arg = 0.3 if head_dim == 24 else None
        self.scale = 0.3 if head_dim == 24 else 1 / math.sqrt(head_dim)
        bs = block_size
        self.lens = [1, bs, 2 * bs, bs + 1, 37, max(bs - 1, 1) + 2 * bs, 3]
        gen = torch.Generator().manual_seed(seed)
        self.q = [torch.randn(n, self.hq, head_dim, generator=gen) for n in self.lens]
        self.k = [torch.randn(n, self.hkv, head_dim, generator=gen) for n in self.lens]
        self.v = [torch.randn(n, self.hkv, head_dim, generator=gen) for n in self.lens]
        self.expected = [
            dense_causal_attention(q, k, v, self.scale) for q, k, v in zip(self.q, self.k, self.v)
        ]

        num_blocks = sum(-(-n // bs) for n in self.lens) + 7
        self.pool = KVPool(1, self.hkv, head_dim, bs, num_blocks=num_blocks)
        self.k_cache, self.v_cache = self.pool.k_cache(0), self.pool.v_cache(0)
        self.k_cache.copy_(5 * torch.randn(self.k_cache.shape, generator=gen))
        self.v_cache.copy_(5 * torch.randn(self.v_cache.shape, generator=gen))
        self.allocator = alloc = BlockAllocator(num_blocks, block_size=bs)  # the pool holds tensors only
        order = alloc.allocate(num_blocks)
        random.Random(seed).shuffle(order)
        alloc.free(order)
        self.tables = [BlockTable(bs) for _ in self.lens]

    def write(self, b: int, start: int, end: int) -> torch.Tensor:
        """Append tokens start..end-1 of sequence b to its table; return their slots."""
        table = self.tables[b]
        assert table.num_tokens == start
        return torch.tensor(table.append_tokens(end - start, self.allocator), dtype=torch.long)

    def write_kv_batch(self, spans: list[tuple[int, int, int]]) -> None:
        """One write_kv for several (seq, start, end) spans, as an engine step does."""
        slots = torch.cat([self.write(b, s, e) for b, s, e in spans])
        k = torch.cat([self.k[b][s:e] for b, s, e in spans])
        v = torch.cat([self.v[b][s:e] for b, s, e in spans])
        write_kv(k, v, self.k_cache, self.v_cache, slots)

    def block_tables(self, rows: list[int], extra_cols: int = 0) -> torch.Tensor:
        tables = [self.tables[b].blocks for b in rows]
        width = max(len(t) for t in tables) + extra_cols
        return make_block_table_tensor(tables, pad=-1, max_blocks=width)

    def attend(self, spans: list[tuple[int, int, int]]) -> torch.Tensor:
        """paged_attention for new tokens start..end-1 of each (seq, start, end)."""
        q = torch.cat([self.q[b][s:e] for b, s, e in spans])
        starts = torch.tensor([0] + list(itertools.accumulate(e - s for _, s, e in spans)))
        context_lens = torch.tensor([e for _, _, e in spans])
        tables = self.block_tables([b for b, _, _ in spans], extra_cols=2)
        return paged_attention(q, self.k_cache, self.v_cache, tables, starts, context_lens, self.scale_arg)


def split_rows(out: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    return list(torch.split(out, sizes))


@pytest.mark.parametrize(("bs", "heads", "d"), CASES, ids=CASE_IDS)
def test_full_prefill_matches_dense(bs: int, heads: tuple[int, int], d: int) -> None:
    c = Case(bs, heads, d)
    spans = [(b, 0, n) for b, n in enumerate(c.lens)]
    c.write_kv_batch(spans)
    out = c.attend(spans)
    assert out.shape == (sum(c.lens), c.hq, d) and out.dtype == torch.float32
    for b, rows in enumerate(split_rows(out, c.lens)):
        torch.testing.assert_close(rows.double(), c.expected[b], atol=ATOL, rtol=0, msg=f"seq {b}")


@pytest.mark.parametrize(("bs", "heads", "d"), CASES, ids=CASE_IDS)
def test_prefill_after_cached_prefix_equals_rows_of_full_prefill(
    bs: int, heads: tuple[int, int], d: int
) -> None:
    """Prefix written in one step, the rest attended in the next (the prefix-caching case)."""
    c = Case(bs, heads, d, seed=1)
    rng = random.Random(bs * 100 + d)
    # cached prefix: none, all but one token, on a block boundary, or anywhere
    cached = []
    for n in c.lens:
        options = [0, n - 1, rng.randrange(n)] + ([bs] if bs < n else [])
        cached.append(rng.choice(options))
    c.write_kv_batch([(b, 0, p) for b, p in enumerate(cached)])
    new_spans = [(b, p, n) for b, (p, n) in enumerate(zip(cached, c.lens))]
    c.write_kv_batch(new_spans)
    out = c.attend(new_spans)

    full = c.attend([(b, 0, n) for b, n in enumerate(c.lens)])
    full_rows = split_rows(full, c.lens)
    for b, rows in enumerate(split_rows(out, [n - p for p, n in zip(cached, c.lens)])):
        p = cached[b]
        torch.testing.assert_close(rows, full_rows[b][p:], atol=ATOL, rtol=0, msg=f"seq {b}")
        torch.testing.assert_close(rows.double(), c.expected[b][p:], atol=ATOL, rtol=0)


@pytest.mark.parametrize(("bs", "heads", "d"), CASES, ids=CASE_IDS)
def test_chunked_prefill_then_decode_steps(bs: int, heads: tuple[int, int], d: int) -> None:
    """Each step writes every sequence's next chunk, then attends; decode is a chunk of 1.

    The last 3 tokens of each sequence (or fewer) are decoded one at a time, through
    both paged_attention and the batched paged_decode_attention.
    """
    c = Case(bs, heads, d, seed=2)
    rng = random.Random(d * 7 + bs)
    got = [torch.empty(n, c.hq, d) for n in c.lens]
    prefill_end = [max(n - 3, 1) for n in c.lens]
    pos = [0] * len(c.lens)
    while any(p < e for p, e in zip(pos, prefill_end)):  # chunked prefill
        spans = []
        for b, (p, e) in enumerate(zip(pos, prefill_end)):
            if p < e:
                spans.append((b, p, min(e, p + rng.choice([1, bs, 5, 40]))))
        c.write_kv_batch(spans)
        for (b, s, e), rows in zip(spans, split_rows(c.attend(spans), [e - s for _, s, e in spans])):
            got[b][s:e] = rows
            pos[b] = e
    while any(p < n for p, n in zip(pos, c.lens)):  # batched decode
        spans = [(b, p, p + 1) for b, (p, n) in enumerate(zip(pos, c.lens)) if p < n]
        c.write_kv_batch(spans)
        rows = [b for b, _, _ in spans]
        q = torch.stack([c.q[b][s] for b, s, _ in spans])  # [batch, Hq, D]
        lens = torch.tensor([e for _, _, e in spans])
        fast = paged_decode_attention(
            q, c.k_cache, c.v_cache, c.block_tables(rows, extra_cols=1), lens, c.scale_arg
        )
        torch.testing.assert_close(fast, c.attend(spans), atol=ATOL, rtol=0)
        for (b, s, _), out in zip(spans, fast):
            got[b][s] = out
            pos[b] += 1
    for b in range(len(c.lens)):
        torch.testing.assert_close(got[b].double(), c.expected[b], atol=ATOL, rtol=0, msg=f"seq {b}")


@pytest.mark.parametrize(("bs", "heads", "d"), CASES, ids=CASE_IDS)
def test_decode_attention_matches_dense_last_row(bs: int, heads: tuple[int, int], d: int) -> None:
    c = Case(bs, heads, d, seed=3)
    c.write_kv_batch([(b, 0, n) for b, n in enumerate(c.lens)])
    order = list(reversed(range(len(c.lens))))  # batch order differs from table order
    q = torch.stack([c.q[b][-1] for b in order])
    lens = torch.tensor([c.lens[b] for b in order])
    out = paged_decode_attention(q, c.k_cache, c.v_cache, c.block_tables(order), lens, c.scale_arg)
    assert out.shape == (len(order), c.hq, d)
    for i, b in enumerate(order):
        torch.testing.assert_close(out[i].double(), c.expected[b][-1], atol=ATOL, rtol=0, msg=f"seq {b}")


def test_write_kv_writes_exactly_the_given_slots_and_skips_padding() -> None:
    k_cache = torch.zeros(4, 2, 3, 5)  # 8 slots
    v_cache = torch.zeros(4, 2, 3, 5)
    k = torch.arange(1, 4 * 15 + 1, dtype=torch.float32).view(4, 3, 5)
    v = -k
    slots = torch.tensor([6, -1, 1, -1])
    write_kv(k, v, k_cache, v_cache, slots)
    flat_k, flat_v = k_cache.view(8, 3, 5), v_cache.view(8, 3, 5)
    assert torch.equal(flat_k[6], k[0]) and torch.equal(flat_k[1], k[2])
    assert torch.equal(flat_v[6], v[0]) and torch.equal(flat_v[1], v[2])
    untouched = [0, 2, 3, 4, 5, 7]  # the last slot too: -1 must not wrap around to it
    assert torch.count_nonzero(flat_k[untouched]) == 0 and torch.count_nonzero(flat_v[untouched]) == 0
    with pytest.raises(IndexError):
        write_kv(k[:1], v[:1], k_cache, v_cache, torch.tensor([8]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_keep_dtype_and_stay_close(dtype: torch.dtype) -> None:
    c = Case(16, (8, 2), 64, seed=4)
    spans = [(b, 0, n) for b, n in enumerate(c.lens)]
    c.write_kv_batch(spans)
    ref = c.attend(spans)
    kc, vc = c.k_cache.to(dtype), c.v_cache.to(dtype)
    q = torch.cat([c.q[b] for b in range(len(c.lens))]).to(dtype)
    starts = torch.tensor([0] + list(itertools.accumulate(c.lens)))
    tables = c.block_tables(list(range(len(c.lens))))
    out = paged_attention(q, kc, vc, tables, starts, torch.tensor(c.lens))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=0)
    last = starts[1:] - 1
    dec = paged_decode_attention(q[last], kc, vc, tables, torch.tensor(c.lens))
    assert dec.dtype == dtype
    torch.testing.assert_close(dec, out[last], atol=1e-2, rtol=0)


def test_bad_arguments_raise() -> None:
    c = Case(16, (8, 2), 16)
    c.write_kv_batch([(0, 0, 1)])
    tables = c.block_tables([0])
    q = c.q[0][:1]
    with pytest.raises(ValueError, match="context_len"):  # more new tokens than context
        paged_attention(torch.cat([q, q]), c.k_cache, c.v_cache, tables, [0, 2], [1])
    with pytest.raises(ValueError, match="multiple"):  # 3 query heads over 2 kv heads
        paged_attention(q[:, :3], c.k_cache, c.v_cache, tables, [0, 1], [1])
    with pytest.raises(ValueError):  # decode needs context_len >= 1
        paged_decode_attention(q, c.k_cache, c.v_cache, tables, torch.tensor([0]))

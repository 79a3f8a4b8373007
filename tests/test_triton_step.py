"""TritonPagedStep against PagedStep: a tiny model's forward over the same pool state, step by step.

Two identical pools (filled with the same junk, so an unmasked read shows)
run the same schedule, one through :class:`~minikv.attention.paged.PagedStep`
(PyTorch), one through :class:`~minikv.attention.triton_backend.TritonPagedStep`
(Triton, the interpreter on CPU). The schedule has every kind of step:

1. sequence A's whole prompt, beside the first chunk of sequence C's chunked prefill;
2. A decodes while B prefills 6 new tokens after A's cached 32-token prefix
   (a prefix-cache hit: B's table starts with A's blocks) and C runs its second chunk;
3. A and B decode while C's last chunk runs;
4. two pure decode steps of A, B, C (the second one with split-K forced to 3 splits).

Every step compares all rows' logits (tolerance ``atol = rtol = 1e-4``, fp32:
two layers of float rounding differences), the greedy tokens, and the pools' K/V.
"""

from __future__ import annotations

import random

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed")

from minikv.attention.paged import PagedStep  # noqa: E402
from minikv.attention.triton_backend import TritonPagedStep  # noqa: E402
from minikv.kv import KVPool, make_block_table_tensor  # noqa: E402
from minikv.models.registry import resolve  # noqa: E402
from minikv.models.weights import load_causal_lm  # noqa: E402

TOL = dict(atol=1e-4, rtol=1e-4)


class Seq:
    """A sequence's tokens, its blocks and how many of its tokens are already in the cache."""

    def __init__(self, tokens: list[int], blocks: list[int]) -> None:
        self.tokens, self.blocks, self.cached = tokens, blocks, 0


def build_step(cls, pool: KVPool, work: list[tuple[Seq, int]], scale: float, **extra):
    """One forward's inputs: each ``(seq, n)`` feeds ``seq``'s next ``n`` tokens."""
    ids, positions, slots, starts, lens = [], [], [], [0], []
    bs = pool.block_size
    for seq, n in work:
        span = range(seq.cached, seq.cached + n)
        ids += [seq.tokens[p] for p in span]
        positions += span
        slots += [seq.blocks[p // bs] * bs + p % bs for p in span]
        starts.append(starts[-1] + n)
        lens.append(seq.cached + n)
    tables = make_block_table_tensor([s.blocks for s, _ in work], pad=0)
    step = cls(pool, torch.tensor(slots), tables, starts, lens, scale, **extra)
    return torch.tensor(ids), torch.tensor(positions), step


@pytest.mark.parametrize("name,block_size", [
    ("tiny-qwen2", 16),  # 6 query heads on 2 kv heads, q/k/v biases
    ("tiny-llama:heads=5,kv_heads=1,head_dim=24,hidden=80", 1),  # one kv head; head_dim 24 masks the D axis
])
@torch.inference_mode()
def test_triton_step_gives_paged_step_logits_through_prefix_hit_chunks_and_decode(name: str, block_size: int) -> None:
    model = load_causal_lm(resolve(name))
    cfg = model.config
    scale = cfg.head_dim ** -0.5
    rng = random.Random(0)
    per_seq = -(-64 // block_size)
    blocks = list(range(3 * per_seq + 2))
    rng.shuffle(blocks)
    pools = [KVPool(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, block_size, num_blocks=len(blocks))
             for _ in range(2)]
    junk = torch.randn(pools[0].kv.shape, generator=torch.Generator().manual_seed(1))
    for pool in pools:
        pool.kv.copy_(junk)

    def tokens(n: int) -> list[int]:
        return [rng.randrange(cfg.vocab_size) for _ in range(n)]

    def schedule() -> tuple[Seq, Seq, Seq]:
        a = Seq(tokens(37), blocks[:per_seq])
        shared = 32 // block_size  # A's full blocks of its first 32 tokens
        b = Seq(a.tokens[:32] + tokens(6), a.blocks[:shared] + blocks[per_seq:2 * per_seq - shared])
        c = Seq(tokens(45), blocks[2 * per_seq:3 * per_seq])
        return a, b, c

    first = schedule()
    runs = [first, tuple(Seq(list(s.tokens), list(s.blocks)) for s in first)]  # torch's and triton's copies
    plan = [
        [(0, 37), (2, 20)],
        [(0, 1), (1, 6), (2, 20)],
        [(0, 1), (1, 1), (2, 5)],
        [(0, 1), (1, 1), (2, 1)],
        [(0, 1), (1, 1), (2, 1)],
    ]
    for seqs in runs:
        seqs[1].cached = 32  # B's first 32 tokens are A's, in the cache once step 1 has run
    for i, work in enumerate(plan):
        outs = []
        for (cls, extra), pool, seqs in zip([(PagedStep, {}), (TritonPagedStep, {"num_splits": 3} if i == 4 else {})],
                                            pools, runs):
            ids, positions, step = build_step(cls, pool, [(seqs[j], n) for j, n in work], scale, **extra)
            logits = model(ids, positions, step)  # [T, vocab], every row
            outs.append(logits)
            ends = torch.tensor([0, *[n for _, n in work]]).cumsum(0)[1:] - 1
            for (j, n), end in zip(work, ends.tolist()):
                seq = seqs[j]
                seq.cached += n
                if seq.cached == len(seq.tokens):  # the prompt (or last token) is in: greedy next token
                    seq.tokens.append(int(logits[end].argmax()))
        if i == 4:
            assert isinstance(step, TritonPagedStep) and step.num_splits == 3
        torch.testing.assert_close(outs[1], outs[0], **TOL, msg=lambda m: f"step {i + 1}: {m}")
        assert [s.tokens for s in runs[1]] == [s.tokens for s in runs[0]], f"step {i + 1}: greedy tokens differ"
        torch.testing.assert_close(pools[1].kv, pools[0].kv, **TOL)


def test_plugged_decode_fn_replaces_the_decode_kernel() -> None:
    """Chapter 06 plugs a learner's decode kernel in as ``decode_fn``: it must be the one called, with the pool."""
    from minikv.attention.torch_ref import paged_decode_attention

    calls = []

    def counted(q, k_cache, v_cache, block_tables, context_lens, scale):
        calls.append(context_lens.tolist())
        return paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)

    pool = KVPool(1, 2, 16, 4, num_blocks=6)
    tables = torch.tensor([[3, 1], [0, 5]])
    slots = torch.tensor([1 * 4 + 2, 0 * 4 + 1])  # position 6 through table [3, 1], position 1 through [0, 5]
    step = TritonPagedStep(pool, slots, tables, [0, 1, 2], [7, 2], 0.25, decode_fn=counted)
    q, k, v = torch.randn(2, 4, 16), torch.randn(2, 2, 16), torch.randn(2, 2, 16)
    out = step.attend(0, q, k, v)
    assert calls == [[7, 2]]
    assert torch.equal(pool.k_cache(0)[1, 2], k[0]) and torch.equal(pool.v_cache(0)[0, 1], v[1])
    torch.testing.assert_close(out, paged_decode_attention(q, pool.k_cache(0), pool.v_cache(0), tables,
                                                           torch.tensor([7, 2]), 0.25))

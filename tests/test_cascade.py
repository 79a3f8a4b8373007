"""Shared-prefix (cascade) decode attention == the paged reference, and the engine's tokens do not change.

Random pools with groups of sequences whose block tables start with the same
block ids (what a prefix-cache hit gives), over GQA shapes, an odd head dim,
block sizes 1 and 16, shared prefixes of 0, 1 and several blocks and a
partial last block (never shared), two groups in one batch; then a tiny
model generating the same greedy tokens with cascade on and off.
"""

from __future__ import annotations

import random
import re

import pytest
import torch

from minikv import LLM, SamplingParams
from minikv.attention import cascade
from minikv.attention.cascade import (CascadePlan, SharedGroup, find_shared_prefixes, merge_partials,
                                      partial_attention, use_cascade)
from minikv.attention.paged import PagedStep
from minikv.attention.torch_ref import paged_attention, paged_decode_attention
from minikv.kv import KVPool, make_block_table_tensor

HEADS = [(4, 4), (8, 2), (5, 1), (14, 2)]


@pytest.fixture
def share_any(monkeypatch):
    """Engage cascade on any shared full block (by default it waits until it spares 512 token reads)."""
    monkeypatch.setattr(cascade, "MIN_SAVED_TOKENS", 0)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def decode_case(block_size: int, hq: int, hkv: int, d: int, groups: list[tuple[int, int]], loners: int,
                seed: int, consecutive: bool = False):
    """A junk-filled pool and one decode step of ``groups`` = [(sequences, shared prefix tokens)] + ``loners``.

    Members of a group point at the same blocks for the prefix's *full*
    blocks; a partial last prefix block is each member's own copy (as a
    prefix cache's copy-on-write gives). Each sequence then has 1..40 tokens
    of its own, the last one being this step's. ``consecutive``: the shared
    block ids are a consecutive run (read as a view, not gathered).
    Returns (pool, block_tables [B, W] padded with 0, context_lens, slot_mapping, q, k, v, expected groups).
    """
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    specs = [(n, s) for n, s in groups] + [(1, 0)] * loners
    own = [[rng.randint(1, 40) for _ in range(n)] for n, _ in specs]
    need = sum(s // block_size + sum(cdiv(s + o, block_size) - s // block_size for o in os_)
               for (_, s), os_ in zip(specs, own))
    num_blocks = need + 3
    pool = KVPool(1, hkv, d, block_size, num_blocks=num_blocks)
    pool.kv.copy_(torch.randn(pool.kv.shape, generator=gen) * 2)
    ids = list(range(num_blocks))
    rng.shuffle(ids)
    tables, lens, expected = [], [], []
    for gi, ((n, s), os_) in enumerate(zip(specs, own)):
        full = s // block_size
        if consecutive and gi == 0:  # blocks 1..full, in order
            run = list(range(1, full + 1))
            ids = [x for x in ids if x not in run]
        else:
            run = [ids.pop() for _ in range(full)]
        rows = list(range(len(tables), len(tables) + n))
        for o in os_:
            tables.append(run + [ids.pop() for _ in range(cdiv(s + o, block_size) - full)])
            lens.append(s + o)
        if n >= 2 and full >= 1:
            expected.append(SharedGroup(tuple(rows), tuple(run)))
    slots = torch.tensor([t[(n - 1) // block_size] * block_size + (n - 1) % block_size for t, n in zip(tables, lens)])
    bt = make_block_table_tensor(tables, pad=0)
    batch = len(tables)
    q = torch.randn(batch, hq, d, generator=gen)
    k = torch.randn(batch, hkv, d, generator=gen)
    v = torch.randn(batch, hkv, d, generator=gen)
    return pool, bt, lens, slots, q, k, v, expected


def run_step(pool, bt, lens, slots, q, k, v, use: bool):
    step = PagedStep(pool, slots, bt, list(range(len(lens) + 1)), lens, q.shape[-1] ** -0.5, cascade=use)
    return step, step.attend(0, q, k, v)


@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize(("hq", "hkv"), HEADS)
@pytest.mark.parametrize(("groups", "loners"), [
    ([(4, 0)], 1),  # nothing shared: the plain path
    ([(3, 1)], 0),  # one full block (block size 16: 1 token is no full block, so nothing shared)
    ([(5, 48)], 1),  # several blocks
    ([(4, 37)], 0),  # a partial last block: only its full blocks are shared
    ([(3, 40), (2, 17)], 2),  # two groups with different prefixes, plus two sequences of their own
])
def test_cascade_matches_paged_reference(share_any, block_size: int, hq: int, hkv: int, groups, loners) -> None:
    d = 80 if hq == 14 else 16
    pool, bt, lens, slots, q, k, v, expected = decode_case(block_size, hq, hkv, d, groups, loners, seed=hq + block_size)
    _, want_plain = run_step(pool, bt, lens, slots, q, k, v, use=False)
    step, out = run_step(pool, bt, lens, slots, q, k, v, use=True)
    assert (step.cascade_plan.groups if step.cascade_plan else []) == expected
    want = paged_attention(q, pool.k_cache(0), pool.v_cache(0), bt, list(range(len(lens) + 1)), lens, d ** -0.5)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, want_plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block_size", [1, 16])
def test_consecutive_shared_blocks_are_read_as_a_view(share_any, block_size: int) -> None:
    pool, bt, lens, slots, q, k, v, expected = decode_case(block_size, 8, 2, 80, [(6, 64)], 1, seed=3,
                                                           consecutive=True)
    step, out = run_step(pool, bt, lens, slots, q, k, v, use=True)
    assert step.cascade_plan is not None and isinstance(step.cascade_plan.blocks[0], slice)
    assert isinstance(step.cascade_plan.members[0], slice)  # rows 0..5
    want = paged_decode_attention(q, pool.k_cache(0), pool.v_cache(0), bt, torch.tensor(lens), d_scale(80))
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def d_scale(d: int) -> float:
    return d ** -0.5


def test_shared_part_is_capped_at_each_sequence_full_blocks() -> None:
    """Identical block ids past a sequence's last full block (a partly used block, padding) are not shared."""
    tables = [[5, 9, 11, 0], [5, 9, 12, 0], [5, 9, 0, 0]]  # padded with 0
    assert find_shared_prefixes(tables, [40, 45, 20], 16) == [SharedGroup((0, 1, 2), (5,))]
    assert find_shared_prefixes(tables, [40, 45, 32], 16) == [SharedGroup((0, 1, 2), (5, 9))]
    # the third has no full block: it joins no group, the other two still share theirs
    assert find_shared_prefixes(tables, [40, 45, 15], 16) == [SharedGroup((0, 1), (5, 9))]
    assert find_shared_prefixes(tables[:2], [40, 45], 16) == [SharedGroup((0, 1), (5, 9))]
    assert find_shared_prefixes([[3, 1], [4, 1]], [20, 20], 16) == []  # different first blocks
    assert find_shared_prefixes([[3, 1], [3, 1]], [32, 32], 16, min_blocks=3) == []


def test_cascade_waits_until_it_pays() -> None:
    """By default a group must spare >= MIN_SAVED_TOKENS token reads: 8 x 64 shared tokens do, 2 x 64 do not."""
    assert cascade.MIN_SAVED_TOKENS == 512
    tables = torch.tensor([[0, 1, 2, 3, 10 + b] for b in range(9)])
    assert CascadePlan.build(tables[:2], [70, 70], 16) is None  # spares 64
    assert CascadePlan.build(tables[:8], [70] * 8, 16) is None  # spares 448
    plan = CascadePlan.build(tables, [70] * 9, 16)  # spares 512
    assert plan is not None and plan.groups == [SharedGroup(tuple(range(9)), (0, 1, 2, 3))]
    assert CascadePlan.build(tables[:2], [70, 70], 16, min_saved_tokens=64) is not None


def test_whole_context_shared_still_matches(share_any) -> None:
    """Every sequence's context is exactly the shared blocks (no own tokens): the merge keeps the shared part."""
    gen = torch.Generator().manual_seed(1)
    pool = KVPool(1, 2, 16, 4, num_blocks=6)
    pool.kv.copy_(torch.randn(pool.kv.shape, generator=gen))
    bt = torch.tensor([[2, 4], [2, 4]])
    plan = CascadePlan.build(bt, [8, 8], 4)
    assert plan is not None and plan.own_len == 0
    q = torch.randn(2, 6, 16, generator=gen)
    out = cascade.cascade_decode(q, pool.k_cache(0), pool.v_cache(0), plan, 0.25)
    want = paged_decode_attention(q, pool.k_cache(0), pool.v_cache(0), bt, torch.tensor([8, 8]), 0.25)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_partial_attention_and_merge() -> None:
    """Two halves merged by log-sum-exp == attention over all keys; a fully masked part weighs nothing."""
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, 5, 8, generator=gen), torch.randn(3, 12, 8, generator=gen),
               torch.randn(3, 12, 8, generator=gen))
    whole = torch.softmax(q @ k.transpose(1, 2) * 0.3, dim=-1) @ v
    o_a, l_a = partial_attention(q, k[:, :7], v[:, :7], 0.3)
    o_b, l_b = partial_attention(q, k[:, 7:], v[:, 7:], 0.3)
    torch.testing.assert_close(merge_partials(o_a, l_a, o_b, l_b), whole, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(l_a.exp() + l_b.exp(), (q @ k.transpose(1, 2) * 0.3).exp().sum(-1, keepdim=True))
    none = torch.zeros(1, 1, 5, dtype=torch.bool)
    o_n, l_n = partial_attention(q, k[:, 7:], v[:, 7:], 0.3, none)
    assert bool((o_n == 0).all()) and bool(torch.isneginf(l_n).all())
    torch.testing.assert_close(merge_partials(o_a, l_a, o_n, l_n), o_a)


def test_switches(share_any) -> None:
    """cascade=False, the module switch and a plugged decode_fn each turn it off; the default is on."""
    pool, bt, lens, slots, q, k, v, _ = decode_case(4, 4, 2, 16, [(3, 12)], 0, seed=5)
    args = (pool, slots, bt, list(range(len(lens) + 1)), lens, 0.25)
    assert cascade.ENABLED and PagedStep(*args).cascade_plan is not None
    assert PagedStep(*args, cascade=False).cascade_plan is None
    with use_cascade(False):
        assert PagedStep(*args).cascade_plan is None
        assert PagedStep(*args, cascade=True).cascade_plan is not None
    assert cascade.ENABLED
    assert PagedStep(*args, decode_fn=paged_decode_attention).cascade_plan is None


def test_tiny_model_tokens_identical_with_cascade_on_and_off(monkeypatch) -> None:
    """8 prompts sharing a 200-token prefix: the hash cache shares its blocks, cascade engages, same tokens."""
    llm = LLM("tiny-llama", device="cpu", prefix_cache="hash", block_size=16)
    rng = random.Random(0)
    vocab = llm.config.vocab_size
    prefix = [rng.randrange(vocab) for _ in range(200)]
    prompts = [{"prompt_token_ids": prefix + [rng.randrange(vocab) for _ in range(3 + i)]} for i in range(8)]
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    seen: list[list[SharedGroup]] = []
    real = cascade.cascade_decode

    def spy(q, k_cache, v_cache, plan, scale):
        seen.append(plan.groups)
        return real(q, k_cache, v_cache, plan, scale)

    monkeypatch.setattr(cascade, "cascade_decode", spy)
    with use_cascade(True):
        on = [o.token_ids for o in llm.generate(prompts, params)]
    assert seen, "cascade attention never ran"
    assert all(len(g) == 1 and len(g[0].block_ids) == 200 // 16 for g in seen)
    assert max(len(g[0].members) for g in seen) == 8  # (the first admitted starts decoding a step before the rest)
    llm.reset_prefix_cache()
    with use_cascade(False):
        calls = len(seen)
        off = [o.token_ids for o in llm.generate(prompts, params)]
        assert len(seen) == calls
    assert on == off and all(len(t) == 12 for t in on)


def test_bench_cascade_runs_on_a_tiny_model(capsys) -> None:
    from minikv.bench import main as bench_main

    assert bench_main(["cascade", "--model", "tiny-llama", "--batch", "3", "--prefix", "256", "--decode-tokens", "3",
                       "--repeats", "1", "--block-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "decode ms/step" in out and "identical on/off for 3/3 prompts: yes" in out
    calls = int(re.search(r"cascade attention ran in (\d+) layer calls", out).group(1))
    assert calls > 0 and calls % 2 == 0  # tiny-llama has 2 layers


def test_bench_cascade_refuses_a_batch_without_a_shared_prefix(capsys) -> None:
    from minikv.bench import main as bench_main

    with pytest.raises(SystemExit):
        bench_main(["cascade", "--model", "tiny-llama", "--batch", "1"])
    assert "needs --batch >= 2" in capsys.readouterr().err

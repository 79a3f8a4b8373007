"""The batched engine: paged KV (several block sizes) == batched contiguous KV == transformers, token for token.

Also: the paged and padded attention steps against the torch reference, blocks all
returned after generate, waves when the pool is short, and cleanup after a failure.
"""

from __future__ import annotations

import functools
import itertools
import random

import pytest
import torch

from conftest import load_hf, load_llm
from pool_checks import assert_nothing_allocated
from minikv import LLM, SamplingParams
from minikv.attention.padded import PaddedStep
from minikv.attention.paged import PagedStep
from minikv.attention.reference import decode_attention
from minikv.attention.torch_ref import paged_attention, paged_decode_attention
from minikv.engine.model_runner import ModelRunner
from minikv.engine.waves import WavesScheduler
from minikv.kv import BlockAllocator, BlockTable, KVPool, make_block_table_tensor
from minikv.kv.contiguous import ContiguousKVCache
from minikv.kv.padded import PaddedKVCache

MODELS = ["tiny-llama", "tiny-qwen2", "tiny-llama:heads=6,kv_heads=3,head_dim=24,hidden=72"]
BLOCK_SIZES = [1, 16, 32]
# 1 token; exactly one and two blocks of 16 / one of 32; 64 = two blocks of 32; odd lengths
PROMPT_LENS = [1, 16, 32, 64, 5, 47, 33]
MAX_TOKENS = 20
GREEDY = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)


def prompts_for(name: str) -> list[dict]:
    vocab = load_llm(name).config.vocab_size
    rng = random.Random(len(name))
    return [{"prompt_token_ids": [rng.randrange(vocab) for _ in range(n)]} for n in PROMPT_LENS]


@functools.lru_cache(maxsize=None)
def hf_tokens(name: str) -> tuple[tuple[int, ...], ...]:
    """transformers' greedy tokens, one prompt at a time (no padding), stopping at EOS like minikv."""
    hf, eos = load_hf(name), sorted(load_llm(name).eos_ids)
    out = []
    for p in prompts_for(name):
        ids = torch.tensor([p["prompt_token_ids"]])
        with torch.inference_mode():
            gen = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_TOKENS, do_sample=False,
                              eos_token_id=eos, pad_token_id=eos[0])
        out.append(tuple(gen[0, ids.shape[1]:].tolist()))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def contiguous_llm(name: str) -> LLM:
    return LLM(name, device="cpu", kv_layout="contiguous")


def tokens(outs) -> list[list[int]]:
    return [list(o.token_ids) for o in outs]


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("name", MODELS)
def test_paged_batch_matches_contiguous_and_transformers(name: str, block_size: int) -> None:
    llm = LLM(name, device="cpu", block_size=block_size)
    outs = llm.generate(prompts_for(name), GREEDY)
    want = [list(t) for t in hf_tokens(name)]
    assert tokens(outs) == want
    assert tokens(contiguous_llm(name).generate(prompts_for(name), GREEDY)) == want
    assert sum(len(t) == MAX_TOKENS for t in want) >= len(want) // 2, "most prompts stopped early: weak test"
    assert_nothing_allocated(llm)
    for o in outs:
        m = o.metrics
        assert o.finish_reason == ("length" if len(o.token_ids) == MAX_TOKENS else "stop")
        assert m.arrival_time <= m.first_token_time <= m.finished_time
        assert m.num_generated_tokens == len(o.token_ids) and m.num_prompt_tokens == len(o.prompt_token_ids)


def test_plugged_sequential_path_matches_batched() -> None:
    """Chapter 01's plug-ins (one sequence at a time) give the same tokens as the batched engine."""
    name = "tiny-llama"
    llm = LLM(name, device="cpu", kv_cache_cls=ContiguousKVCache, decode_attention=decode_attention)
    assert llm.kv_layout == "contiguous" and llm.kv_pool is None
    assert tokens(llm.generate(prompts_for(name), GREEDY)) == [list(t) for t in hf_tokens(name)]


def test_plugged_paged_decode_attention_is_used_and_matches() -> None:
    """Chapter 02's plug-in: the reference paged_decode_attention serves every decode step."""
    name, calls = "tiny-qwen2", []

    def counted(q, k_cache, v_cache, block_tables, context_lens, scale):
        calls.append(q.shape[0])
        return paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)

    llm = LLM(name, device="cpu", block_size=4, paged_decode_attention=counted)
    assert tokens(llm.generate(prompts_for(name), GREEDY)) == [list(t) for t in hf_tokens(name)]
    layers = llm.config.num_layers
    assert len(calls) == layers * (MAX_TOKENS - 1) and calls[0] == len(PROMPT_LENS)


def prefill_sizes(monkeypatch, llm: LLM, ps: list[dict], params) -> tuple[list[list[int]], list[int]]:
    """Generate with the waves scheduler, recording how many sequences each prefill step admitted."""
    sizes: list[int] = []
    real = WavesScheduler.schedule_batch

    def spy(self):
        batch, is_prefill = real(self)
        if is_prefill:
            sizes.append(len(batch))
        return batch, is_prefill

    monkeypatch.setattr(WavesScheduler, "schedule_batch", spy)
    outs = llm.generate(ps, params)
    monkeypatch.undo()
    return tokens(outs), sizes


@pytest.mark.parametrize("layout", ["paged", "contiguous"])
def test_batch_larger_than_the_cache_runs_in_waves(monkeypatch, layout: str) -> None:
    name = "tiny-llama"
    ps = prompts_for(name)
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in (12, 3, 20, 7, 1, 16, 9)]
    big, sizes = prefill_sizes(monkeypatch, LLM(name, device="cpu", scheduler="waves"), ps, params)
    assert sizes == [len(ps)]  # everything fits: one batch
    if layout == "paged":  # room for about two of these requests at a time
        small = LLM(name, device="cpu", block_size=16, num_blocks=7, scheduler="waves")
    else:
        row_len = max(len(p["prompt_token_ids"]) + sp.max_tokens for p, sp in zip(ps, params))
        two_rows = 2 * row_len * load_llm(name).kv_bytes_per_token
        small = LLM(name, device="cpu", kv_layout="contiguous", kv_cache_memory=two_rows)
    got, sizes = prefill_sizes(monkeypatch, small, ps, params)
    assert got == big
    assert [len(t) for t in got] == [p.max_tokens for p in params]
    assert sum(sizes) == len(ps) and len(sizes) >= 3, f"the short cache should have forced waves, got {sizes}"
    if layout == "paged":
        assert_nothing_allocated(small)
    else:
        assert max(sizes) <= 2


def test_each_sequence_stops_at_the_context_limit_on_its_own() -> None:
    llm = LLM("tiny-llama", device="cpu", block_size=16, max_model_len=40)
    ps = [{"prompt_token_ids": [7] * 30}, {"prompt_token_ids": [9] * 5}, {"prompt_token_ids": [11] * 39}]
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    outs = llm.generate(ps, params)
    assert [len(o.token_ids) for o in outs] == [10, 20, 1]
    assert all(o.finish_reason == "length" and o.metrics.finished_time is not None for o in outs)
    unlimited = load_llm("tiny-llama").generate(ps, params)
    assert [o.token_ids for o in outs] == [u.token_ids[: len(o.token_ids)] for o, u in zip(outs, unlimited)]
    assert_nothing_allocated(llm)


def test_failure_mid_generation_frees_every_block(monkeypatch) -> None:
    llm = LLM("tiny-llama", device="cpu", block_size=4)
    calls = itertools.count()
    real_run = ModelRunner.run

    def flaky(self, seqs):
        if next(calls) == 3:
            raise RuntimeError("boom")
        return real_run(self, seqs)

    monkeypatch.setattr(ModelRunner, "run", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        llm.generate(prompts_for("tiny-llama"), GREEDY)
    assert_nothing_allocated(llm)
    monkeypatch.undo()
    assert tokens(llm.generate(prompts_for("tiny-llama"), GREEDY)) == [list(t) for t in hf_tokens("tiny-llama")]


# ---- the attention steps against the reference ----------------------------------------------------

def attention_case(block_size: int, hq: int, hkv: int, d: int, seed: int):
    """A junk-filled pool with sequences scattered over shuffled blocks; some have a cached prefix."""
    gen = torch.Generator().manual_seed(seed)
    ctx = [1, block_size, 2 * block_size + 1, 37, 5]
    cached = [0, 0, block_size, 20, 4]  # tokens already in the cache before this step
    pool = KVPool(1, hkv, d, block_size, num_blocks=sum(-(-n // block_size) for n in ctx) + 5)
    pool.kv.copy_(torch.randn(pool.kv.shape, generator=gen) * 5)
    alloc = BlockAllocator(pool.num_blocks, block_size)  # the pool holds tensors only: hand its blocks out here
    order = alloc.allocate(pool.num_blocks)
    random.Random(seed).shuffle(order)
    alloc.free(order)
    tables = [BlockTable(block_size) for _ in ctx]
    for t, n, c in zip(tables, ctx, cached):  # earlier steps wrote the cached prefix
        slots = torch.tensor(t.append_tokens(c, alloc), dtype=torch.long)
        pool.k_cache(0).view(-1, hkv, d)[slots] = torch.randn(c, hkv, d, generator=gen)
        pool.v_cache(0).view(-1, hkv, d)[slots] = torch.randn(c, hkv, d, generator=gen)
    new = [n - c for n, c in zip(ctx, cached)]
    slots = torch.tensor(sum((t.append_tokens(m, alloc) for t, m in zip(tables, new)), []))
    q = torch.randn(sum(new), hq, d, generator=gen)
    k = torch.randn(sum(new), hkv, d, generator=gen)
    v = torch.randn(sum(new), hkv, d, generator=gen)
    starts = [0, *itertools.accumulate(new)]
    return pool, alloc, tables, ctx, starts, slots, q, k, v


def expected_pool(before: torch.Tensor, tables: list[BlockTable], spans: list[tuple[int, int]], k: torch.Tensor,
                  v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer 0's (K, V) as they must be after a step writes positions ``start..end-1`` of each sequence.

    Built from a copy taken *before* the step and slots recomputed from the block tables, so a step
    that writes to the wrong slot cannot make its own reference agree with it.
    """
    kc, vc = before[0, 0].clone(), before[1, 0].clone()  # [num_blocks, block_size, Hkv, D]
    slots = torch.tensor([t.slot(p) for t, (s, e) in zip(tables, spans) for p in range(s, e)], dtype=torch.long)
    kc.view(-1, *kc.shape[2:])[slots] = k
    vc.view(-1, *vc.shape[2:])[slots] = v
    return kc, vc


@pytest.mark.parametrize(("block_size", "hq", "hkv", "d"), [(1, 4, 4, 16), (16, 8, 2, 24), (32, 6, 1, 64)])
def test_paged_step_matches_torch_ref(block_size: int, hq: int, hkv: int, d: int) -> None:
    """PagedStep writes each new token's K/V at its slot, then attends as the reference does.

    The reference never reads the pool after the step wrote it (see :func:`expected_pool`), and the
    whole pool is compared too, so a write to a wrong slot fails even where the step reads it back.
    """
    pool, alloc, tables, ctx, starts, slots, q, k, v = attention_case(block_size, hq, hkv, d, seed=block_size)
    bt = make_block_table_tensor([t.blocks for t in tables], pad=0)
    scale = d ** -0.5
    spans = [(n - (e - s), n) for n, s, e in zip(ctx, starts, starts[1:])]
    want_k, want_v = expected_pool(pool.kv, tables, spans, k, v)
    out = PagedStep(pool, slots, bt, starts, ctx, scale).attend(0, q, k, v)  # prefill, some after a prefix
    want = paged_attention(q, want_k, want_v, bt, starts, ctx, scale)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    assert torch.equal(pool.k_cache(0), want_k) and torch.equal(pool.v_cache(0), want_v), "K/V written off their slots"

    # one decode step for every sequence
    dec_slots = torch.tensor([t.append_tokens(1, alloc)[0] for t in tables])
    ctx1 = [n + 1 for n in ctx]
    bt = make_block_table_tensor([t.blocks for t in tables], pad=0)
    qd, kd, vd = q[: len(ctx)] * 0.5, k[: len(ctx)] + 1, v[: len(ctx)] - 1
    dec_starts = list(range(len(ctx) + 1))
    want_k, want_v = expected_pool(pool.kv, tables, [(n, n + 1) for n in ctx], kd, vd)
    out = PagedStep(pool, dec_slots, bt, dec_starts, ctx1, scale).attend(0, qd, kd, vd)
    want = paged_attention(qd, want_k, want_v, bt, dec_starts, ctx1, scale)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    assert torch.equal(pool.k_cache(0), want_k) and torch.equal(pool.v_cache(0), want_v), "K/V written off their slots"


@pytest.mark.parametrize("rows", [[0, 1, 2, 3, 4], [4, 0, 3, 1, 2], [5, 1, 3, 0, 2]])
def test_padded_step_matches_torch_ref(rows: list[int]) -> None:
    """Rows in any order (and with an unused row) give the same attention as the paged reference."""
    hq, hkv, d = 6, 2, 16
    pool, alloc, tables, ctx, starts, slots, q, k, v = attention_case(4, hq, hkv, d, seed=7)
    bt = make_block_table_tensor([t.blocks for t in tables], pad=0)
    cache = PaddedKVCache(1, hkv, d, max(rows) + 1, max(ctx) + 1)
    for row, t, n, m in zip(rows, tables, ctx, (b - a for a, b in zip(starts, starts[1:]))):
        cached = torch.tensor([t.slot(p) for p in range(n - m)], dtype=torch.long)  # copy the cached prefix
        cache.k[0, row, :, : n - m] = pool.k_cache(0).view(-1, hkv, d)[cached].transpose(0, 1)
        cache.v[0, row, :, : n - m] = pool.v_cache(0).view(-1, hkv, d)[cached].transpose(0, 1)
    scale = 0.3
    out = PaddedStep(cache, rows, starts, ctx, scale).attend(0, q, k, v)
    want = paged_attention(q, *_written(pool, slots, k, v), bt, starts, ctx, scale)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)

    dec_slots = torch.tensor([t.append_tokens(1, alloc)[0] for t in tables])
    ctx1 = [n + 1 for n in ctx]
    bt = make_block_table_tensor([t.blocks for t in tables], pad=0)
    qd, kd, vd = q[: len(ctx)] * 0.5, k[: len(ctx)] + 1, v[: len(ctx)] - 1
    dec_starts = list(range(len(ctx) + 1))
    out = PaddedStep(cache, rows, dec_starts, ctx1, scale).attend(0, qd, kd, vd)
    want = paged_attention(qd, *_written(pool, dec_slots, kd, vd), bt, dec_starts, ctx1, scale)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)


def _written(pool: KVPool, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    kc, vc = pool.k_cache(0), pool.v_cache(0)
    kc.view(-1, *kc.shape[2:])[slots] = k
    vc.view(-1, *vc.shape[2:])[slots] = v
    return kc, vc


# ---- the real model ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_batch_paged_matches_contiguous_and_transformers(smollm2) -> None:
    texts = ["The history of Rome", "def fibonacci(n):", "Photosynthesis is the process by which plants turn "
             "light, water and carbon dioxide into sugar and oxygen. It happens in", "Hi"]
    ps = [{"prompt_token_ids": smollm2.encode(t)} for t in texts]
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    assert smollm2.kv_layout == "paged" and smollm2.block_size == 16
    ours = tokens(smollm2.generate(ps, params))
    assert_nothing_allocated(smollm2)
    hf = load_hf("smollm2-135m")
    for p, got in zip(ps, ours):
        ids = torch.tensor([p["prompt_token_ids"]])
        with torch.inference_mode():
            theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, min_new_tokens=16,
                                 do_sample=False)[0, ids.shape[1]:].tolist()
        assert got == theirs, f"tokens differ for {smollm2.tokenizer.decode(p['prompt_token_ids'])!r}"
    contiguous = LLM("smollm2-135m", device="cpu", kv_layout="contiguous")
    assert tokens(contiguous.generate(ps, params)) == ours
    # block sizes 1 and 32; the prompts include one ending exactly on a 16-token block boundary
    ps.append({"prompt_token_ids": smollm2.encode("Caching keys and values " * 8)[:32]})
    want = tokens(smollm2.generate(ps, params))
    for block_size in (1, 32):
        other = LLM("smollm2-135m", device="cpu", block_size=block_size)
        assert tokens(other.generate(ps, params)) == want, f"block size {block_size} differs from 16"
        assert_nothing_allocated(other)

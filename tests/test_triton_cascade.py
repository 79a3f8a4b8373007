"""The Triton shared-prefix (cascade) decode against the plain paged decode reference and the PyTorch cascade.

Interpreter on CPU (fp32), small shapes. Each case builds a junk-filled pool where some sequences' block
tables begin with the same block ids (a shared system prompt), others share a different prefix, and some
share nothing; every block id is shuffled and table pads are -1.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed")

from minikv.attention.cascade import CascadePlan, cascade_decode  # noqa: E402
from minikv.attention.torch_ref import paged_decode_attention  # noqa: E402
from minikv.attention.triton_cascade import TritonCascadePlan, triton_cascade_decode  # noqa: E402

ATOL = RTOL = 2e-5


def shared_pool(heads, head_dim, block_size, groups, seed=0):
    """``groups``: list of (shared tokens, [own tokens per member]); a group of one shares nothing."""
    gen = torch.Generator().manual_seed(seed)
    hq, hkv = heads
    tables, lens, next_id = [], [], 0
    need = sum(-(-s // block_size) + sum(-(-o // block_size) + 1 for o in own) for s, own in groups) + 4
    order = torch.randperm(need, generator=gen).tolist()
    for shared, own in groups:
        assert shared % block_size == 0
        prefix = order[next_id:next_id + shared // block_size]
        next_id += len(prefix)
        for o in own:
            mine = order[next_id:next_id + -(-o // block_size)]
            next_id += len(mine)
            tables.append(prefix + mine)
            lens.append(shared + o)
    width = max(len(t) for t in tables) + 1
    tables = torch.tensor([t + [-1] * (width - len(t)) for t in tables], dtype=torch.long)
    shape = (need, block_size, hkv, head_dim)
    k, v = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    q = torch.randn(len(lens), hq, head_dim, generator=gen)
    return q, k, v, tables, lens


CASES = [
    # heads, head dim, block size, groups (shared tokens, own tokens of each member)
    ((4, 4), 64, 16, [(32, [1, 5, 16]), (0, [9])]),
    ((8, 2), 80, 16, [(48, [1, 17]), (16, [3, 3, 30]), (0, [40])]),
    ((5, 1), 64, 1, [(7, [1, 2]), (3, [4, 1, 1, 6])]),
    ((14, 2), 128, 16, [(64, [1, 2, 3, 4, 5, 6, 7, 8, 9])]),
    ((8, 2), 64, 16, [(32, [16, 16])]),  # own part exactly one full block
]


@pytest.mark.parametrize("heads, head_dim, block_size, groups", CASES)
def test_triton_cascade_equals_plain_decode(heads, head_dim, block_size, groups):
    q, k, v, tables, lens = shared_pool(heads, head_dim, block_size, groups)
    scale = head_dim ** -0.5
    plan = TritonCascadePlan.build(tables, lens, block_size, min_saved_tokens=0)
    assert plan is not None and len(plan.groups) == sum(1 for s, own in groups if s and len(own) > 1)
    got = triton_cascade_decode(q, k, v, plan, scale)
    want = paged_decode_attention(q, k, v, tables, torch.tensor(lens), scale)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    torch_plan = CascadePlan.build(tables, lens, block_size, min_saved_tokens=0)
    torch.testing.assert_close(got, cascade_decode(q, k, v, torch_plan, scale), atol=ATOL, rtol=RTOL)


def test_plan_skips_shared_blocks_for_members_only():
    q, k, v, tables, lens = shared_pool((4, 2), 64, 16, [(32, [3, 20]), (0, [7])])
    plan = TritonCascadePlan.build(tables, lens, 16, min_saved_tokens=0)
    assert plan.own_lens.tolist() == [3, 20, 7]
    assert plan.own_tables[0, 0] == tables[0, 2] and plan.own_tables[2, 0] == tables[2, 0]
    assert TritonCascadePlan.build(tables, lens, 16) is None  # (2 - 1) * 32 tokens spared: below the threshold


def test_engine_with_triton_cascade_gives_torch_tokens(monkeypatch):
    """Sequences sharing a cached prompt decode through the Triton cascade and get the torch backend's tokens."""
    from minikv import LLM, SamplingParams
    from minikv.attention import cascade, triton_backend

    monkeypatch.setattr(cascade, "MIN_SAVED_TOKENS", 32)  # engage on this small prompt
    calls = []
    real = triton_backend.triton_cascade_decode
    monkeypatch.setattr(triton_backend, "triton_cascade_decode",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    system = list(range(40, 40 + 48))  # three full blocks of 16
    prompts = [{"prompt_token_ids": system + [7 + i] * (i + 1)} for i in range(3)]
    params = SamplingParams(max_tokens=5, temperature=0)
    want = [o.token_ids for o in LLM("tiny-llama", attention="torch", prefix_cache="radix").generate(
        prompts, params)]
    llm = LLM("tiny-llama", attention="triton", prefix_cache="radix")
    llm.generate(prompts[:1], params)  # the system prompt is cached, so the next three share its blocks
    got = [o.token_ids for o in llm.generate(prompts, params)]
    assert got == want
    assert calls, "the Triton cascade never ran"


def test_bench_cascade_times_and_counts_the_triton_kernels(monkeypatch):
    """The pieces ``minikv bench cascade --attention triton`` adds (the whole bench is too slow for the interpreter)."""
    from minikv import LLM, SamplingParams
    from minikv.attention import cascade
    from minikv.bench.cascade import attention_alone, counting_cascade_calls

    llm = LLM("tiny-llama", attention="triton", prefix_cache="hash")
    off, on = attention_alone(llm.config, 3, 32, 5, 16, 1, torch.float32, torch.device("cpu"), "triton")
    assert 0 < off < float("inf") and 0 < on < float("inf")
    monkeypatch.setattr(cascade, "MIN_SAVED_TOKENS", 32)
    prompts = [{"prompt_token_ids": list(range(50, 82)) + [i]} for i in range(3)]
    llm.generate(prompts[:1], SamplingParams(max_tokens=1))
    with counting_cascade_calls() as calls:
        llm.generate(prompts, SamplingParams(max_tokens=3, temperature=0))
    assert calls[0] > 0 and calls[0] % llm.config.num_layers == 0

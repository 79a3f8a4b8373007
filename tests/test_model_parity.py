"""minikv's own forward pass against transformers on the same checkpoint.

Greedy tokens must be identical; logits of the prefill and of every decode
step must agree within fp32 tolerance.
"""

from __future__ import annotations

import pytest
import torch

from conftest import load_hf, load_llm
from minikv import SamplingParams
from minikv.attention.contiguous import ContiguousStep
from minikv.kv.contiguous import ContiguousKVCache

TINY_VARIANTS = [
    "tiny-llama",  # GQA 4/2, head_dim 16
    "tiny-qwen2",  # q/k/v biases, tied embeddings, GQA 6/2
    "tiny-llama:heads=6,kv_heads=3,head_dim=24,hidden=72",  # head_dim * heads != hidden
    "tiny-llama:heads=4,kv_heads=4,hidden=40,head_dim=10,tie=1",  # MHA, odd head dim, tied
    "tiny-llama:heads=8,kv_heads=1,hidden=56,head_dim=6,layers=3",  # MQA, tiny head dim
    "tiny-qwen2:heads=5,kv_heads=5,hidden=60,head_dim=12,tie=0",  # MHA Qwen2, untied
    "tiny-llama:scaling=llama3x8,bias=1",  # llama3 RoPE scaling, attention_bias incl. o_proj
    "tiny-llama:scaling=linear4,theta=500000",  # linear RoPE scaling
]
PROMPTS = ["hello world", "a", "The quick brown fox jumps over the lazy dog. " * 3]


def hf_greedy(name: str, ids: list[int], n: int) -> list[int]:
    out = load_hf(name).generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=n, do_sample=False)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("name", TINY_VARIANTS)
def test_tiny_greedy_tokens_match_transformers(name: str) -> None:
    llm = load_llm(name)
    lengths = []
    for prompt in PROMPTS:
        ids = llm.encode(prompt)
        ours = llm.generate({"prompt_token_ids": ids}, SamplingParams(max_tokens=32, temperature=0.0))[0].token_ids
        assert ours == hf_greedy(name, ids, 32), f"{name}: tokens differ for prompt {prompt!r}"
        lengths.append(len(ours))
    assert max(lengths) >= 16, "every prompt stopped early: the comparison would be too weak"


def stepwise_logits(llm, ids: list[int], n_steps: int) -> torch.Tensor:
    """Prefill logits for every prompt position, then one decode step at a time (greedy). -> [len+n, vocab]"""
    cfg = llm.config
    cache = ContiguousKVCache(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, len(ids) + n_steps)
    rows = []
    with torch.inference_mode():
        new = ids
        for _ in range(n_steps + 1):
            start = len(cache)
            logits = llm.model(torch.tensor(new), torch.arange(start, start + len(new)),
                               ContiguousStep([cache], [len(new)], llm.scale))
            rows.append(logits)
            new = [int(logits[-1].argmax())]
    return torch.cat(rows)


@pytest.mark.parametrize("name", TINY_VARIANTS[:4])
def test_tiny_prefill_and_step_logits_match(name: str) -> None:
    llm, hf = load_llm(name), load_hf(name)
    ids = llm.encode(PROMPTS[2])
    ours = stepwise_logits(llm, ids, 8)
    full = ids + ours[len(ids) - 1:-1].argmax(-1).tolist()
    with torch.inference_mode():
        theirs = hf(torch.tensor([full])).logits[0]
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-5)


@pytest.mark.slow
def test_smollm2_greedy_tokens_match_transformers(smollm2) -> None:
    prompts = ["The history of Rome", "def fibonacci(n):", "Photosynthesis is the process by which"]
    for prompt in prompts:
        ids = smollm2.encode(prompt)
        ours = smollm2.generate({"prompt_token_ids": ids}, SamplingParams(max_tokens=32, temperature=0.0))[0]
        theirs = hf_greedy("smollm2-135m", ids, 32)
        assert len(theirs) == 32
        assert ours.token_ids == theirs, f"tokens differ for {prompt!r}: {ours.text!r}"


@pytest.mark.slow
def test_smollm2_logits_match(smollm2) -> None:
    ids = smollm2.encode("Caching the keys and values of earlier tokens")
    ours = stepwise_logits(smollm2, ids, 4)
    full = ids + ours[len(ids) - 1:-1].argmax(-1).tolist()
    with torch.inference_mode():
        theirs = load_hf("smollm2-135m")(torch.tensor([full])).logits[0]
    torch.testing.assert_close(ours, theirs, atol=2e-3, rtol=1e-4)


@pytest.mark.slow
def test_smollm2_chat_answers_paris(smollm2) -> None:
    out = smollm2.chat("What is the capital of France?", SamplingParams(max_tokens=16, temperature=0.0))
    assert "Paris" in out.text
    assert out.finish_reason == "stop"

"""``LLM(attention=...)``: the Triton backend gives the same greedy tokens as the PyTorch one, and bad choices are refused.

Under Triton's interpreter (no CUDA here), on tiny models: with and without
prefix-cache hits (hash, radix at page size 1 with its copy-on-write block),
GQA and MHA, block sizes 16 and 1.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from minikv import LLM, SamplingParams
from minikv.engine.config import check_attention
from minikv.errors import InvalidRequestError

SHARED = list(range(5, 45))  # 40 tokens: 2 full blocks of 16 plus 8, so hits and partial blocks both happen
PROMPTS = [{"prompt_token_ids": SHARED + tail} for tail in ([7, 8, 9], [60, 61], [7, 8, 9, 10, 11, 12])]
PARAMS = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
CASES = [
    ("tiny-llama", "none", None, 16),
    ("tiny-llama", "hash", None, 16),
    ("tiny-qwen2", "radix", {"page_size": 1}, 16),
    ("tiny-llama:heads=4,kv_heads=4,head_dim=24", "hash", None, 1),
]


@pytest.mark.parametrize("model,cache,options,block_size", CASES)
def test_triton_backend_gives_the_torch_tokens(model, cache, options, block_size):
    runs = {}
    for backend in ("torch", "triton"):
        llm = LLM(model, device="cpu", attention=backend, prefix_cache=cache, prefix_cache_options=options,
                  block_size=block_size)
        assert llm.attention == backend
        first = llm.generate(PROMPTS[:1], PARAMS)  # fills the cache, so the next call hits it
        second = llm.generate(PROMPTS, PARAMS)
        runs[backend] = ([o.token_ids for o in first + second], [o.num_cached_tokens for o in second])
    assert runs["triton"] == runs["torch"]
    if cache != "none":
        assert min(runs["torch"][1]) > 0, "the second call should hit the prefix the first one cached"


def test_triton_backend_is_the_one_that_runs(monkeypatch):
    import minikv.attention.triton_backend as tb

    calls = []
    original = tb.TritonPagedStep.attend
    monkeypatch.setattr(tb.TritonPagedStep, "attend", lambda self, *a: calls.append(1) or original(self, *a))
    llm = LLM("tiny-llama", device="cpu", attention="triton")
    llm.generate(PROMPTS[:1], SamplingParams(max_tokens=2, temperature=0.0))
    assert calls, "attention='triton' must attend through TritonPagedStep"


def test_auto_is_torch_on_the_cpu():
    assert LLM("tiny-llama", device="cpu").attention == "torch"
    assert check_attention("auto", "paged", torch.device("cuda"), torch.bfloat16) == (
        "triton" if importlib.util.find_spec("triton") else "torch")
    assert check_attention("auto", "contiguous", torch.device("cuda"), torch.bfloat16) == "torch"


@pytest.mark.parametrize("kwargs,match", [
    ({"attention": "cuda"}, r"attention='cuda' is unknown; choose from \('auto', 'torch', 'triton'\)"),
    ({"attention": None}, "attention=None is unknown"),
    ({"attention": "triton", "kv_layout": "contiguous"}, "runs on the paged KV layout"),
    ({"attention": "triton", "dtype": "bfloat16"}, "use dtype='float32'"),
])
def test_bad_attention_choices_are_refused(kwargs, match):
    with pytest.raises(InvalidRequestError, match=match):
        LLM("tiny-llama", device="cpu", **kwargs)


def test_triton_missing_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    with pytest.raises(InvalidRequestError, match="needs Triton, which is not installed: pip install triton"):
        LLM("tiny-llama", device="cpu", attention="triton")
    assert LLM("tiny-llama", device="cpu", attention="auto").attention == "torch"

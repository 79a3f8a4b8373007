"""Shared fixtures: models are loaded once per test session."""

from __future__ import annotations

import functools
import os

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's CPU interpreter; the variable must be set
# before anything imports triton (it is read when a kernel is decorated).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.manual_seed(0)


@functools.lru_cache(maxsize=None)
def load_llm(name: str):
    from minikv import LLM

    return LLM(name, device="cpu")


@functools.lru_cache(maxsize=None)
def load_hf(name: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(load_llm(name).path, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def smollm2():
    return load_llm("smollm2-135m")

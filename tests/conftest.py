"""Shared fixtures: models are loaded once per test session."""

from __future__ import annotations

import functools

import pytest
import torch

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

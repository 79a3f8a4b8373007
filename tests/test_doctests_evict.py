"""The docstring examples of the eviction, ghost and Belady modules run (they are part of their spec)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "minikv.prefix.ghost",
    "minikv.prefix.hash_peek",
    "minikv.prefix.hashing",
    "minikv.workloads.belady",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0

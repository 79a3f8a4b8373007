"""The docstring examples of the modules below run: they are part of their spec (``make test`` runs no doctests else)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "minikv.engine.detokenizer",
    "minikv.engine.policies",
    "minikv.engine.step_plan",
    "minikv.kv.pool",
    "minikv.prefix.base",
    "minikv.prefix.ghost",
    "minikv.prefix.hash_peek",
    "minikv.prefix.hashing",
    "minikv.prefix.offload",
    "minikv.prefix.radix.cache",
    "minikv.prefix.radix.queries",
    "minikv.workloads",
    "minikv.workloads.arrivals",
    "minikv.workloads.belady",
    "minikv.workloads.scheduled",
    "minikv.workloads.traces",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0

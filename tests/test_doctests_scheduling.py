"""The docstring examples of the scheduling and peek modules run (they are part of their spec)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "minikv.engine.policies",
    "minikv.workloads",
    "minikv.workloads.arrivals",
    "minikv.workloads.scheduled",
    "minikv.workloads.traces",
    "minikv.prefix.base",
    "minikv.prefix.hashing",
    "minikv.prefix.radix.cache",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0

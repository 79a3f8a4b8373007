"""The docstring examples of minikv.security's modules run: they are part of their spec."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["minikv.security.auc", "minikv.security.public_prefix", "minikv.security.collisions"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0

"""Reference results computed once per grading session, shared across the checks' child processes.

A check runs in a forked child, so a plain cache would be lost when the child
exits. ``@shared`` values computed in a child are sent back to the grading
process, which keeps them, so every later child inherits them at fork.
Only for argument-free functions returning picklable data (e.g. reference tokens).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

T = TypeVar("T")
_values: dict[str, Any] = {}
_new: list[str] = []


def once(key: str, fn: Callable[[], T]) -> T:
    """``fn()``, computed at most once per grading session under ``key``."""
    if key not in _values:
        _values[key] = fn()
        _new.append(key)
    return _values[key]


def shared(fn: Callable[[], T]) -> Callable[[], T]:
    """Decorator: compute ``fn()`` at most once per grading session."""
    key = f"{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def cached() -> T:
        return once(key, fn)

    return cached


def take_new() -> list[tuple[str, Any]]:
    """(key, value) computed since the last call (the child sends these to the parent)."""
    out = [(k, _values[k]) for k in _new]
    _new.clear()
    return out


def store(key: str, value: Any) -> None:
    """Keep a value a child computed (the parent calls this)."""
    _values[key] = value

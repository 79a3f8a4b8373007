"""An exercise whose package is missing (Triton has Linux wheels only) is graded SKIP with how to install it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from minikv.grade import registry, runner


def test_chapter_6_is_skipped_without_triton(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    exercise = registry.get("6.2")
    assert exercise.needs_packages == ("triton",)
    source = runner.Source("solutions/ch06_triton_attention.py", path=Path("solutions/ch06_triton_attention.py"))
    result = runner.run_exercise(exercise, source)
    assert result.status == runner.SKIP
    assert result.message.startswith("needs triton, which is not installed here: pip install triton")


def test_other_chapters_need_no_extra_package():
    assert all(not e.needs_packages for e in registry.all_exercises() if e.chapter != 6)

"""``minikv doctor`` (and chapter 00's environment check) lists real models, not every cached test model."""

from __future__ import annotations

import minikv.models
from minikv.doctor import report


def test_tiny_test_models_are_summed_up_in_one_row(monkeypatch) -> None:
    cached = [("smollm2-135m-instruct", 517 * 2**20)] + [(f"tiny/tiny-llama-{i:012x}", 2**19) for i in range(12)]
    monkeypatch.setattr(minikv.models, "cached_models", lambda: cached)
    rows = report()
    assert ("cached model", "smollm2-135m-instruct (517 MiB)") in rows
    assert not any("tiny-llama" in value for _, value in rows), rows
    assert ("test models", "and 12 tiny random test models (6.0 MiB in all)") in rows


def test_only_test_models_cached_still_says_no_real_model_yet(monkeypatch) -> None:
    monkeypatch.setattr(minikv.models, "cached_models", lambda: [("tiny/tiny-qwen2-0123456789ab", 2**20)])
    rows = dict(report())
    assert rows["cached models"].startswith("none yet")
    assert rows["test models"] == "and 1 tiny random test model (1.0 MiB in all)"

"""``minikv bench prefix`` runs end to end on a small trace and prints what it promises."""

from __future__ import annotations

import pytest

from minikv.bench import CASES, main


def test_bench_prefix_prints_a_table_per_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert "prefix" in CASES
    assert main(["prefix", "--requests", "50", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for kind in ("system", "multi-turn", "few-shot"):
        assert f"trace {kind}: 50 requests" in out
    assert out.count("cache (us/token)") == 3
    for row in ("hash sha256", "hash xxh3_128", "radix page 16", "radix page 1 "):
        assert out.count(row) == 3
    assert out.count("(fits: no eviction)") == 3
    assert out.count("hit rates equal the ideal") == 3  # the cache fits: every hit is ideal
    assert "/ sha256" in out and "ideal hit rate of an infinite cache" in out


def test_bench_prefix_tight_pool_falls_below_the_ideal(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["prefix", "--requests", "60", "--repeats", "1", "--traces", "skewed", "--num-blocks", "80"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(tight:" in out and "hit rates below the ideal" in out


def test_bench_prefix_rejects_a_pool_too_small(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prefix", "--requests", "5", "--traces", "system", "--num-blocks", "3"]) == 2
    assert "--num-blocks 3 is too small" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prefix", "--traces", "chat"])

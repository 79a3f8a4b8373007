"""``minikv bench evict`` runs end to end on tiny traces: tables, JSON, and clear errors."""

from __future__ import annotations

import json

import pytest

from minikv.bench import CASES, main
from minikv.prefix.policies import EVICTION_POLICIES

TINY = ["evict", "--conversations", "8", "--turns", "3", "--requests", "30", "--capacity-tokens", "2048",
        "--no-progress"]  # fmt: skip


def test_json_has_every_cache_and_policy_against_belady(capsys: pytest.CaptureFixture[str]) -> None:
    assert "evict" in CASES
    assert main([*TINY, "--traces", "multi-turn-rr,skewed", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_blocks"] == 128 and set(report["traces"]) == {"multi-turn-rr", "skewed"}
    for r in report["traces"].values():
        assert r["belady_hit_tokens"] <= r["ideal_hit_tokens"]
        runs = {(x["cache"], x["policy"]) for x in r["runs"]}
        assert runs == {(c, p) for c in ("hash", "radix") for p in EVICTION_POLICIES}
        for x in r["runs"]:
            assert x["hit_tokens"] <= r["ideal_hit_tokens"]
            expect = 100.0 * x["hit_tokens"] / r["belady_hit_tokens"] if r["belady_hit_tokens"] else 100.0
            assert x["of_belady"] == pytest.approx(expect)
    skewed = report["traces"]["skewed"]
    assert skewed["belady_hit_tokens"] < skewed["ideal_hit_tokens"]  # the pool is tight there
    assert any(x["evictions"] for x in skewed["runs"])


def test_table_names_the_best_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--traces", "multi-turn", "--policies", "lru,duel", "--caches", "radix"]) == 0
    out = capsys.readouterr().out
    assert "trace multi-turn: 24 requests" in out and "% of Belady" in out and "best: radix" in out
    assert out.count("radix ") >= 2


def test_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evict", "--traces", "multi-turn", "--conversations", "4", "--capacity-tokens", "64",
                 "--no-progress"]) == 2  # fmt: skip
    assert "--capacity-tokens 64" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evict", "--policies", "fifo"])
    with pytest.raises(SystemExit):
        main(["evict", "--traces", "chat"])

"""``minikv bench offload`` runs end to end on a tiny trace and a tiny model: JSON, table, clear errors."""

from __future__ import annotations

import json

import pytest

from minikv.bench import CASES, main

TINY = ["offload", "--conversations", "6", "--turns", "3", "--capacity-tokens", "512", "--tier-blocks", "4,256",
        "--engine-conversations", "4", "--engine-turns", "2", "--engine-pool-tokens", "256",
        "--model", "tiny-llama", "--device", "cpu", "--prompt-blocks", "3", "--repeats", "1"]  # fmt: skip


def test_json_has_both_caches_with_and_without_the_tier(capsys: pytest.CaptureFixture[str]) -> None:
    assert "offload" in CASES
    assert main([*TINY, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    h = report["hit_rate"]
    assert h["num_blocks"] == 32 and set(h["traces"]) == {"multi-turn-rr", "multi-turn"}
    for r in h["traces"].values():
        for cache in ("hash", "radix"):
            runs = [x for x in r["runs"] if x["cache"] == cache]
            assert [x["tier_blocks"] for x in runs] == [0, 4, 256]
            assert runs[0]["tier_hit_rate"] == 0 and runs[0]["stored"] == 0
            assert runs[-1]["hit_rate"] >= runs[0]["hit_rate"] and runs[-1]["loaded"] > 0
            for x in runs:
                assert x["pool_hit_rate"] + x["tier_hit_rate"] == pytest.approx(x["hit_rate"])
    rr = [x for x in h["traces"]["multi-turn-rr"]["runs"] if x["cache"] == "hash"]
    assert rr[-1]["hit_rate"] >= 2 * rr[0]["hit_rate"]  # round robin thrashes LRU: the tier saves it
    e = report["engine"]
    assert e["same_first_tokens"] and [x["tier_blocks"] for x in e["runs"]] == [0, 1024]
    assert e["runs"][1]["hit_rate"] >= e["runs"][0]["hit_rate"] and e["runs"][0]["tier_hit_rate"] == 0
    t = report["time_per_block"]
    assert t["prompt_blocks"] == 3 and set(t["ttft"]) == {"miss", "pool", "tier"}
    assert t["save_ms_per_block"] > 0 and t["load_ms_per_block"] > 0


def test_table_and_model_none(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY[:-8], "--model", "none", "--caches", "radix", "--traces", "multi-turn-rr"]) == 0
    out = capsys.readouterr().out
    assert "trace multi-turn-rr: 6 conversations x 3 turns" in out and "x no tier" in out
    assert "time per block" not in out and "hash" not in out


@pytest.mark.parametrize("bad,words", [
    (["--tier-blocks", "0"], "--tier-blocks must give sizes >= 1"),
    (["--tier-blocks", "a,b"], "comma-separated whole numbers"),
    (["--caches", "lru"], "unknown cache(s) 'lru'"),
    (["--traces", "few-shot"], "unknown trace(s) 'few-shot'"),
])
def test_bad_arguments_are_one_clear_error(capsys: pytest.CaptureFixture[str], bad: list[str], words: str) -> None:
    with pytest.raises(SystemExit) as e:
        main([*TINY, *bad])
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_a_pool_too_small_for_the_trace_says_how_big(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="too small for the trace"):
        main([*TINY, "--capacity-tokens", "32"])

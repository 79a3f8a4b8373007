"""``minikv bench schedule`` on a tiny model: every scenario's table and JSON have their fields and sane values."""

from __future__ import annotations

import json
import math

import pytest

from minikv.bench import schedule
from minikv.bench.online import Replay, percentile, summarize

TINY = ["--model", "tiny-llama", "--device", "cpu", "--no-progress", "--requests", "4", "--shared", "48",
        "--unique", "16", "--max-tokens", "3", "--rate", "inf"]


def run_json(capsys, *extra: str) -> dict:
    assert schedule.run([*TINY, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_throughput_json_has_every_config_and_sane_numbers(capsys):
    out = run_json(capsys, "--scenario", "throughput")
    assert out["requests"] == 4 and out["prompt_tokens"] == [64] * 4
    res = out["results"]
    assert set(res) == {"continuous", "waves", "transformers"}
    for label, r in res.items():
        assert r["output_tokens"] == 4 * 3, label  # ignore_eos: exactly max_tokens each
        assert r["tokens_per_s"] > 0 and r["speedup_vs_transformers"] > 0
        assert 0 <= r["ttft_p50_ms"] <= r["ttft_p99_ms"]
        assert 0 <= r["itl_p50_ms"] <= r["itl_p99_ms"]
        assert r["same_tokens_as_transformers"] == 4, label  # greedy fp32: the same tokens
    for label in ("continuous", "waves"):
        r = res[label]
        # 48 shared tokens = 3 full blocks, hit by all but the first request
        assert r["hit_tokens"] == 3 * 48 and r["hit_rate"] == pytest.approx(144 / 256)
        assert r["belady_hit_tokens"] == 144 and r["pct_of_belady"] == pytest.approx(100.0)
        assert r["preemptions"] == 0


def test_policy_scenario_compares_the_three_policies(capsys):
    out = run_json(capsys, "--scenario", "policy", "--requests", "8", "--groups", "2", "--num-blocks", "24",
                   "--no-transformers")
    res = out["results"]
    assert set(res) == {"fcfs", "lpm", "dfs-weight"}
    for r in res.values():
        assert 0.0 <= r["hit_rate"] < 1.0 and r["max_wait_ms"] >= 0
        assert 0 <= r["pct_of_belady"] and "pct_of_belady_own_order" in r
        assert "speedup_vs_transformers" not in r
    assert res["lpm"]["hit_tokens"] >= res["fcfs"]["hit_tokens"]


def test_chunked_scenario_table(capsys):
    assert schedule.run([*TINY, "--scenario", "chunked", "--long-requests", "1", "--long-prompt", "96",
                         "--chunk", "16", "--no-transformers"]) == 0
    text = capsys.readouterr().out
    assert "chunked off" in text and "chunked on" in text
    assert "TTFT p99 ms" in text and "ITL p99 ms" in text and "% Belady" in text


def test_bad_sizes_are_refused():
    with pytest.raises(SystemExit):
        schedule.parse(["--requests", "0"])
    with pytest.raises(SystemExit):
        schedule.parse(["--scenario", "nope"])


def test_summary_by_hand():
    r = Replay(start=0.0, arrivals=[0.0, 1.0], admitted=[0.0, 1.5], token_times=[[1.0, 2.0, 4.0], [2.0]],
               token_ids=[[1, 2, 3], [4]], prompt_tokens=[10, 10], cached_tokens=[0, 5])
    s = summarize(r)
    assert s["output_tokens"] == 4 and s["duration_s"] == 4.0 and s["tokens_per_s"] == 1.0
    assert s["ttft_p50_ms"] == pytest.approx(1000.0) and s["max_wait_ms"] == pytest.approx(500.0)
    assert s["itl_p50_ms"] == pytest.approx(1500.0) and s["hit_rate"] == 0.25
    assert math.isnan(percentile([], 50)) and percentile([3, 1, 2], 100) == 3


def test_listed_among_the_bench_cases(capsys):
    from minikv.bench import main

    assert main(["--help"]) == 0
    assert "schedule" in capsys.readouterr().out

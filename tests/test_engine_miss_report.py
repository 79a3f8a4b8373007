"""The engine's per-request MissReport (from each cache's explain_miss) under the eviction policies."""

from __future__ import annotations

import random

import pytest

from minikv import LLMEngine, SamplingParams
from minikv.prefix.report import MissReport


def prompts(seed: int, n: int, shared: int = 32) -> list[list[int]]:
    rng = random.Random(seed)
    head = [rng.randrange(3, 200) for _ in range(shared)]
    return [head + [rng.randrange(3, 200) for _ in range(rng.randrange(3, 12))] for _ in range(n)]


def run(eng: LLMEngine, batch: list[list[int]], tag: str) -> dict:
    sp = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    for i, p in enumerate(batch):
        eng.add_request(f"{tag}{i}", {"prompt_token_ids": p}, sp)
    misses = {}
    while eng.has_unfinished_requests():
        for out in eng.step():
            if out.miss is not None:
                misses[out.request_id] = (out.miss, out.num_cached_tokens)
    return misses


@pytest.mark.parametrize(("cache", "policy"), [("none", None), ("hash", "lru"), ("hash", "duel"),
                                               ("radix", "slru"), ("radix", "duel")])  # fmt: skip
def test_reports_sum_to_each_prompt_and_into_the_engine_stats(cache: str, policy: str | None) -> None:
    opts = {} if policy is None else {"prefix_cache_options": {"policy": policy}}
    eng = LLMEngine("tiny-llama", prefix_cache=cache, device="cpu", dtype="float32", num_blocks=12, block_size=8,
                    **opts)  # fmt: skip
    first, other = prompts(0, 3), prompts(1, 3)
    reports = {**run(eng, first, "a"), **run(eng, other, "b"), **run(eng, first, "c")}  # c: a's blocks were evicted
    lengths = {f"{t}{i}": len(p) for t, batch in (("a", first), ("b", other), ("c", first)) for i, p in enumerate(batch)}
    assert set(reports) == set(lengths)
    total = MissReport()
    for rid, (miss, cached) in reports.items():
        assert miss.total == lengths[rid] and miss.hit == cached
        total += miss
    assert eng.get_stats().miss == total
    if cache == "none":
        assert total == MissReport(never_seen=sum(lengths.values()))
    else:
        assert total.hit > 0 and total.evicted > 0 and total.never_seen > 0

"""Truncated block hashes: wrong hits appear at 16 bits, none at sha256, and verify turns them into misses."""

from __future__ import annotations

import pytest

from minikv.bench.collisions import mixed_trace
from minikv.errors import InvalidRequestError
from minikv.security.collisions import count_collisions, truncated_sha256


@pytest.fixture(scope="module")
def trace():
    return mixed_trace(300, 49152, seed=0)


def test_sha256_never_serves_another_prefix(trace):
    c = count_collisions(trace, 2048, 16)
    assert c.wrong_blocks == c.requests_hurt == c.detected == 0 and not c.verify
    assert c.hit_rate > 0.5


def test_16_bits_serve_wrong_blocks_and_verify_stops_them(trace):
    weak = count_collisions(trace, 2048, 16, bits=16, verify=False)
    assert weak.wrong_blocks > 0 and weak.wrong_tokens == 16 * weak.wrong_blocks
    assert weak.caught_at_insert + weak.silent == weak.requests_hurt
    checked = count_collisions(trace, 2048, 16, bits=16, verify=True)
    assert checked.wrong_blocks == 0 and checked.detected > 0
    strong = count_collisions(trace, 2048, 16)
    assert checked.hit_rate < strong.hit_rate  # verify's price: a collision costs a miss


def test_truncated_hash_widths():
    assert len(truncated_sha256(32)(b"x")) == 4
    with pytest.raises(InvalidRequestError):
        truncated_sha256(12)


def test_bench_cases_are_registered():
    from minikv.bench import CASES

    assert CASES["leak"][0] == "minikv.bench.leak" and CASES["collisions"][0] == "minikv.bench.collisions"


def test_a_hash_that_collides_inside_one_chain_never_holds_a_block_twice():
    """With every block hashing alike (the worst hash) and verify off, the engine serves wrong K/V but
    never holds one block twice, never fails a release, and gives every block back."""
    from minikv import LLM, SamplingParams

    llm = LLM("tiny-llama", prefix_cache="hash", num_blocks=64,
              prefix_cache_options={"hash_fn": lambda data: b"same", "verify": False})
    for start in (10, 40, 70):
        out = llm.generate({"prompt_token_ids": list(range(start, start + 70))}, SamplingParams(max_tokens=3))[0]
        assert len(out.token_ids) == 3
        assert out.num_cached_tokens <= 16  # the chain stops at its second block: the first one again
    stats = llm.cache_stats()
    assert stats.num_used == 0 and stats.collisions >= 2

"""Belady's offline optimum: hand-checked traces, the infinite-cache limit, and LRU below it."""

from __future__ import annotations

import pytest

from minikv.errors import InvalidRequestError
from minikv.prefix import BlockHashCache, RadixCache
from minikv.workloads import (
    belady_hit_tokens,
    belady_tree_hit_tokens,
    blocks_to_fit,
    capacity_blocks,
    ideal_hit_tokens,
    make_trace,
    multi_turn_trace,
    percent_of_optimum,
    replay,
)

BS = 2
A, B, C = [1, 1, 0], [2, 2, 0], [3, 3, 0]  # one full block and a partial one each: 2 blocks while running


@pytest.mark.parametrize("fn", [belady_hit_tokens, belady_tree_hit_tokens])
def test_hand_checked_trace_where_lru_is_strictly_worse(fn) -> None:  # noqa: ANN001
    # A pool of 3 blocks: while a request runs (2 blocks), one other cached block may stay.
    # At C, Belady drops B (never used again) and keeps A; LRU drops A, the oldest.
    trace = [A, B, C, A]
    assert fn(trace, 3, BS) == [0, 0, 0, 2]
    assert replay(BlockHashCache(3, BS), trace) == [0, 0, 0, 0]
    assert replay(RadixCache(3, BS), trace) == [0, 0, 0, 0]
    assert percent_of_optimum(replay(BlockHashCache(3, BS), trace), fn(trace, 3, BS)) == 0.0


def test_hits_follow_the_last_token_rule_and_whole_blocks() -> None:
    # [1, 2, 3, 4] twice: the second may hit only 1 of its 2 full blocks (the last token is computed).
    assert belady_hit_tokens([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4, 5]], 8, BS) == [0, 2, 4]
    # With room for only the running request, nothing survives beside it.
    assert belady_hit_tokens([[1, 2, 3, 4], [1, 2, 3, 4]], 2, BS) == [0, 2]
    assert belady_hit_tokens([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]], 3, BS) == [0, 4]


@pytest.mark.parametrize("kind", ["system", "multi-turn", "few-shot", "branching", "skewed"])
def test_a_cache_that_fits_everything_is_the_infinite_ideal(kind: str) -> None:
    trace = make_trace(kind, 40, vocab=50, seed=3)
    big = blocks_to_fit(trace, 16)
    ideal = ideal_hit_tokens(trace, block_size=16)
    assert belady_hit_tokens(trace, big, 16) == ideal
    assert belady_tree_hit_tokens(trace, big, 16) == ideal


def test_capacity_zero_hits_nothing_and_salts_never_share() -> None:
    trace = make_trace("system", 20, seed=1)
    assert sum(belady_hit_tokens(trace, 0, 16)) == 0
    same = [[5] * 40, [5] * 40]
    assert belady_hit_tokens(same, 10, 16) == [0, 32]
    assert belady_hit_tokens(same, 10, 16, salts=["a", "b"]) == [0, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_belady_beats_lru_on_a_tight_pool_and_tree_equals_block(seed: int) -> None:
    trace = multi_turn_trace(12, 4, user_len=(4, 12), reply_len=(8, 20), seed=seed)
    cap = 24
    opt = belady_hit_tokens(trace, cap, 4)
    assert belady_tree_hit_tokens(trace, cap, 4) == opt  # deepest-first ties: always a leaf
    lru = replay(BlockHashCache(cap, 4), trace)
    assert sum(lru) < sum(opt) <= sum(ideal_hit_tokens(trace, block_size=4))
    assert all(o <= i for o, i in zip(opt, ideal_hit_tokens(trace, block_size=4)))
    assert 0 < percent_of_optimum(lru, opt) < 100


def test_bad_arguments_and_helpers() -> None:
    with pytest.raises(InvalidRequestError, match="capacity"):
        belady_hit_tokens([[1, 2]], -1, 2)
    with pytest.raises(InvalidRequestError, match="block_size"):
        belady_hit_tokens([[1, 2]], 4, 0)
    with pytest.raises(InvalidRequestError, match="one salt per request"):
        belady_hit_tokens([[1, 2]], 4, 2, salts=["a", "b"])
    assert capacity_blocks(32 * 1024, 16) == 2048
    assert percent_of_optimum([0, 0], [0, 0]) == 100.0
    assert percent_of_optimum(3, 4) == 75.0

"""step_plan.preempt: preemption by recompute as data in, data out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minikv.engine.step_plan import RequestState, choose_victim, preempt


def test_victim_is_the_newest_reset_at_the_front_blocks_tail_first() -> None:
    running = [RequestState(0, 30, 31, (4, 5)), RequestState(1, 17, 18, (7, 2, 9))]
    waiting = [RequestState(2, 0, 9)]
    out = preempt(running, waiting)
    assert out.running == [running[0]]
    assert out.waiting == [RequestState(1, 0, 18, ()), waiting[0]]
    assert out.released == [9, 2, 7]
    assert running[1].block_ids == (7, 2, 9) and len(waiting) == 1  # the inputs are untouched


def test_empty_running_raises() -> None:
    with pytest.raises(ValueError, match="no running request"):
        preempt([], [RequestState(0, 0, 3)])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 50), st.lists(st.integers(0, 99), max_size=5, unique=True)), min_size=1, max_size=6),
       st.integers(0, 4))
def test_chained_preemptions_release_every_block_once(rows: list, num_waiting: int) -> None:
    running = [RequestState(i, n - 1, n, tuple(b)) for i, (n, b) in enumerate(rows)]
    waiting = [RequestState(100 + i, 0, 5) for i in range(num_waiting)]
    released: list[int] = []
    while running:
        victim = running[choose_victim(running)]
        running, waiting, freed = preempt(running, waiting)
        assert waiting[0].request_id == victim.request_id and freed == list(reversed(victim.block_ids))
        released += freed
    assert sorted(released) == sorted(b for _, blocks in rows for b in blocks)
    assert [w.request_id for w in waiting[: len(rows)]] == list(range(len(rows)))  # oldest first again
    assert all(w.num_computed_tokens == 0 and w.block_ids == () for w in waiting)

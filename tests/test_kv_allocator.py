"""BlockAllocator and BlockTable under random allocate / free / append traces.

Between the hypothesis state machine and the seeded random loop, well over
10,000 random operations run, each followed by the invariants:
no block owned twice, none leaked, free + used == total, every error leaves
the allocator untouched, and KVCacheFull hands out nothing.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from minikv.errors import BlockAllocatorError, KVCacheFull
from minikv.kv import BlockAllocator, BlockTable

# ---------------------------------------------------------------- plain cases


def test_fifo_order_allocate_from_head_free_to_tail() -> None:
    a = BlockAllocator(4)
    assert a.allocate(2) == [0, 1]
    a.free([1, 0])
    assert a.allocate(3) == [2, 3, 1]
    assert a.allocate() == [0]
    assert (a.num_free, a.num_used, a.num_blocks) == (0, 4, 4)


def test_allocate_zero_and_exact_fit() -> None:
    a = BlockAllocator(3)
    assert a.allocate(0) == []
    assert sorted(a.allocate(3)) == [0, 1, 2]
    assert a.num_free == 0


def test_kv_cache_full_allocates_nothing_and_says_what_to_do() -> None:
    a = BlockAllocator(8, block_size=16)
    a.allocate(5)
    with pytest.raises(KVCacheFull) as info:
        a.allocate(5)
    msg = str(info.value)
    assert "3 free blocks of 16 tokens" in msg and "5 are needed" in msg
    assert "num_blocks" in msg and "kv_cache_memory" in msg
    assert (a.num_free, a.num_used) == (3, 5)
    assert a.allocate(3) == [5, 6, 7]


@pytest.mark.parametrize(
    "bad",
    [
        [3],  # never handed out
        [0, 0],  # repeated in one call
        [8],  # out of range
        [-1],  # out of range
        [1, 2, 9],  # valid ids followed by a bad one: none may be freed
    ],
)
def test_bad_free_raises_and_frees_nothing(bad: list[int]) -> None:
    a = BlockAllocator(8)
    a.allocate(3)  # 0, 1, 2
    before = [a.is_allocated(b) for b in range(8)]
    with pytest.raises(BlockAllocatorError):
        a.free(bad)
    assert [a.is_allocated(b) for b in range(8)] == before
    assert a.num_used == 3


def test_double_free_raises() -> None:
    a = BlockAllocator(4)
    ids = a.allocate(2)
    a.free(ids)
    with pytest.raises(BlockAllocatorError, match="already free"):
        a.free([ids[0]])
    assert a.num_free == 4


def test_block_table_append_is_all_or_nothing() -> None:
    a = BlockAllocator(3, block_size=4)
    t = BlockTable(4)
    assert t.append_tokens(6, a) == [0, 1, 2, 3, 4, 5]  # blocks 0, 1
    with pytest.raises(KVCacheFull):
        t.append_tokens(7, a)  # needs 2 more blocks (13 tokens -> 4 blocks), only 1 free
    assert (t.blocks, t.num_tokens, a.num_free) == ([0, 1], 6, 1)
    assert t.append_tokens(6, a) == [6, 7, 8, 9, 10, 11]
    t.free(a)
    assert (t.blocks, t.num_tokens, a.num_free) == ([], 0, 3)
    assert a.allocate(3) == [2, 1, 0]  # freed tail first


# ------------------------------------------------------------- state machine

NUM_BLOCKS = 24
BLOCK_SIZE = 4


class AllocatorMachine(RuleBasedStateMachine):
    """Drives an allocator with raw allocations and block tables against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.alloc = BlockAllocator(NUM_BLOCKS, block_size=BLOCK_SIZE)
        self.groups: list[list[int]] = []  # raw allocate() results still held
        self.tables: list[BlockTable] = []
        self.live_slots: set[int] = set()

    def owned(self) -> list[int]:
        blocks = [b for g in self.groups for b in g]
        return blocks + [b for t in self.tables for b in t.blocks]

    def snapshot(self) -> tuple[int, list[bool]]:
        return self.alloc.num_free, [self.alloc.is_allocated(b) for b in range(NUM_BLOCKS)]

    @rule(n=st.integers(0, NUM_BLOCKS + 2))
    def allocate(self, n: int) -> None:
        if n <= self.alloc.num_free:
            ids = self.alloc.allocate(n)
            assert len(ids) == n and not set(ids) & set(self.owned())
            self.groups.append(ids)
        else:
            before = self.snapshot()
            with pytest.raises(KVCacheFull):
                self.alloc.allocate(n)
            assert self.snapshot() == before

    @precondition(lambda self: self.groups)
    @rule(data=st.data())
    def free_some(self, data: st.DataObject) -> None:
        g = self.groups[data.draw(st.integers(0, len(self.groups) - 1))]
        chosen = data.draw(st.lists(st.sampled_from(g), unique=True)) if g else []
        self.alloc.free(chosen)
        g[:] = [b for b in g if b not in chosen]

    @rule(data=st.data())
    def bad_free(self, data: st.DataObject) -> None:
        owned = self.owned()
        not_owned = [b for b in range(NUM_BLOCKS) if b not in owned]
        bad = data.draw(
            st.one_of(
                st.integers(NUM_BLOCKS, 10**6),
                st.integers(-(10**6), -1),
                st.sampled_from(not_owned) if not_owned else st.just(-5),
            )
        )
        good_groups = [g for g in self.groups if g]
        prefix = data.draw(st.sampled_from(good_groups)) if good_groups else []
        ids = list(prefix) + [bad]
        if owned and data.draw(st.booleans()):
            ids = [owned[0], owned[0]]  # same id twice in one call
        before = self.snapshot()
        with pytest.raises(BlockAllocatorError):
            self.alloc.free(ids)
        assert self.snapshot() == before

    @rule()
    def new_table(self) -> None:
        self.tables.append(BlockTable(BLOCK_SIZE))

    @precondition(lambda self: self.tables)
    @rule(data=st.data(), n_new=st.integers(0, 3 * BLOCK_SIZE + 1))
    def append(self, data: st.DataObject, n_new: int) -> None:
        t = self.tables[data.draw(st.integers(0, len(self.tables) - 1))]
        need = t.blocks_needed(n_new)
        old = (list(t.blocks), t.num_tokens)
        before = self.snapshot()
        if need > self.alloc.num_free:
            with pytest.raises(KVCacheFull):
                t.append_tokens(n_new, self.alloc)
            assert (t.blocks, t.num_tokens) == old and self.snapshot() == before
            return
        slots = t.append_tokens(n_new, self.alloc)
        assert len(t.blocks) == len(old[0]) + need == -(-t.num_tokens // BLOCK_SIZE)
        assert slots == [t.slot(p) for p in range(old[1], t.num_tokens)]
        assert len(set(slots)) == n_new and not set(slots) & self.live_slots
        assert all(s // BLOCK_SIZE in t.blocks for s in slots)
        self.live_slots |= set(slots)

    @precondition(lambda self: self.tables)
    @rule(data=st.data())
    def free_table(self, data: st.DataObject) -> None:
        t = self.tables.pop(data.draw(st.integers(0, len(self.tables) - 1)))
        self.live_slots -= {t.slot(p) for p in range(t.num_tokens)}
        t.free(self.alloc)
        assert t.blocks == [] and t.num_tokens == 0

    @invariant()
    def books_balance(self) -> None:
        owned = self.owned()
        assert len(owned) == len(set(owned)), "a block is owned twice"
        assert self.alloc.num_free + self.alloc.num_used == NUM_BLOCKS
        assert self.alloc.num_used == len(owned), "leaked or lost a block"
        assert [self.alloc.is_allocated(b) for b in range(NUM_BLOCKS)] == [
            b in set(owned) for b in range(NUM_BLOCKS)
        ]


AllocatorMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAllocatorMachine = AllocatorMachine.TestCase


# ------------------------------------------------------ seeded random traces


@pytest.mark.parametrize(("num_blocks", "block_size", "seed"), [(1, 1, 0), (16, 1, 1), (37, 16, 2), (64, 32, 3)])
def test_random_trace_against_model(num_blocks: int, block_size: int, seed: int) -> None:
    """3,000 random operations per case, checked after each one against a plain-set model."""
    rng = random.Random(seed)
    a = BlockAllocator(num_blocks, block_size=block_size)
    held: list[list[int]] = []  # raw allocations
    tables: list[BlockTable] = []

    for _ in range(3000):
        op = rng.random()
        before = [a.is_allocated(b) for b in range(num_blocks)]
        if op < 0.25:
            n = rng.randint(0, max(2, num_blocks // 3))
            if n <= a.num_free:
                ids = a.allocate(n)
                assert not any(before[b] for b in ids), "handed out a block that was in use"
                held.append(ids)
            else:
                with pytest.raises(KVCacheFull):
                    a.allocate(n)
        elif op < 0.45 and held:
            g = held.pop(rng.randrange(len(held)))
            rng.shuffle(g)
            a.free(g)
        elif op < 0.55:
            free_ids = [b for b in range(num_blocks) if not before[b]]
            bad = rng.choice(free_ids) if free_ids and rng.random() < 0.7 else num_blocks + rng.randint(0, 5)
            valid = held[0] if held else []
            with pytest.raises(BlockAllocatorError):
                a.free([*valid, bad])
            assert [a.is_allocated(b) for b in range(num_blocks)] == before
        elif op < 0.65:
            tables.append(BlockTable(block_size))
        elif op < 0.9 and tables:
            t = rng.choice(tables)
            n_new = rng.choice([0, 1, 1, 1, block_size - 1, block_size, block_size + 1, rng.randint(0, 3 * block_size)])
            old_blocks, old_tokens = list(t.blocks), t.num_tokens
            try:
                slots = t.append_tokens(max(n_new, 0), a)
            except KVCacheFull:
                assert (t.blocks, t.num_tokens) == (old_blocks, old_tokens)
                assert [a.is_allocated(b) for b in range(num_blocks)] == before
            else:
                assert t.blocks[: len(old_blocks)] == old_blocks
                assert len(slots) == max(n_new, 0)
                assert len(t.blocks) == -(-t.num_tokens // block_size)
        elif tables:
            tables.pop(rng.randrange(len(tables))).free(a)

        owned = [b for g in held for b in g] + [b for t in tables for b in t.blocks]
        assert len(owned) == len(set(owned)), "a block is owned twice"
        assert a.num_free + a.num_used == num_blocks
        assert a.num_used == len(owned), "leaked or lost a block"

    for g in held:
        a.free(g)
    for t in tables:
        t.free(a)
    assert a.num_free == num_blocks

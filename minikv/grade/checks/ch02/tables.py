"""Exercises 2.2 slot mapping and 2.3 block table growth. 2.3 runs on minikv's allocator, so its grade
depends on 2.3's code alone."""

from __future__ import annotations

import operator
from typing import Any, Callable

from hypothesis import strategies as st

from minikv.errors import KVCacheFull
from minikv.grade.compare import CheckFailed, call, forall, looks_like, one_line, short
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.grade.trace import Trace
from minikv.kv.allocator import BlockAllocator as RefAllocator
from minikv.kv.block_table import BlockTable as RefBlockTable
from minikv.kv.block_table import cdiv
from minikv.kv.block_table import slot_mapping as ref_slot_mapping

MODULE = "ch02_paged_kv"

# ---- 2.2 slot mapping -------------------------------------------------------------------------------

ex22 = register(Exercise(
    "2.2", "slot mapping", MODULE, ("slot_mapping",),
    hint="token pos is in block block_table[pos // block_size] at offset pos % block_size: "
         "slot = block_table[pos // block_size] * block_size + pos % block_size; "
         "raise IndexError when pos < 0 or pos // block_size >= len(block_table)",
))


def _slot_guess(table: list[int], positions: list[int], bs: int, got: list[int]) -> str:
    """Name a known mistake that ``got`` matches, if any."""
    guesses: list[tuple[str, Callable[[int], int]]] = [
        ("the block index and the offset are swapped (block_table[pos % block_size], offset pos // block_size)",
         lambda p: table[p % bs] * bs + p // bs if p % bs < len(table) else -10**9),
        ("the offset is one too far (pos % block_size + 1)", lambda p: table[p // bs] * bs + p % bs + 1),
        ("the block id is not multiplied by block_size", lambda p: table[p // bs] + p % bs),
        ("the block table is ignored (slot = position)", lambda p: p),
        ("the block index is not multiplied (block_table[pos // block_size] + pos)", lambda p: table[p // bs] + p),
    ]
    return looks_like(got, [(text, lambda fn=fn: [fn(p) for p in positions]) for text, fn in guesses])


def _expect_slots(fn: Callable[..., Any], table: list[int], positions: list[int], bs: int) -> None:
    desc = f"slot_mapping({short(table, 12)}, positions={short(positions, 12)}, block_size={bs})"
    want = ref_slot_mapping(table, positions, bs)
    got = call(fn, list(table), list(positions), bs, context=desc)
    try:
        got_list = [operator.index(s) for s in got]
    except TypeError:
        raise CheckFailed(one_line(f"{desc} returned {got!r}; return a list of int slots")) from None
    if len(got_list) != len(want):
        raise CheckFailed(one_line(f"{desc} returned {len(got_list)} slots, expected {len(want)} (one per position)"))
    bad = next((i for i, (g, w) in enumerate(zip(got_list, want)) if g != w), None)
    if bad is not None:
        p = positions[bad]
        raise CheckFailed(one_line(
            f"{desc}: position {p} (block {p // bs} of the table = block {table[p // bs]}, offset {p % bs}) "
            f"got slot {got_list[bad]}, expected {want[bad]}{_slot_guess(table, positions, bs, got_list)}"))


@ex22.check("the docstring's example: blocks [7, 2] of 4 tokens")
def _example(learner: Learner) -> None:
    _expect_slots(learner.get("slot_mapping"), [7, 2], [0, 1, 4, 5], 4)


@ex22.check("scattered blocks, block sizes 1, 3 and 16")
def _scattered(learner: Learner) -> None:
    fn = learner.get("slot_mapping")
    for table, positions, bs in (([5, 0, 3], [0, 1, 2], 1), ([4, 9, 1, 6], list(range(12)), 3),
                                 ([11, 2, 40], [0, 7, 20, 33, 47, 5], 16)):
        _expect_slots(fn, table, positions, bs)


@ex22.check("positions on block boundaries (block sizes 16 and 32)")
def _boundaries(learner: Learner) -> None:
    fn = learner.get("slot_mapping")
    _expect_slots(fn, [3, 8, 1], [15, 16, 31, 32, 47, 0], 16)
    _expect_slots(fn, [2, 0], [31, 32, 63, 0, 1], 32)


@ex22.check("IndexError for a negative position or one past the table")
def _outside(learner: Learner) -> None:
    fn = learner.get("slot_mapping")
    for table, positions, bs in (([4, 1], [8], 4), ([4, 1], [0, 3, 9], 4), ([4, 1], [-1], 4),
                                 ([6], [16], 16), ([], [0], 16), ([2, 3], [-5], 4)):
        bad = next(p for p in positions if p < 0 or p // bs >= len(table))
        why = ("is negative (a negative index reads the table from its end)" if bad < 0 else
               f"is past the table's {len(table) * bs} slots")
        trace = Trace(f"block table {table}, block_size={bs}")
        trace.step(f"slot_mapping(positions={positions})")
        trace.mirror(lambda: ref_slot_mapping(table, positions, bs), lambda: fn(list(table), list(positions), bs),
                     IndexError, lambda: f"position {bad} {why}")


@ex22.check("random tables and positions vs minikv's slot_mapping")
def _random_slots(learner: Learner) -> None:
    fn = learner.get("slot_mapping")

    @forall(st.sampled_from([1, 2, 3, 4, 16, 32]), st.lists(st.integers(0, 300), min_size=1, max_size=8, unique=True),
            st.lists(st.integers(0, 10**6), max_size=20), max_examples=60)
    def prop(bs: int, table: list[int], picks: list[int]) -> None:
        positions = [p % (len(table) * bs) for p in picks]
        _expect_slots(fn, table, positions, bs)

    prop()


# ---- 2.3 block table growth --------------------------------------------------------------------------

ex23 = register(Exercise(
    "2.3", "block table growth", MODULE, ("BlockTable",),
    hint="blocks needed = ceil((num_tokens + n_new) / block_size) - len(blocks), never below 0; "
         "in append_tokens allocate first (it may raise KVCacheFull), only then extend blocks and num_tokens, "
         "and return the slots of positions num_tokens .. num_tokens + n_new - 1",
))


def _new_table(cls: type, bs: int, blocks: list[int], num_tokens: int) -> tuple[Any, str]:
    desc = f"BlockTable(block_size={bs}, blocks={short(blocks, 12)}, num_tokens={num_tokens})"
    return call(cls, bs, list(blocks), num_tokens, context=desc), desc


def _expect_needed(cls: type, bs: int, blocks: list[int], num_tokens: int, n_new: int) -> None:
    table, desc = _new_table(cls, bs, blocks, num_tokens)
    want = RefBlockTable(bs, blocks, num_tokens).blocks_needed(n_new)
    got = call(table.blocks_needed, n_new, context=f"{desc}.blocks_needed({n_new})")
    if got != want:
        room, total = len(blocks) * bs - num_tokens, num_tokens + n_new
        why = ""
        if total % bs == 0 and got == want + 1:
            why = f" ({total} tokens end exactly on a block boundary: use ceiling division, not floor division + 1)"
        elif room and got == cdiv(n_new, bs):
            why = f" (the table already has {room} free slot{'s' * (room != 1)}: fill those first)"
        need = cdiv(total, bs)
        raise CheckFailed(one_line(f"{desc}.blocks_needed({n_new}) returned {got!r}, expected {want} "
                                   f"({total} tokens need {need} block{'s' * (need != 1)} of {bs}, "
                                   f"{len(blocks)} owned){why}"))


def _table_state(table: Any, desc: str) -> tuple[list[int], int]:
    blocks, num_tokens = getattr(table, "blocks", None), getattr(table, "num_tokens", None)
    if not isinstance(blocks, list) or not isinstance(num_tokens, int):
        raise CheckFailed(one_line(f"{desc} must keep `blocks` (a list) and `num_tokens` (an int); "
                                   f"got {type(blocks).__name__} and {type(num_tokens).__name__}"))
    return list(blocks), num_tokens


def _replay_tables(cls: type, bs: int, num_blocks: int, steps: list[tuple[int, int]], num_seqs: int = 1) -> None:
    """Append ``(sequence, n_new)`` steps to the learner's and minikv's tables, each over its own minikv allocator."""
    mine_alloc, ref_alloc = RefAllocator(num_blocks), RefAllocator(num_blocks)
    mine = [_new_table(cls, bs, [], 0)[0] for _ in range(num_seqs)]
    ref = [RefBlockTable(bs) for _ in range(num_seqs)]
    trace = Trace(f"{f'{num_seqs} x ' if num_seqs > 1 else ''}BlockTable(block_size={bs}) over a pool of {num_blocks} "
                  "blocks", keep=5)
    for seq, n in steps:
        trace.step(f"{'sequence %d: ' % seq if num_seqs > 1 else ''}append_tokens({n})")
        before, free_before = _table_state(mine[seq], "the table"), mine_alloc.num_free
        pair = trace.mirror(lambda: ref[seq].append_tokens(n, ref_alloc), lambda: mine[seq].append_tokens(n, mine_alloc),
                            KVCacheFull, lambda: f"it needs {ref[seq].blocks_needed(n)} new blocks, {ref_alloc.num_free} are free")
        blocks, num_tokens = _table_state(mine[seq], "the table")
        if pair is None:
            if (blocks, num_tokens) != before:
                trace.fail(f"after KVCacheFull the table changed: blocks {short(before[0], 12)} -> {short(blocks, 12)}, "
                           f"num_tokens {before[1]} -> {num_tokens}; allocate before changing anything")
            trace.expect(mine_alloc.num_free, ref_alloc.num_free, "the allocator's num_free after a KVCacheFull")
            trace.amend(" -> full")
            continue
        want, got = pair
        if mine_alloc.num_free != ref_alloc.num_free:
            trace.fail(f"append_tokens({n}) took {free_before - mine_alloc.num_free} new block(s) from the allocator, "
                       f"expected {len(ref[seq].blocks) - len(before[0])} (the table held {before[1]} tokens in "
                       f"{len(before[0])} blocks)")
        trace.expect(blocks, ref[seq].blocks, "table.blocks")
        trace.expect(num_tokens, ref[seq].num_tokens, "table.num_tokens")
        try:
            got_list = [operator.index(s) for s in got]
        except TypeError:
            trace.fail(f"append_tokens({n}) returned {got!r}; return the new tokens' slots as a list of ints")
        if got_list != want:
            hint = ""
            if len(got_list) == len(want) and got_list == ref_slot_mapping(blocks, range(n), bs):
                hint = " (those are the slots of positions 0.., not of the new tokens' positions)"
            trace.fail(f"append_tokens({n}) returned slots {short(got_list, 12)}, expected {short(want, 12)} "
                       f"(positions {before[1]}..{before[1] + n - 1}){hint}")


@ex23.check("blocks_needed: free slots first, block boundaries")
def _needed(learner: Learner) -> None:
    cls = learner.get("BlockTable")
    for bs, blocks, num_tokens, n_new in (
        (4, [9], 3, 0), (4, [9], 2, 1), (4, [9], 3, 1), (4, [9], 3, 2), (4, [9], 3, 5), (4, [9], 3, 6),
        (16, [], 0, 0), (16, [], 0, 1), (16, [], 0, 16), (16, [], 0, 17), (16, [2], 16, 1),
        (4, [1, 2, 3], 5, 7), (4, [1, 2, 3], 5, 8), (1, [4, 5], 2, 3), (32, [0], 31, 1), (32, [0], 31, 2),
    ):
        _expect_needed(cls, bs, blocks, num_tokens, n_new)


@ex23.check("append_tokens: a prefill, then one token per decode step")
def _prefill_decode(learner: Learner) -> None:
    cls = learner.get("BlockTable")
    _replay_tables(cls, 4, 10, [(0, 6)] + [(0, 1)] * 7)
    _replay_tables(cls, 16, 6, [(0, 16), (0, 1), (0, 15), (0, 1)])


@ex23.check("KVCacheFull leaves the table as it was")
def _full_table(learner: Learner) -> None:
    cls = learner.get("BlockTable")
    _replay_tables(cls, 4, 3, [(0, 5), (0, 8), (0, 3), (0, 4), (0, 1)])
    _replay_tables(cls, 2, 3, [(0, 3), (1, 2), (0, 2), (1, 1), (1, 1)], num_seqs=2)


@ex23.check("random traces of several sequences vs minikv's BlockTable")
def _random_tables(learner: Learner) -> None:
    cls = learner.get("BlockTable")

    @forall(st.sampled_from([1, 2, 3, 4, 16, 32]), st.integers(1, 12), st.integers(1, 3),
            st.lists(st.tuples(st.integers(0, 2), st.sampled_from([1, 1, 1, 2, 5, 16, 33])), min_size=1, max_size=16),
            max_examples=50)
    def prop(bs: int, num_blocks: int, num_seqs: int, steps: list[tuple[int, int]]) -> None:
        _replay_tables(cls, bs, num_blocks, [(s % num_seqs, n) for s, n in steps], num_seqs)

    prop()

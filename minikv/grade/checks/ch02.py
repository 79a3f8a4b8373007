"""Chapter 02 (paged KV): exercises 2.1 block allocator, 2.2 slot mapping, 2.3 block table growth, 2.4 paged decode attention.

References: :class:`minikv.kv.allocator.BlockAllocator`, :func:`minikv.kv.block_table.slot_mapping`,
:class:`minikv.kv.block_table.BlockTable`, :func:`minikv.attention.torch_ref.paged_decode_attention`.

2.1 is checked differentially: random traces of allocate / free (valid and
invalid) run on the learner's allocator and on minikv's side by side, with
the invariants a pool lives by (no block handed out twice, none leaked,
free + used = total). 2.3 runs on minikv's allocator, so its grade depends on
2.3's code alone. 2.4's final check plugs the learner's function into
``LLM("tiny-llama", paged_decode_attention=...)`` (CPU, blocks of 4 tokens) and
compares greedy tokens with the engine's own paged attention.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable

import torch
from hypothesis import strategies as st

from minikv.attention.torch_ref import paged_decode_attention as ref_paged_decode_attention
from minikv.errors import BlockAllocatorError, KVCacheFull
from minikv.grade.compare import CheckFailed, call, expect_equal, expect_tensor, forall, one_line
from minikv.grade.memo import shared
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.kv.allocator import BlockAllocator as RefAllocator
from minikv.kv.block_table import BlockTable as RefBlockTable
from minikv.kv.block_table import cdiv
from minikv.kv.block_table import slot_mapping as ref_slot_mapping

MODULE = "ch02_paged_kv"
PROMPTS = ("Paged blocks", "hello hello hello hello", "a block table maps positions to slots", "0123456789")
MAX_TOKENS = 16
ENGINE_BLOCK_SIZE = 4


def _short(xs: list[Any], limit: int = 12) -> str:
    return repr(xs) if len(xs) <= limit else repr(xs[:limit])[:-1] + ", ...]"


# ---- 2.1 block allocator ---------------------------------------------------------------------------

ex21 = register(Exercise(
    "2.1", "block allocator", MODULE, ("BlockAllocator",),
    hint="keep a list of free ids and a used flag per block; allocate checks the count before taking any block; "
         "free checks every id (in 0..num_blocks-1, currently used, not repeated) before changing anything",
))


class _AllocatorTwin:
    """The learner's allocator and minikv's, driven together; every step is checked against a model of the pool.

    The model is the set of ids the learner's allocator has handed out and not taken back. Ids handed
    out by the two allocators at the same call are paired, so a free on one maps to the same free on the other.
    """

    def __init__(self, cls: type, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.desc = f"BlockAllocator({num_blocks})"
        self.mine = call(cls, num_blocks, context=self.desc)
        self.ref = RefAllocator(num_blocks)
        self.used: set[int] = set()  # the learner's ids, currently handed out
        self.pair: dict[int, int] = {}  # learner id -> minikv id, for ids currently handed out
        self.done: list[str] = []

    @property
    def where(self) -> str:
        if not self.done:
            return f"on a new {self.desc}"
        if len(self.done) <= 4:
            return f"on {self.desc} after {', '.join(self.done)}"
        return f"on {self.desc} after {len(self.done)} calls, the last {', '.join(self.done[-4:])}"

    def num_free(self, what: str) -> None:
        got = call(lambda: self.mine.num_free, context=f"num_free {self.where}")
        want = self.num_blocks - len(self.used)
        assert want == self.ref.num_free, "grader bug: minikv's allocator disagrees with the model"
        if callable(got):
            raise CheckFailed(one_line(f"num_free is a method; keep it a @property (as in the stub), so that "
                                       f"allocator.num_free is the int {want} {self.where}"))
        if isinstance(got, bool) or not isinstance(got, int):
            raise CheckFailed(one_line(f"num_free is {got!r} ({type(got).__name__}), expected the int {want} {self.where}"))
        if got != want:
            extra = ""
            if what.startswith("allocate") and "KVCacheFull" in what:
                extra = " (a failed allocate must hand out nothing)"
            elif what.startswith("free") and "BlockAllocatorError" in what:
                extra = " (a failed free must free nothing)"
            raise CheckFailed(one_line(f"num_free is {got}, expected {want} ({len(self.used)} of {self.num_blocks} "
                                       f"blocks in use) right after {what}{extra}, {self.where}"))

    def allocate(self, n: int) -> list[int] | None:
        call_text = f"allocate({n})"
        try:
            want = self.ref.allocate(n)
        except KVCacheFull:
            want = None
        if want is None:
            try:
                got = self.mine.allocate(n)
            except KVCacheFull:
                self.done.append(call_text + " -> KVCacheFull")
                self.num_free(call_text + " raised KVCacheFull")
                return None
            except NotImplementedError:
                raise
            except Exception as exc:
                raise CheckFailed(one_line(f"{call_text} with {self.num_blocks - len(self.used)} blocks free raised "
                                           f"{type(exc).__name__} instead of KVCacheFull {self.where}: {exc}")) from exc
            raise CheckFailed(one_line(f"{call_text} returned {_short(list(got) if isinstance(got, (list, tuple)) else got)} "
                                       f"but only {self.num_blocks - len(self.used)} blocks are free: raise KVCacheFull "
                                       f"{self.where}"))
        got = call(self.mine.allocate, n, context=f"{call_text} {self.where}")
        if not isinstance(got, (list, tuple)):
            raise CheckFailed(one_line(f"{call_text} returned {type(got).__name__}, expected a list of {n} block ids {self.where}"))
        got = list(got)
        try:
            ids = [operator.index(b) for b in got]
        except TypeError:
            raise CheckFailed(one_line(f"{call_text} returned {_short(got)}: block ids must be ints {self.where}")) from None
        if len(ids) != n:
            raise CheckFailed(one_line(f"{call_text} returned {len(ids)} block ids, expected {n} {self.where}"))
        for b in ids:
            if not 0 <= b < self.num_blocks:
                raise CheckFailed(one_line(f"{call_text} handed out block {b}, which is outside 0..{self.num_blocks - 1}, {self.where}"))
        if len(set(ids)) != n:
            twice = next(b for b in ids if ids.count(b) > 1)
            raise CheckFailed(one_line(f"{call_text} returned {_short(ids)}: block {twice} twice {self.where}"))
        taken = sorted(set(ids) & self.used)
        if taken:
            raise CheckFailed(one_line(f"{call_text} handed out block {taken[0]}, which is still in use "
                                       f"(handed out earlier and never freed) {self.where}"))
        self.used |= set(ids)
        self.pair.update(zip(ids, want))
        self.done.append(f"{call_text} -> {_short(ids, 4)}")
        self.num_free(f"{call_text}")
        return ids

    def free(self, ids: list[int], as_generator: bool = False) -> bool:
        """Free ``ids`` on both; True if it was a valid free."""
        call_text = f"free({ids!r})"
        valid = all(0 <= b < self.num_blocks and b in self.used for b in ids) and len(set(ids)) == len(ids)
        far = self.num_blocks + 10**6  # a learner id with no minikv twin maps to a bad id there too
        mapped = [self.pair.get(b, far) if b in self.used else (b if not 0 <= b < self.num_blocks else far) for b in ids]
        try:
            self.ref.free(mapped)
            ref_ok = True
        except BlockAllocatorError:
            ref_ok = False
        assert ref_ok == valid, f"grader bug: minikv's allocator says {ref_ok} for {call_text}, the model {valid}"
        arg = (b for b in ids) if as_generator else list(ids)
        if valid:
            call(self.mine.free, arg, context=f"{call_text} {self.where}")
            self.used -= set(ids)
            for b in ids:
                self.pair.pop(b)
            self.done.append(call_text)
            try:
                self.num_free(call_text + (" (given as a generator)" if as_generator else ""))
            except CheckFailed as exc:
                if as_generator:
                    raise CheckFailed(str(exc) + "; read block_ids into a list once: a generator can be iterated only once") from None
                raise
            return True
        outside = [b for b in ids if not 0 <= b < self.num_blocks]
        why = (f"names block {outside[0]}, outside the pool (0..{self.num_blocks - 1})" if outside else
               "repeats a block" if len(set(ids)) != len(ids) else "frees a block that is not in use (double free?)")
        try:
            self.mine.free(arg)
        except BlockAllocatorError:
            pass
        except NotImplementedError:
            raise
        except Exception as exc:
            raise CheckFailed(one_line(f"{call_text} {why}, and raised {type(exc).__name__} instead of "
                                       f"BlockAllocatorError {self.where}: {exc}")) from exc
        else:
            raise CheckFailed(one_line(f"{call_text} {why} but did not raise BlockAllocatorError {self.where}"))
        self.done.append(call_text + " -> BlockAllocatorError")
        self.num_free(call_text + " raised BlockAllocatorError")
        return False

    def drain(self) -> None:
        """Free everything; then the whole pool must be free and allocatable again (nothing leaked)."""
        if self.used:
            self.free(sorted(self.used))
        ids = self.allocate(self.num_blocks)
        if ids is None or sorted(ids) != list(range(self.num_blocks)):
            raise CheckFailed(one_line(f"with every block freed, allocate({self.num_blocks}) did not hand out "
                                       f"each block once {self.where}"))
        self.free(ids)


@ex21.check("allocate hands out distinct blocks; num_free counts them")
def _allocate(learner: Learner) -> None:
    twin = _AllocatorTwin(learner.get("BlockAllocator"), 8)
    twin.num_free("BlockAllocator(8)")
    twin.allocate(3)
    twin.allocate(0)
    twin.allocate(5)
    twin.allocate(0)


@ex21.check("KVCacheFull when too few blocks are free, handing out nothing")
def _full(learner: Learner) -> None:
    twin = _AllocatorTwin(learner.get("BlockAllocator"), 4)
    twin.allocate(3)
    twin.allocate(2)
    twin.allocate(1)
    twin.allocate(1)
    empty = _AllocatorTwin(learner.get("BlockAllocator"), 0)
    empty.allocate(1)


@ex21.check("freed blocks can be handed out again (free takes any iterable)")
def _reuse(learner: Learner) -> None:
    twin = _AllocatorTwin(learner.get("BlockAllocator"), 6)
    ids = twin.allocate(6) or []
    twin.free([ids[4], ids[1]])
    twin.free([ids[0]], as_generator=True)
    again = twin.allocate(3) or []
    if sorted(again) != sorted([ids[4], ids[1], ids[0]]):
        raise AssertionError("grader bug: the twin should have caught this")
    twin.drain()


@ex21.check("double free, foreign and repeated ids raise BlockAllocatorError, freeing nothing")
def _bad_free(learner: Learner) -> None:
    cls = learner.get("BlockAllocator")
    twin = _AllocatorTwin(cls, 5)
    ids = twin.allocate(3) or []
    never = next(b for b in range(5) if b not in ids)
    twin.free([ids[0]])
    twin.free([ids[0]])  # double free
    twin.free([never])  # never handed out
    twin.free([5])  # past the pool
    twin.free([ids[1], ids[1]])  # repeated in one call
    twin.free([ids[1], ids[0]])  # one good, one already free: nothing may be freed
    twin.free([ids[2], 99])
    twin.drain()
    full = _AllocatorTwin(cls, 3)
    full.allocate(3)
    full.free([-1])  # negative: not "the last block", even when the last block is in use
    full.free([-3, 3])
    full.drain()


@ex21.check("random allocate/free traces vs minikv's BlockAllocator (no block twice, none leaked)")
def _random_traces(learner: Learner) -> None:
    cls = learner.get("BlockAllocator")
    ops = st.lists(st.tuples(st.sampled_from(["alloc", "alloc", "free", "free", "double", "foreign", "mixed"]),
                             st.integers(0, 7), st.integers(0, 2**16)), min_size=1, max_size=25)

    @forall(st.integers(0, 12), ops, max_examples=60)
    def prop(num_blocks: int, trace: list[tuple[str, int, int]]) -> None:
        twin = _AllocatorTwin(cls, num_blocks)
        freed: list[int] = []
        for kind, n, r in trace:
            used = sorted(twin.used)
            if kind == "alloc" or (kind == "free" and not used):
                twin.allocate(n)
            elif kind == "free":
                chosen = [used[(r >> i) % len(used)] for i in range(1 + n % 3)]
                chosen = list(dict.fromkeys(chosen))
                twin.free(chosen)
                freed += chosen
            elif kind == "double" and freed:
                b = freed[r % len(freed)]
                if b not in twin.used:
                    twin.free([b])
            elif kind == "foreign":
                twin.free([[num_blocks, num_blocks + r % 5, -1 - r % 3][n % 3]])
            elif kind == "mixed" and used:
                bad = [b for b in range(num_blocks) if b not in twin.used] or [num_blocks]
                twin.free([used[r % len(used)], bad[r % len(bad)]])
        twin.drain()

    prop()


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
    for text, fn in guesses:
        try:
            if [fn(p) for p in positions] == got:
                return f"; looks like {text}"
        except Exception:  # noqa: BLE001 - a diagnosis is best effort
            continue
    return ""


def _expect_slots(fn: Callable[..., Any], table: list[int], positions: list[int], bs: int) -> None:
    desc = f"slot_mapping({_short(table)}, positions={_short(positions)}, block_size={bs})"
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
    _expect_slots(fn, [5, 0, 3], [0, 1, 2], 1)
    _expect_slots(fn, [4, 9, 1, 6], list(range(12)), 3)
    _expect_slots(fn, [11, 2, 40], [0, 7, 20, 33, 47, 5], 16)


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
        desc = f"slot_mapping({table}, positions={positions}, block_size={bs})"
        try:
            got = fn(list(table), list(positions), bs)
        except IndexError:
            continue
        except NotImplementedError:
            raise
        except Exception as exc:
            raise CheckFailed(one_line(f"{desc} raised {type(exc).__name__} instead of IndexError: {exc}")) from exc
        bad = next(p for p in positions if p < 0 or p // bs >= len(table))
        why = "is negative (a negative index reads the table from its end)" if bad < 0 else \
              f"is past the table's {len(table) * bs} slots"
        raise CheckFailed(one_line(f"{desc} returned {got!r}; position {bad} {why}: raise IndexError"))


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
    desc = f"BlockTable(block_size={bs}, blocks={_short(blocks)}, num_tokens={num_tokens})"
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
    done: list[str] = []
    for seq, n in steps:
        label = f"sequence {seq}: " if num_seqs > 1 else ""
        step = f"append_tokens({n}) ({label}block_size={bs}, a pool of {num_blocks} blocks; earlier appends: {', '.join(done[-5:]) or 'none'})"
        before = _table_state(mine[seq], "the table")
        used_before = mine_alloc.num_free
        try:
            want = ref[seq].append_tokens(n, ref_alloc)
        except KVCacheFull:
            want = None
        if want is None:
            try:
                mine[seq].append_tokens(n, mine_alloc)
            except KVCacheFull:
                pass
            except NotImplementedError:
                raise
            except Exception as exc:
                raise CheckFailed(one_line(f"{step} raised {type(exc).__name__} instead of letting KVCacheFull through: {exc}")) from exc
            else:
                raise CheckFailed(one_line(f"{step} needs {ref[seq].blocks_needed(n)} new blocks but only "
                                           f"{ref_alloc.num_free} are free, and KVCacheFull was not raised"))
            after = _table_state(mine[seq], "the table")
            if after != before:
                raise CheckFailed(one_line(f"after KVCacheFull the table changed: blocks {_short(before[0])} -> "
                                           f"{_short(after[0])}, num_tokens {before[1]} -> {after[1]}, at {step}; "
                                           f"allocate before changing anything"))
            expect_equal(mine_alloc.num_free, ref_alloc.num_free, "the allocator's num_free", f"after a KVCacheFull at {step}")
            done.append(f"{label}{n} -> full")
            continue
        got = call(mine[seq].append_tokens, n, mine_alloc, context=step)
        blocks, num_tokens = _table_state(mine[seq], "the table")
        if mine_alloc.num_free != ref_alloc.num_free:
            took, expected = used_before - mine_alloc.num_free, len(ref[seq].blocks) - len(before[0])
            raise CheckFailed(one_line(f"{step} took {took} new block(s) from the allocator, expected {expected} "
                                       f"(the table held {before[1]} tokens in {len(before[0])} blocks)"))
        expect_equal(blocks, ref[seq].blocks, "table.blocks", f"after {step}")
        expect_equal(num_tokens, ref[seq].num_tokens, "table.num_tokens", f"after {step}")
        try:
            got_list = [operator.index(s) for s in got]
        except TypeError:
            raise CheckFailed(one_line(f"{step} returned {got!r}; return the new tokens' slots as a list of ints")) from None
        if got_list != want:
            hint = ""
            if len(got_list) == len(want) and got_list == ref_slot_mapping(blocks, range(n), bs):
                hint = " (those are the slots of positions 0.., not of the new tokens' positions)"
            raise CheckFailed(one_line(f"{step} returned slots {_short(got_list)}, expected {_short(want)} "
                                       f"(positions {before[1]}..{before[1] + n - 1}){hint}"))
        done.append(f"{label}{n}")


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


# ---- 2.4 paged decode attention ----------------------------------------------------------------------

ex24 = register(Exercise(
    "2.4", "paged decode attention", MODULE, ("paged_decode_attention",),
    hint="for each sequence b take its first ceil(context_lens[b] / block_size) blocks from block_tables[b], "
         "k_cache[blocks] -> [n_blocks, block_size, Hkv, D], flatten to tokens and keep the first context_lens[b]; "
         "query head h reads KV head h // (Hq // Hkv); softmax(scale * K @ q) @ V",
))

OUT_DIMS = ("sequence", "head", "dim")


def _paged_case(lens: list[int], bs: int, kv_heads: int, group: int, dim: int, seed: int,
                pad: int = -1, spare: int = 3) -> tuple[torch.Tensor, ...]:
    """q, k_cache, v_cache, block_tables, context_lens: sequences in shuffled blocks, junk everywhere else."""
    gen = torch.Generator().manual_seed(seed)
    need = [cdiv(n, bs) for n in lens]
    num_blocks = sum(need) + spare
    order = torch.randperm(num_blocks, generator=gen).tolist()
    tables, at = [], 0
    for k in need:
        tables.append(order[at:at + k])
        at += k
    width = max(need) + 1
    pad_value = num_blocks - 1 if pad == "last" else pad
    block_tables = torch.full((len(lens), width), pad_value, dtype=torch.long)
    for b, t in enumerate(tables):
        block_tables[b, :len(t)] = torch.tensor(t, dtype=torch.long)
    # the slots no sequence owns, and those past a sequence's length, hold large junk: reading them shows
    k_cache = torch.randn(num_blocks, bs, kv_heads, dim, generator=gen) * 4
    v_cache = torch.randn(num_blocks, bs, kv_heads, dim, generator=gen) * 4 + 3
    for t, n in zip(tables, lens):
        flat_k, flat_v = k_cache[t].flatten(0, 1), v_cache[t].flatten(0, 1)
        flat_k[:n] = torch.randn(n, kv_heads, dim, generator=gen)
        flat_v[:n] = torch.randn(n, kv_heads, dim, generator=gen)
        k_cache[t] = flat_k.view(len(t), bs, kv_heads, dim)
        v_cache[t] = flat_v.view(len(t), bs, kv_heads, dim)
    q = torch.randn(len(lens), kv_heads * group, dim, generator=gen)
    return q, k_cache, v_cache, block_tables, torch.tensor(lens, dtype=torch.long)


def _variant(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, tables: torch.Tensor,
             lens: list[int], scale: float, *, modulo: bool = False, whole_blocks: bool = False,
             ignore_table: bool = False) -> torch.Tensor:
    """Decode attention with one known mistake switched on (for diagnosis)."""
    batch, heads, dim = q.shape
    bs, kv_heads = k_cache.shape[1], k_cache.shape[2]
    out = torch.empty_like(q)
    for b in range(batch):
        nb = cdiv(lens[b], bs)
        blocks = torch.arange(nb) if ignore_table else tables[b, :nb]
        n = nb * bs if whole_blocks else lens[b]
        k = k_cache[blocks].flatten(0, 1)[:n]
        v = v_cache[blocks].flatten(0, 1)[:n]
        for h in range(heads):
            g = h % kv_heads if modulo else h // (heads // kv_heads)
            w = (k[:, g] @ q[b, h] * scale).softmax(-1)
            out[b, h] = w @ v[:, g]
    return out


def _diagnose(got: Any, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, tables: torch.Tensor,
              lens: list[int], scale: float) -> str:
    heads, kv_heads, bs = q.shape[1], k_cache.shape[2], k_cache.shape[1]
    guesses: list[tuple[str, Callable[[], torch.Tensor]]] = []
    if any(n % bs for n in lens):
        guesses.append(("positions >= context_lens[b] in the last block are not masked out (read exactly "
                        "context_lens[b] tokens)", lambda: _variant(q, k_cache, v_cache, tables, lens, scale, whole_blocks=True)))
    if 1 < kv_heads < heads:
        guesses.append((f"query head h reads KV head h % {kv_heads}; it should read h // {heads // kv_heads}",
                        lambda: _variant(q, k_cache, v_cache, tables, lens, scale, modulo=True)))
    guesses += [
        ("the block table is ignored (blocks 0, 1, 2, ... read in order)",
         lambda: _variant(q, k_cache, v_cache, tables, lens, scale, ignore_table=True)),
        ("the scale is missing", lambda: _variant(q, k_cache, v_cache, tables, lens, 1.0)),
    ]
    if all(n > 1 for n in lens):
        guesses.append(("the last token (the new one) is left out: read context_lens[b] tokens, not context_lens[b] - 1",
                        lambda: _variant(q, k_cache, v_cache, tables, [n - 1 for n in lens], scale)))
    for text, make in guesses:
        try:
            if isinstance(got, torch.Tensor) and got.shape == q.shape and torch.allclose(got.float(), make(), atol=1e-4, rtol=1e-4):
                return f"; looks like {text}"
        except Exception:  # noqa: BLE001 - a diagnosis is best effort
            continue
    return ""


def _expect_paged(fn: Callable[..., Any], q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  tables: torch.Tensor, lens: torch.Tensor, scale: float | None, want: torch.Tensor | None = None,
                  lens_as_list: bool = False) -> None:
    batch, heads, dim = q.shape
    _, bs, kv_heads, _ = k_cache.shape
    lens_list = lens.tolist()
    desc = (f"for context_lens={_short(lens_list, 8)}, block_size={bs}, num_heads={heads}, num_kv_heads={kv_heads}, "
            f"head_dim={dim}, scale={'None' if scale is None else f'{scale:.3g}'}, block_tables={_short(tables.tolist(), 3)}")
    args = (q.clone(), k_cache.clone(), v_cache.clone(), tables.clone(), lens_list if lens_as_list else lens.clone())
    got = call(fn, *args, scale, context=f"paged_decode_attention {desc}")
    if want is None:
        want = ref_paged_decode_attention(q, k_cache, v_cache, tables, lens, scale)
    try:
        expect_tensor(got, want, "the output", OUT_DIMS, desc)
    except CheckFailed as exc:
        used = 1 / math.sqrt(dim) if scale is None else scale
        extra = _diagnose(got, q, k_cache, v_cache, tables, lens_list, used)
        if not extra and scale is None and isinstance(got, torch.Tensor) and got.shape == q.shape:
            if torch.allclose(got, ref_paged_decode_attention(q, k_cache, v_cache, tables, lens, 1.0), atol=1e-4):
                extra = "; looks like scale=None was taken as 1: the default is 1 / sqrt(head_dim)"
        raise CheckFailed(str(exc) + extra) from None


@ex24.check("one sequence, one cached token: the output is its value")
def _one_token(learner: Learner) -> None:
    q, kc, vc, tables, lens = _paged_case([1], 4, kv_heads=2, group=2, dim=8, seed=1)
    want = vc[tables[0, 0], 0].repeat_interleave(2, dim=0)[None]  # [1, 4, 8]: heads 0,1 read KV head 0
    _expect_paged(learner.get("paged_decode_attention"), q, kc, vc, tables, lens, 8 ** -0.5, want=want)


@ex24.check("one sequence in three scattered blocks, the last one partly filled")
def _scattered_blocks(learner: Learner) -> None:
    q, kc, vc, tables, lens = _paged_case([10], 4, kv_heads=2, group=1, dim=8, seed=2)
    _expect_paged(learner.get("paged_decode_attention"), q, kc, vc, tables, lens, 0.3)


@ex24.check("a batch of different lengths, tables padded with -1 and 0, context_lens as a list")
def _batch(learner: Learner) -> None:
    fn = learner.get("paged_decode_attention")
    q, kc, vc, tables, lens = _paged_case([5, 1, 13, 8], 4, kv_heads=2, group=2, dim=6, seed=3)
    _expect_paged(fn, q, kc, vc, tables, lens, 0.4)
    q, kc, vc, tables, lens = _paged_case([3, 9, 2], 4, kv_heads=1, group=3, dim=4, seed=4, pad=0)
    _expect_paged(fn, q, kc, vc, tables, lens, 0.5, lens_as_list=True)


@ex24.check("grouped-query (6 heads on 2 KV heads) and the default scale")
def _gqa(learner: Learner) -> None:
    fn = learner.get("paged_decode_attention")
    q, kc, vc, tables, lens = _paged_case([7, 12], 4, kv_heads=2, group=3, dim=5, seed=5)
    _expect_paged(fn, q, kc, vc, tables, lens, 5 ** -0.5)
    q, kc, vc, tables, lens = _paged_case([6, 3], 2, kv_heads=3, group=3, dim=16, seed=6, pad="last")
    _expect_paged(fn, q * 2, kc, vc, tables, lens, None)


@ex24.check("block sizes 1, 16 and 32, lengths on block boundaries")
def _boundary_lengths(learner: Learner) -> None:
    fn = learner.get("paged_decode_attention")
    for bs, lens, seed in ((1, [1, 4, 2], 7), (16, [16, 32, 15, 17], 8), (32, [32, 64, 1, 33], 9)):
        q, kc, vc, tables, lens_t = _paged_case(lens, bs, kv_heads=2, group=2, dim=8, seed=seed)
        _expect_paged(fn, q, kc, vc, tables, lens_t, 8 ** -0.5)


@ex24.check("random batches (MHA, GQA, MQA; block sizes 1/16/32 and others) vs minikv's")
def _random_paged(learner: Learner) -> None:
    fn = learner.get("paged_decode_attention")

    @st.composite
    def lengths(draw: Any) -> tuple[int, list[int]]:
        bs = draw(st.sampled_from([1, 16, 32, 2, 3, 8]))
        one = st.one_of(st.integers(1, 3 * bs + 2), st.integers(1, 3).map(lambda k: k * bs))  # on a boundary, often
        return bs, draw(st.lists(one, min_size=1, max_size=4))

    @forall(lengths(), st.integers(1, 3), st.sampled_from([1, 2, 3, 4]), st.integers(1, 12),
            st.floats(0.05, 1.5), st.sampled_from([-1, 0, "last"]), st.integers(0, 999), max_examples=40)
    def prop(case: tuple[int, list[int]], kv_heads: int, group: int, dim: int, scale: float, pad: Any, seed: int) -> None:
        bs, lens = case
        q, kc, vc, tables, lens_t = _paged_case(lens, bs, kv_heads, group, dim, seed, pad=pad)
        _expect_paged(fn, q, kc, vc, tables, lens_t, scale)

    prop()


def engine_tokens(paged_decode_attention: Callable[..., torch.Tensor] | None) -> tuple[list[list[int]], int]:
    """Greedy tokens of ``LLM("tiny-llama")`` (CPU, paged, blocks of 4) for PROMPTS, and how often the plug was called."""
    from minikv import LLM, SamplingParams

    calls = [0]
    plug: dict[str, Any] = {}
    if paged_decode_attention is not None:
        def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
            calls[0] += 1
            return paged_decode_attention(*args, **kwargs)

        plug["paged_decode_attention"] = counted
    try:
        llm = LLM("tiny-llama", device="cpu", block_size=ENGINE_BLOCK_SIZE, **plug)
    except TypeError as exc:
        if "paged_decode_attention" in str(exc):
            raise CheckFailed("this minikv's LLM takes no paged_decode_attention= argument; update minikv") from exc
        raise
    outputs = llm.generate(list(PROMPTS), SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True))
    return [list(o.token_ids) for o in outputs], calls[0]


@shared
def reference_tokens() -> tuple[tuple[int, ...], ...]:
    """What the engine's own paged attention produces (computed once per grading session)."""
    return tuple(tuple(t) for t in engine_tokens(None)[0])


@ex24.check("serves LLM('tiny-llama') like minikv's paged attention", final=True)
def _engine(learner: Learner) -> str:
    got, calls = engine_tokens(learner.get("paged_decode_attention"))
    want = reference_tokens()
    if not calls:
        raise AssertionError("the engine never called the plugged-in paged_decode_attention")
    for p, (g, w) in enumerate(zip(got, want)):
        if list(g) != list(w):
            same = next((i for i, (a, b) in enumerate(zip(g, w)) if a != b), min(len(g), len(w)))
            what = (f"token {same} is {g[same]}, minikv's gives {w[same]}" if same < min(len(g), len(w))
                    else f"{len(g)} tokens came out, minikv's gives {len(w)}")
            raise CheckFailed(one_line(
                f"with your paged_decode_attention, LLM('tiny-llama') generates differently for prompt {p} "
                f"({PROMPTS[p]!r}, batched with {len(PROMPTS) - 1} others, blocks of {ENGINE_BLOCK_SIZE}): "
                f"{what} (the first {same} agree)"))
    return (f"{len(PROMPTS)} prompts x {MAX_TOKENS} greedy tokens match minikv's, "
            f"with your paged_decode_attention ({calls} calls)")


__all__ = ["PROMPTS", "engine_tokens", "reference_tokens"]

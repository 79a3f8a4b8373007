"""Exercise 2.1, the block allocator: random traces of allocate / free (valid and invalid) on the learner's
allocator and on minikv's side by side, with the invariants a pool lives by (no block handed out twice,
none leaked, free + used = total)."""

from __future__ import annotations

import operator

from hypothesis import strategies as st

from minikv.errors import BlockAllocatorError, KVCacheFull
from minikv.grade.compare import CheckFailed, call, forall, short
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.grade.trace import Trace
from minikv.kv.allocator import BlockAllocator as RefAllocator

ex21 = register(Exercise(
    "2.1", "block allocator", "ch02_paged_kv", ("BlockAllocator",),
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
        self.trace = Trace(f"BlockAllocator({num_blocks})")
        self.mine = call(cls, num_blocks, context=self.trace.desc)
        self.ref = RefAllocator(num_blocks)
        self.used: set[int] = set()  # the learner's ids, currently handed out
        self.pair: dict[int, int] = {}  # learner id -> minikv id, for ids currently handed out

    def num_free(self, why: str = "") -> None:
        t, want = self.trace, self.num_blocks - len(self.used)
        got = t.call(lambda: self.mine.num_free, what="num_free")
        assert want == self.ref.num_free, "grader bug: minikv's allocator disagrees with the model"
        if callable(got):
            t.fail(f"num_free is a method; keep it a @property (as in the stub), so that allocator.num_free is the int {want}")
        if isinstance(got, bool) or not isinstance(got, int):
            t.fail(f"num_free is {got!r} ({type(got).__name__}), expected the int {want}")
        if got != want:
            t.fail(f"num_free is {got}, expected {want} ({len(self.used)} of {self.num_blocks} blocks in use){why}")

    def allocate(self, n: int) -> list[int] | None:
        t, free = self.trace, self.num_blocks - len(self.used)
        t.step(f"allocate({n})")
        pair = t.mirror(lambda: self.ref.allocate(n), lambda: self.mine.allocate(n), KVCacheFull,
                        lambda: f"{free} blocks are free")
        if pair is None:
            t.amend(" -> KVCacheFull")
            self.num_free(" (a failed allocate must hand out nothing)")
            return None
        want, got = pair
        if not isinstance(got, (list, tuple)):
            t.fail(f"allocate({n}) returned {type(got).__name__}, expected a list of {n} block ids")
        try:
            ids = [operator.index(b) for b in got]
        except TypeError:
            t.fail(f"allocate({n}) returned {short(got, 12)}: block ids must be ints")
        if len(ids) != n:
            t.fail(f"allocate({n}) returned {len(ids)} block ids, expected {n}")
        outside = [b for b in ids if not 0 <= b < self.num_blocks]
        if outside:
            t.fail(f"allocate({n}) handed out block {outside[0]}, which is outside 0..{self.num_blocks - 1}")
        if len(set(ids)) != n:
            t.fail(f"allocate({n}) returned {short(ids, 12)}: block {next(b for b in ids if ids.count(b) > 1)} twice")
        taken = sorted(set(ids) & self.used)
        if taken:
            t.fail(f"allocate({n}) handed out block {taken[0]}, which is still in use (handed out earlier and never freed)")
        self.used |= set(ids)
        self.pair.update(zip(ids, want))
        t.amend(f" -> {short(ids, 4)}")
        self.num_free()
        return ids

    def free(self, ids: list[int], as_generator: bool = False) -> bool:
        """Free ``ids`` on both; True if it was a valid free."""
        t = self.trace
        t.step(f"free({ids!r})" + (" (given as a generator)" if as_generator else ""))
        valid = all(0 <= b < self.num_blocks and b in self.used for b in ids) and len(set(ids)) == len(ids)
        far = self.num_blocks + 10**6  # a learner id with no minikv twin maps to a bad id there too
        mapped = [self.pair.get(b, far) if b in self.used else (b if not 0 <= b < self.num_blocks else far) for b in ids]
        outside = [b for b in ids if not 0 <= b < self.num_blocks]
        why = ("every id is in use, once" if valid else
               f"it names block {outside[0]}, outside the pool (0..{self.num_blocks - 1})" if outside else
               "it repeats a block" if len(set(ids)) != len(ids) else "it frees a block that is not in use (double free?)")
        arg = (b for b in ids) if as_generator else list(ids)
        done = t.mirror(lambda: self.ref.free(mapped), lambda: self.mine.free(arg), BlockAllocatorError, lambda: why)
        assert (done is not None) == valid, f"grader bug: minikv's allocator and the model disagree on {t.steps[-1]}"
        if not valid:
            t.amend(" -> BlockAllocatorError")
            self.num_free(" (a failed free must free nothing)")
            return False
        self.used -= set(ids)
        for b in ids:
            self.pair.pop(b)
        try:
            self.num_free()
        except CheckFailed as exc:
            if as_generator:
                raise CheckFailed(f"{exc}; read block_ids into a list once: a generator can be iterated only once") from None
            raise
        return True

    def drain(self) -> None:
        """Free everything; then the whole pool must be free and allocatable again (nothing leaked)."""
        if self.used:
            self.free(sorted(self.used))
        ids = self.allocate(self.num_blocks)
        if ids is None or sorted(ids) != list(range(self.num_blocks)):
            self.trace.fail(f"with every block freed, allocate({self.num_blocks}) did not hand out each block once")
        self.free(ids)


@ex21.check("allocate hands out distinct blocks; num_free counts them")
def _allocate(learner: Learner) -> None:
    twin = _AllocatorTwin(learner.get("BlockAllocator"), 8)
    twin.num_free()
    for n in (3, 0, 5, 0):
        twin.allocate(n)


@ex21.check("KVCacheFull when too few blocks are free, handing out nothing")
def _full(learner: Learner) -> None:
    twin = _AllocatorTwin(learner.get("BlockAllocator"), 4)
    for n in (3, 2, 1, 1):
        twin.allocate(n)
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



"""The differential request stream: the learner's tree and ``RadixCache(num_blocks, 1, page_size=1)`` serve the
same requests (match + lock, evict, insert + unlock), compared after every step; and :func:`pieces`, which lends
minikv's version of a piece that is not right yet."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from minikv.grade.checks.ch04.trees import REFERENCE
from minikv.grade.checks.ch04.trees import canon_learner, canon_rc, evict_problem, draw, short, split_cases, tree_diff, tree_of
from minikv.grade.compare import forall
from minikv.grade.lend import lend
from minikv.grade.runner import Learner
from minikv.grade.trace import Trace
from minikv.prefix import RadixCache

END = -1  # appended to a prompt for RadixCache.match, whose last-token rule then walks exactly the prompt


def pieces(learner: Learner, own: Sequence[str], borrow: Sequence[str]) -> tuple[dict[str, Callable[..., Any]], str]:
    """The functions a check uses: ``own`` from the learner; each of ``borrow`` the learner's if it is right,
    else the reference (see :func:`minikv.grade.lend.lend`). Returns them and a note for the PASS message."""
    fns, note = lend(learner, borrow, REFERENCE, lambda name, fn: is_right(learner, name, fn))
    return {**{name: learner.get(name) for name in own}, **fns}, note


def is_right(learner: Learner, name: str, fn: Callable[..., Any]) -> bool:
    """True when ``fn`` passes a fixed case (raises otherwise)."""
    if name == "split_node":
        split_cases(learner, fn)
    else:
        stream(StreamTrace(learner, dict(REFERENCE, **{name: fn}), 24, times=True), random.Random(4), 30)
    return True


# ---- the differential trace ------------------------------------------------------------------------------

class StreamTrace(Trace):
    """Drives the learner's tree and a RadixCache(num_blocks, 1, page_size=1) with the same requests."""

    def __init__(self, learner: Learner, fns: dict[str, Callable[..., Any]], num_blocks: int, times: bool,
                 label: str = "") -> None:
        super().__init__(f"a {num_blocks}-token pool", label, keep=3)
        self.fns, self.times = fns, times
        self.tree = tree_of(learner)
        self.rc = RadixCache(num_blocks, 1, page_size=1)
        self.num_blocks = num_blocks
        self.live: dict[str, tuple[list[int], list[int], Any, tuple[int, ...]]] = {}

    def _call(self, name: str, *args: Any) -> Any:
        return self.call(self.fns[name], *args, what=name)

    def compare(self) -> None:
        diff = tree_diff(canon_learner(self.tree), canon_rc(self.rc), exact_locks=False, times=self.times)
        if diff:
            self.fail(diff)

    def match(self, tokens: list[int], what: str) -> tuple[list[int], Any, tuple[int, ...]]:
        self.step(f"{what}: match_prefix(tree, {short(tokens)})")
        got = self._call("match_prefix", self.tree, list(tokens))
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            self.fail(f"match_prefix returned {type(got).__name__}, expected a (values, last_node) pair")
        values, node = got
        m = self.rc.match(tokens + [END])
        want = list(m.block_ids)
        if list(values) != want:
            n = len(want)
            why = (f"matched {len(values)} tokens, expected {n}" if len(values) != n
                   else f"returned values {list(values)}, expected {want}")
            self.fail(f"match_prefix(tree, {short(tokens)}) {why}")
        if not hasattr(node, "children"):
            self.fail(f"match_prefix returned {node!r} as last_node, expected a Node")
        end = tuple(tokens[: len(want)])
        return want, node, end

    def _check_end(self, node: Any, end: tuple[int, ...], call_name: str) -> None:
        if not end:
            if node is not self.tree.root:
                self.fail(f"{call_name} matched nothing but returned {node!r} as last_node, expected tree.root")
            return
        path, n = [], node
        while n is not None and n is not self.tree.root and len(path) < 10000:
            path = list(n.tokens) + path
            n = n.parent
        if tuple(path) != end:
            self.fail(f"{call_name} returned a last_node whose path from the root is {short(path)}, expected "
                      f"{short(end)} (the matched prefix, ending exactly at that node)")

    def start(self, name: str, prompt: list[int], gen: list[int]) -> None:
        hit, node, end = self.match(prompt, f"{name} arrives")
        self._check_end(node, end, f"match_prefix(tree, {short(prompt)})")
        self.amend(" + lock")
        self._call("lock", node)
        self.compare()
        need = len(prompt) - len(hit) + len(gen)
        if self.rc.num_allocatable < need:
            self.step(f"{name} does not fit: unlock")
            self._call("unlock", node)
            self.rc.release(hit)
            self.compare()
            return
        missing = need - len(self.rc.free_blocks())
        if missing > 0:
            self.evict(missing, f" to make room for {name}")
        self.live[name] = (prompt + gen, hit + self.rc.allocate(need), node, end)

    def finish(self, name: str) -> None:
        seq, table, node, _ = self.live.pop(name)
        self.step(f"{name} finishes: insert(tree, {short(seq)}, ...) + unlock")
        got = self._call("insert", self.tree, list(seq), list(table))
        want = self.rc.insert_detailed(seq, table).prefix_len
        if got != want:
            self.fail(f"insert returned {got!r}, expected {want} (tokens of the sequence already in the tree)")
        self._call("unlock", node)
        self.rc.release(table)
        self.compare()

    def peek(self, tokens: list[int]) -> None:
        """A match that locks nothing (e.g. a scheduler looking for the longest prefix)."""
        hit, node, end = self.match(tokens, "a lookup")
        self._check_end(node, end, f"match_prefix(tree, {short(tokens)})")
        self.rc.release(hit)  # RadixCache's match took references: give them back
        self.compare()

    def evict(self, k: int, why: str = "") -> None:
        self.step(f"evict(tree, {k}){why}")
        before = canon_learner(self.tree)
        cached = {b for b in range(self.num_blocks) if self.rc.is_cached(b)}
        got = self._call("evict", self.tree, k)
        self.rc.evict(k)
        want = sorted(cached - {b for b in range(self.num_blocks) if self.rc.is_cached(b)})
        problem = evict_problem(got, want, before, k)
        if problem:
            self.fail(f"evict(tree, {k}) {problem}; the tree was {draw(before)}")
        self.compare()


PREFIXES = ([], [1, 2, 3, 1, 2, 3, 0, 1], [1, 2, 3, 1, 3], [2, 2, 0, 3, 1, 1, 2])


def stream(t: StreamTrace, rng: random.Random, num_ops: int, peeks: bool = True) -> None:
    """Requests that share prefixes arrive, overlap, finish; lookups and evictions in between."""
    seen: list[list[int]] = []
    for n in range(num_ops):
        kind = rng.choices(["start", "again", "finish", "peek", "evict"], [30, 20, 30, 10 if peeks else 0, 6])[0]
        if kind in ("start", "again"):
            if kind == "again" and seen:
                prompt = list(seen[rng.randrange(len(seen))])
                prompt = prompt[: rng.randint(1, len(prompt))] + [rng.randrange(4) for _ in range(rng.choice([0, 1, 3]))]
            else:
                prompt = list(PREFIXES[rng.randrange(len(PREFIXES))]) + [rng.randrange(4) for _ in range(rng.randint(1, 5))]
            gen = [rng.randrange(4) for _ in range(rng.randint(0, 4))]
            t.start(f"r{n}", prompt, gen)
            seen.append(prompt + gen)
        elif kind == "finish" and t.live:
            t.finish(rng.choice(sorted(t.live)))
        elif kind == "peek" and seen:
            s = seen[rng.randrange(len(seen))]
            t.peek(s[: rng.randint(1, len(s))] + [rng.randrange(4)])
        elif kind == "evict":
            t.evict(rng.randint(1, 6))
    for name in sorted(t.live):
        t.finish(name)


def random_streams(learner: Learner, fns: dict[str, Callable[..., Any]], times: bool, peeks: bool = True) -> str:
    @forall(st.integers(12, 48), st.integers(0, 2**32 - 1), max_examples=25)
    def prop(num_blocks: int, seed: int) -> None:
        stream(StreamTrace(learner, fns, num_blocks, times), random.Random(seed), 40, peeks)

    prop()
    return ""

"""Exercises 4.1 match with split, 4.2 insert, 4.3 lock and unlock along the path, and 4.4 LRU leaf eviction
on the tree (4.4's block-level checks are in :mod:`.prefix_cache`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from minikv.grade.checks.ch04.tree_streams import pieces, random_streams
from minikv.grade.checks.ch04.trees import (
    MODULE, REFERENCE, canon_learner, evict_problem, draw, expect_twins, flatten, node_at, node_name, ref_evict,
    ref_insert, ref_lock, ref_match_prefix, ref_unlock, short, split_cases, twins,
)
from minikv.grade.compare import CheckFailed, call, one_line
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner

ex41 = register(Exercise(
    "4.1", "match with split", MODULE, ("match_prefix", "split_node"),
    hint="walk from tree.root: child = node.children[tokens[pos]], count the agreeing tokens c; if c < "
         "len(child.tokens), upper = split_node(child, c) (upper takes child's place, child keeps the rest below "
         "it), stamp it and stop; else stamp the child, take its values and go on. Stamp every node of the path "
         "with the one t = tree.tick() of this call",
))


@ex41.check("split_node: the new upper node takes the first k tokens and the node's place")
def _split(learner: Learner) -> str:
    split_cases(learner, learner.get("split_node"))
    return "both halves, links, lock_ref and last_access as expected"


def _expect_match(learner: Learner, fn: Callable[..., Any], build: Sequence[tuple[str, Any]],
                  tokens: list[int], times: bool = False) -> None:
    mine, ref, same_place = twins(learner, build)
    what = f"match_prefix(tree, {short(tokens)}) on the tree {draw(canon_learner(ref))}"
    got = call(fn, mine, list(tokens), context=what)
    want_values, want_node = ref_match_prefix(ref, tokens)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailed(one_line(f"{what} returned {type(got).__name__}, expected a (values, last_node) pair"))
    values, node = got
    if list(values) != want_values:
        why = ""
        if len(values) < len(want_values) and list(values) == want_values[: len(values)]:
            why = ": the match stopped at the end of an edge, but the next edge agrees in part (split it there)"
        raise CheckFailed(one_line(f"{what} returned values {list(values)}, expected {want_values} "
                                   f"({len(want_values)} tokens match){why}"))
    expect_twins(mine, ref, what, times=times)
    if node is not same_place(want_node):
        expect = "tree.root (nothing matched)" if want_node is ref.root else (
            f"the node with edge {short(want_node.tokens)} (where the match ends)")
        raise CheckFailed(one_line(f"{what} returned {node!r} as last_node, expected {expect}"))


@ex41.check("whole edges, a match ending inside an edge (split), a miss")
def _match_cases(learner: Learner) -> str:
    fn = learner.get("match_prefix")
    build = [("insert", [1, 2, 3, 4]), ("insert", [1, 2, 5, 6]), ("insert", [7])]
    for tokens in ([9, 1, 2], [1, 2, 5, 6, 7, 8], [1, 2, 5, 6], [1, 2, 3, 9], [1, 2, 3], [1, 5], [7, 7], []):
        _expect_match(learner, fn, build, tokens)
    return "values, last node and the split tree as expected"


@ex41.check("the access time is stamped on every node of the matched path")
def _match_times(learner: Learner) -> str:
    fn = learner.get("match_prefix")
    build = [("insert", [1, 2, 3, 4, 5, 6]), ("insert", [1, 2, 3, 7]), ("insert", [1, 2, 8]), ("insert", [9])]
    for tokens in ([1, 2, 3, 4, 5, 6], [1, 2, 3, 7, 0], [1, 2, 3, 4, 0], [1, 2, 8]):
        mine, ref, _ = twins(learner, build)
        call(fn, mine, list(tokens), context=f"match_prefix(tree, {short(tokens)})")
        t = mine.clock
        for path, n in flatten(canon_learner(mine)).items():
            on_path = len(path) <= len(tokens) and list(path) == tokens[: len(path)]
            if on_path and n["time"] != t:
                raise CheckFailed(one_line(
                    f"after match_prefix(tree, {short(tokens)}) on the tree {draw(canon_learner(ref))}, "
                    f"{node_name(n)} is on the matched path but has last_access {n['time']}, expected {t} (the "
                    f"t = tree.tick() of this call): stamp every node of the path, not only the last"))
        ref_match_prefix(ref, tokens)
        expect_twins(mine, ref, f"match_prefix(tree, {short(tokens)})")
    return "every node of the path stamped, the rest untouched"


@ex41.check("random request streams vs RadixCache(page_size=1): hits, splits, access order")
def _match_streams(learner: Learner) -> str:
    fns = dict(REFERENCE, match_prefix=learner.get("match_prefix"))
    random_streams(learner, fns, times=True)
    return "every hit, tree and access order agree with minikv's RadixCache"


# ---- 4.2 insert -------------------------------------------------------------------------------------------------

ex42 = register(Exercise(
    "4.2", "insert", MODULE, ("insert",),
    hint="walk like match_prefix: no child for tokens[pos] -> hang Node(tokens[pos:], values[pos:], node) under "
         "node and return pos; an edge that agrees only in part -> split_node and go on from the upper part; "
         "tokens that end inside an edge -> return len(tokens) without splitting; stamp every node walked into "
         "and the new leaf with one t = tree.tick()",
))


def _expect_insert(learner: Learner, fn: Callable[..., Any], build: Sequence[tuple[str, Any]], tokens: list[int]) -> None:
    mine, ref, _ = twins(learner, build)
    values = [500 + i for i in range(len(tokens))]
    what = f"insert(tree, {short(tokens)}, values) on the tree {draw(canon_learner(ref))}"
    got = call(fn, mine, list(tokens), list(values), context=what)
    want = ref_insert(ref, tokens, values)
    if got != want:
        raise CheckFailed(one_line(f"{what} returned {got!r}, expected {want} (how many leading tokens were there already)"))
    expect_twins(mine, ref, what)


@ex42.check("into an empty tree, below a node, branching inside an edge")
def _insert_cases(learner: Learner) -> str:
    fn, note = pieces(learner, ["insert"], ["split_node"])
    ins = fn["insert"]
    two = [("insert", [1, 2, 3, 4]), ("insert", [1, 2, 7])]
    for build, tokens in (([], [1, 2, 3]), ([("insert", [1, 2, 3])], [1, 2, 3, 4, 5]),
                          ([("insert", [1, 2, 3, 4])], [1, 2, 7, 8]), (two, [1, 2, 9]), (two, [5, 1, 2])):
        _expect_insert(learner, ins, build, tokens)
    return "tree and return values as expected" + note


@ex42.check("what is already there is not stored again (nor split)")
def _insert_dupes(learner: Learner) -> str:
    fn, note = pieces(learner, ["insert"], ["split_node"])
    ins = fn["insert"]
    build = [("insert", [1, 2, 3, 4]), ("insert", [1, 2, 7]), ("lock", [1, 2, 3, 4])]
    for tokens in ([1, 2, 3, 4], [1, 2, 3], [1], [1, 2], [1, 2, 3, 4, 0], []):
        _expect_insert(learner, ins, build, tokens)
    return "duplicates skipped, locks untouched" + note


@ex42.check("random request streams vs RadixCache(page_size=1): return values, tokens stored, access order")
def _insert_streams(learner: Learner) -> str:
    fns, note = pieces(learner, ["insert"], ["split_node", "match_prefix"])
    fns = dict(REFERENCE, **fns)
    random_streams(learner, fns, times=True)
    return "every insert, tree and access order agree with minikv's RadixCache" + note


ex43 = register(Exercise(
    "4.3", "lock and unlock along the path", MODULE, ("lock", "unlock"),
    hint="lock: while node.parent is not None: node.lock_ref += 1; node = node.parent (unlock: -= 1). "
         "Count, do not just set a flag: two requests on one path lock it twice",
))

_LOCK_TREE = [("insert", [1, 2, 3, 4, 5]), ("insert", [1, 2, 3, 9]), ("insert", [1, 6]), ("insert", [7, 8])]


def _lock_steps(learner: Learner, ops: tuple[tuple[str, list[int]], ...], show_tree: bool) -> None:
    """Run lock / unlock ``ops`` (on the node at each path) on twins of _LOCK_TREE; compare after each."""
    fns = {"lock": (learner.get("lock"), ref_lock), "unlock": (learner.get("unlock"), ref_unlock)}
    mine, ref, _ = twins(learner, _LOCK_TREE)
    tree = f" on the tree {draw(canon_learner(ref))}" if show_tree else ""
    steps = []
    for op, path in ops:
        steps.append(f"{op}(node {short(path)})")
        call(fns[op][0], node_at(mine, path), context=steps[-1])
        fns[op][1](node_at(ref, path))
        expect_twins(mine, ref, f"{', '.join(steps)}{tree}")


@ex43.check("lock(node) counts on every node from node up to the root; unlock undoes it")
def _lock_path(learner: Learner) -> str:
    _lock_steps(learner, (("lock", [1, 2, 3, 4, 5]), ("lock", [1, 6]), ("unlock", [1, 2, 3, 4, 5]), ("lock", [1, 2, 3]),
                          ("unlock", [1, 6]), ("unlock", [1, 2, 3])), show_tree=True)
    return "counts along each path as expected, and back to 0"


@ex43.check("two locks on one path need two unlocks")
def _lock_counts(learner: Learner) -> str:
    _lock_steps(learner, (("lock", [1, 2, 3, 9]), ("lock", [1, 2, 3, 9]), ("lock", [1, 2, 3, 4, 5]),
                          ("unlock", [1, 2, 3, 9]), ("unlock", [1, 2, 3, 4, 5]), ("unlock", [1, 2, 3, 9])), show_tree=False)
    return "counted, not flagged"


@ex43.check("random overlapping requests vs RadixCache(page_size=1): the same nodes locked")
def _lock_streams(learner: Learner) -> str:
    fns, note = pieces(learner, ["lock", "unlock"], ["split_node", "match_prefix", "insert"])
    fns = dict(REFERENCE, **fns)
    random_streams(learner, fns, times=False)
    return "locked nodes agree with minikv's RadixCache after every step" + note


# ---- 4.4 LRU leaf eviction --------------------------------------------------------------------------------------

ex44 = register(Exercise(
    "4.4", "LRU leaf eviction", MODULE, ("evict",),
    hint="heap of (last_access, counter, leaf) over the leaves with lock_ref == 0; pop the oldest: if it holds "
         "more tokens than still needed cut them off its end and stop, else delete it from parent.children, "
         "free its values, and push the parent if it is now an unlocked leaf (and not the root)",
))

_EVICT_TREE = [("insert", [1, 2, 3, 4]), ("insert", [1, 2, 5, 6]), ("insert", [7, 8, 9]), ("match", [1, 2, 3, 4])]


def _expect_evict(learner: Learner, fn: Callable[..., Any], build: Sequence[tuple[str, Any]], n: int) -> None:
    mine, ref, _ = twins(learner, build)
    what = f"evict(tree, {n}) on the tree {draw(canon_learner(ref))}"
    locked = [f"{short(p)}" for p, node in flatten(canon_learner(ref)).items() if node["lock"]]
    if locked:
        what += f" (locked: {', '.join(locked)})"
    before = canon_learner(mine)
    got = call(fn, mine, n, context=what)
    problem = evict_problem(got, ref_evict(ref, n), before, n)
    if problem:
        raise CheckFailed(one_line(f"{what} {problem}"))
    expect_twins(mine, ref, what)


@ex44.check("the least recently used unlocked leaf goes first")
def _evict_lru(learner: Learner) -> str:
    fn = learner.get("evict")
    for extra, n in (([], 2), ([], 5), ([("match", [7, 8, 9]), ("match", [1, 2, 5])], 2)):
        _expect_evict(learner, fn, _EVICT_TREE + extra, n)
    return "leaves evicted in LRU order"


@ex44.check("a parent that becomes a leaf can go next; a locked node never")
def _evict_parent(learner: Learner) -> str:
    fn = learner.get("evict")
    for extra, n in (([], 8), ([], 9), ([("lock", [1, 2, 3, 4])], 9), ([("lock", [1, 2])], 9), ([("lock", [7, 8])], 3)):
        _expect_evict(learner, fn, _EVICT_TREE + extra, n)
    return "parents re-examined, locked nodes kept"


@ex44.check("exactly num_tokens: the last leaf is cut at its end; fewer when no more can go")
def _evict_trim(learner: Learner) -> str:
    fn = learner.get("evict")
    for build, n in ((_EVICT_TREE, 1), (_EVICT_TREE, 3), (_EVICT_TREE, 0),
                     (_EVICT_TREE + [("lock", [1, 2, 5, 6]), ("lock", [7, 8, 9])], 4), ([], 3)):
        _expect_evict(learner, fn, build, n)
    return "trimmed and capped as expected"


@ex44.check("random request streams under memory pressure vs RadixCache(page_size=1): the same tokens survive")
def _evict_streams(learner: Learner) -> str:
    fns, note = pieces(learner, ["evict"], ["split_node", "match_prefix", "insert", "lock", "unlock"])
    fns = dict(REFERENCE, **fns)
    random_streams(learner, fns, times=False)
    return "every eviction agrees with minikv's RadixCache" + note

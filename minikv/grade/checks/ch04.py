"""Chapter 04 (a radix-tree prefix cache): 4.1 match with split, 4.2 insert, 4.3 lock and unlock, 4.4 LRU leaf eviction.

References: :class:`minikv.prefix.RadixCache` at ``block_size=1, page_size=1``
(one block per token, so a node's ``block_ids`` are exactly the learner's
``values``), driven through the same request streams as the learner's tree:
a request matches its prompt (``match`` + ``lock`` vs ``RadixCache.match``,
whose block references lock the path), evicts if the pool is short, and
when it finishes inserts prompt + output (``insert`` + ``unlock`` vs
``insert`` + ``release``). After every step the two trees must have the
same edges, values and locked nodes (``lock_ref > 0``: RadixCache counts
per block reference, the learner per request, so only zero / non-zero is
compared), and for 4.1 and 4.2 the same order of access times. Evictions
must free the same tokens. Hand-made cases compare with the reference
functions below, run on a twin of the learner's tree.

4.4 also runs the learner's pieces behind the file's ``TreePrefixCache``
(one tree key per block) against ``RadixCache(num_blocks, block_size)`` over
random request streams (the same cached tokens per request, hits that hold
exactly the prompt's prefix, the same pool counts), and its final check
serves ``LLM("tiny-llama", prefix_cache=<factory>)`` with it, comparing
greedy tokens and ``num_cached_tokens`` with ``prefix_cache="radix"``
through a workload that evicts.

Each check uses the learner's other pieces where they are right and the
reference functions here where they are not (named in the PASS message),
so each exercise's grade depends on its own code alone.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from minikv.errors import InvalidRequestError
from minikv.grade.compare import CheckFailed, expect_same_engine_runs, call, describe_exception, forall, one_line
from minikv.grade.memo import shared
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.kv.block_table import cdiv
from minikv.prefix import RadixCache

MODULE = "ch04_radix_tree"
END = -1  # appended to a prompt for RadixCache.match, whose last-token rule then walks exactly the prompt


def _short(tokens: Sequence[Any], limit: int = 8) -> str:
    tokens = list(tokens)
    if len(tokens) <= limit:
        return "[" + " ".join(map(str, tokens)) + "]"
    return "[" + " ".join(map(str, tokens[:limit])) + f" ... ({len(tokens)} tokens)]"


# ---- the reference pieces, on the learner's Node class -------------------------------------------------

def _agree(edge: Sequence[int], tokens: Sequence[int], pos: int) -> int:
    c = 0
    while c < len(edge) and pos + c < len(tokens) and edge[c] == tokens[pos + c]:
        c += 1
    return c


def ref_split_node(node: Any, k: int) -> Any:
    upper = type(node)(node.tokens[:k], node.values[:k], node.parent)
    upper.lock_ref, upper.last_access = node.lock_ref, node.last_access
    node.parent.children[upper.tokens[0]] = upper
    node.tokens, node.values = list(node.tokens[k:]), list(node.values[k:])
    node.parent = upper
    upper.children[node.tokens[0]] = node
    return upper


def ref_match_prefix(tree: Any, tokens: Sequence[int]) -> tuple[list[int], Any]:
    t = tree.tick()
    node, values, pos = tree.root, [], 0
    while pos < len(tokens) and tokens[pos] in node.children:
        child = node.children[tokens[pos]]
        c = _agree(child.tokens, tokens, pos)
        inside = c < len(child.tokens)
        if inside:
            child = ref_split_node(child, c)
        child.last_access = t
        values += list(child.values)
        node, pos = child, pos + c
        if inside:
            break
    return values, node


def ref_insert(tree: Any, tokens: Sequence[int], values: Sequence[int]) -> int:
    t = tree.tick()
    node, pos = tree.root, 0
    while pos < len(tokens):
        child = node.children.get(tokens[pos])
        if child is None:
            leaf = type(tree.root)(list(tokens[pos:]), list(values[pos:]), node)
            leaf.last_access = t
            node.children[tokens[pos]] = leaf
            return pos
        c = _agree(child.tokens, tokens, pos)
        if c < len(child.tokens):
            if pos + c == len(tokens):
                child.last_access = t
                return len(tokens)
            child = ref_split_node(child, c)
        child.last_access = t
        node, pos = child, pos + c
    return len(tokens)


def ref_lock(node: Any) -> None:
    while node.parent is not None:
        node.lock_ref += 1
        node = node.parent


def ref_unlock(node: Any) -> None:
    while node.parent is not None:
        node.lock_ref -= 1
        node = node.parent


def _all_nodes(root: Any) -> list[Any]:
    out, stack = [], list(root.children.values())
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.children.values())
    return out


def ref_evict(tree: Any, num_tokens: int) -> list[int]:
    heap = [(n.last_access, i, n) for i, n in enumerate(_all_nodes(tree.root)) if not n.children and not n.lock_ref]
    heapq.heapify(heap)
    count, freed = len(heap), []
    while heap and len(freed) < num_tokens:
        _, _, leaf = heapq.heappop(heap)
        need = num_tokens - len(freed)
        if len(leaf.tokens) > need:
            freed += list(leaf.values[-need:])
            leaf.tokens, leaf.values = list(leaf.tokens[:-need]), list(leaf.values[:-need])
            break
        freed += list(leaf.values)
        parent = leaf.parent
        del parent.children[leaf.tokens[0]]
        leaf.parent = None
        if parent.parent is not None and not parent.children and not parent.lock_ref:
            count += 1
            heapq.heappush(heap, (parent.last_access, count, parent))
    return freed


REFERENCE: dict[str, Callable[..., Any]] = {
    "split_node": ref_split_node, "match_prefix": ref_match_prefix, "insert": ref_insert,
    "lock": ref_lock, "unlock": ref_unlock, "evict": ref_evict,
}


# ---- trees as plain data, and what differs between two ------------------------------------------------

def _canon_learner(tree: Any) -> list[dict[str, Any]]:
    """The learner's tree as sorted plain data; CheckFailed on a broken link (wrong key, parent, lengths)."""
    seen: set[int] = set()

    def walk(node: Any, prefix: tuple[int, ...]) -> list[dict[str, Any]]:
        kids = []
        children = getattr(node, "children", None)
        if not isinstance(children, dict):
            raise CheckFailed(f"node {_short(prefix)}'s children is a {type(children).__name__}, expected a dict")
        for key, child in children.items():
            if id(child) in seen or len(seen) > 5000:
                raise CheckFailed("your tree has a cycle (a node is its own descendant, or appears twice)")
            seen.add(id(child))
            tokens, values = list(getattr(child, "tokens", [])), list(getattr(child, "values", []))
            where = f"the node with edge {_short(tokens)} after {_short(prefix)}"
            if not tokens:
                raise CheckFailed(f"{where} has an empty edge (only the root may); remove it or never create it")
            if len(values) != len(tokens):
                raise CheckFailed(f"{where} has {len(tokens)} tokens but {len(values)} values; keep one value per token")
            if key != tokens[0]:
                raise CheckFailed(f"{where} is in children under key {key!r}, not its first token {tokens[0]!r}")
            if getattr(child, "parent", None) is not node:
                raise CheckFailed(f"{where}: its .parent is not the node whose children hold it; update parent links")
            kids.append({"edge": tuple(tokens), "values": tuple(values), "lock": child.lock_ref,
                         "time": child.last_access, "kids": walk(child, prefix + tuple(tokens))})
        return sorted(kids, key=lambda n: n["edge"][0])

    return walk(tree.root, ())


def _canon_rc(rc: RadixCache) -> list[dict[str, Any]]:
    def conv(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(({"edge": tuple(n["tokens"]), "values": tuple(n["block_ids"]), "lock": n["lock_ref"],
                        "time": n["last_access"], "kids": conv(n["children"])} for n in nodes),
                      key=lambda n: n["edge"][0])

    trees = rc.to_dict()
    return conv(trees[0]["children"]) if trees else []


def _flat(canon: list[dict[str, Any]], prefix: tuple[int, ...] = ()) -> dict[tuple[int, ...], dict[str, Any]]:
    out: dict[tuple[int, ...], dict[str, Any]] = {}
    for n in canon:
        path = prefix + n["edge"]
        out[path] = dict(n, prefix=prefix)
        out.update(_flat(n["kids"], path))
    return out


def _draw(canon: list[dict[str, Any]]) -> str:
    """``(1 2 (3 4) (5))``: each node's edge, its children in parentheses."""
    if not canon:
        return "(empty)"
    return " ".join("(" + " ".join(map(str, n["edge"])) + (" " + _draw(n["kids"]) if n["kids"] else "") + ")"
                    for n in canon)


def _num_tokens(canon: list[dict[str, Any]]) -> int:
    return sum(len(n["edge"]) + _num_tokens(n["kids"]) for n in canon)


def _edge(n: dict[str, Any]) -> str:
    return f"node {_short(n['edge'])}" + (f" (after {_short(n['prefix'])})" if n["prefix"] else "")


def _diff(mine: list[dict[str, Any]], want: list[dict[str, Any]], exact_locks: bool, times: bool) -> str:
    """What differs between two trees, in one line ("" when nothing does)."""
    if _draw(mine) != _draw(want):
        got_n, want_n = _num_tokens(mine), _num_tokens(want)
        if got_n > want_n:
            why = f"yours stores {got_n} tokens, {want_n} are expected: a prefix stored twice, or something not evicted?"
        elif got_n < want_n:
            why = f"yours stores {got_n} tokens, {want_n} are expected: tokens lost or not stored?"
        else:
            why = "the same tokens cut into different edges (a split where there should be none, or a missing one?)"
        return f"the tree is {_draw(mine)}, expected {_draw(want)}: {why}"
    fm, fw = _flat(mine), _flat(want)
    for path, w in fw.items():
        g = fm[path]
        if g["values"] != w["values"]:
            return f"{_edge(w)} holds values {list(g['values'])}, expected {list(w['values'])}"
    for path, w in fw.items():
        g = fm[path]
        if exact_locks and g["lock"] != w["lock"]:
            return f"{_edge(w)} has lock_ref {g['lock']}, expected {w['lock']}"
        if not exact_locks and (g["lock"] > 0) != (w["lock"] > 0):
            if w["lock"] > 0:
                return (f"{_edge(w)} has lock_ref {g['lock']}, but a running request uses it (its match went through "
                        f"this node or below): it must be locked")
            return f"{_edge(w)} has lock_ref {g['lock']}, but no running request uses it any more: it must be 0"
    if times:
        paths = list(fw)
        for a in paths:
            for b in paths:
                (ga, gb), (wa, wb) = (fm[a]["time"], fm[b]["time"]), (fw[a]["time"], fw[b]["time"])
                if (ga < gb) != (wa < wb) or (ga == gb) != (wa == wb):
                    rel = "after" if wa > wb else "before" if wa < wb else "at the same time as"
                    got = "after" if ga > gb else "before" if ga < gb else "at the same time as"
                    return (f"{_edge(fw[a])} should have been used {rel} {_edge(fw[b])} (last_access), "
                            f"but yours says {got} ({ga} vs {gb})")
    return ""


# ---- learner's pieces or the reference ------------------------------------------------------------------

def _tree_of(learner: Learner) -> Any:
    cls = learner.get("RadixTree")
    return call(cls, context="RadixTree()")


def _pieces(learner: Learner, own: Sequence[str], borrow: Sequence[str]) -> tuple[dict[str, Callable[..., Any]], str]:
    """The functions a check uses: ``own`` from the learner; each of ``borrow`` the learner's if it is right,
    else the reference (also put into the learner's module, whose other functions call it by name).
    Returns them and a note for the PASS message."""
    fns = {name: learner.get(name) for name in own}
    borrowed = []
    for name in borrow:
        mine = learner.find(name)
        lent = any(mine is ref for ref in REFERENCE.values())  # an earlier check of this run lent it already
        if mine is not None and not lent and _is_right(learner, name, mine):
            fns[name] = mine
        else:
            fns[name] = REFERENCE[name]
            borrowed.append(name)
            if learner.module is not None:
                setattr(learner.module, name, REFERENCE[name])
    if not borrowed:
        return fns, ""
    return fns, f" (with minikv's {', '.join(borrowed)}: yours {'is' if len(borrowed) == 1 else 'are'} not done yet)"


def _is_right(learner: Learner, name: str, fn: Callable[..., Any]) -> bool:
    try:
        if name == "split_node":
            _split_cases(learner, fn)
        else:
            fns = dict(REFERENCE, **{name: fn})
            _stream(_Trace(learner, fns, 24, times=True), random.Random(4), 30)
        return True
    except Exception:  # noqa: BLE001 - includes NotImplementedError: not written yet
        return False


def _count_hint(got: int, want: int, n: int) -> str:
    if got > want:
        return (f" (free exactly {n} when that many can go: a leaf longer than what is still needed is cut at "
                "its end, not removed whole)")
    return " (keep going while unlocked leaves remain, parents that become leaves included)"


# ---- the differential trace ------------------------------------------------------------------------------

class _Trace:
    """Drives the learner's tree and a RadixCache(num_blocks, 1, page_size=1) with the same requests."""

    def __init__(self, learner: Learner, fns: dict[str, Callable[..., Any]], num_blocks: int, times: bool,
                 label: str = "") -> None:
        self.fns, self.times, self.label = fns, times, label
        self.tree = _tree_of(learner)
        self.rc = RadixCache(num_blocks, 1, page_size=1)
        self.num_blocks = num_blocks
        self.steps: list[str] = []
        self.live: dict[str, tuple[list[int], list[int], Any, tuple[int, ...]]] = {}

    def where(self) -> str:
        before = "; ".join(self.steps[-4:-1])
        return (f"after {self.label}step {len(self.steps)} ({self.steps[-1]}) of a request stream on a "
                f"{self.num_blocks}-token pool" + (f" (before: {before})" if before else ""))

    def fail(self, text: str) -> None:
        raise CheckFailed(one_line(f"{text}, {self.where()}"))

    def _call(self, name: str, *args: Any) -> Any:
        return call(self.fns[name], *args, context=f"{name}, {self.where()}")

    def compare(self) -> None:
        diff = _diff(_canon_learner(self.tree), _canon_rc(self.rc), exact_locks=False, times=self.times)
        if diff:
            self.fail(diff)

    def match(self, tokens: list[int], what: str) -> tuple[list[int], Any, tuple[int, ...]]:
        self.steps.append(f"{what}: match_prefix(tree, {_short(tokens)})")
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
            self.fail(f"match_prefix(tree, {_short(tokens)}) {why}")
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
            self.fail(f"{call_name} returned a last_node whose path from the root is {_short(path)}, expected "
                      f"{_short(end)} (the matched prefix, ending exactly at that node)")

    def start(self, name: str, prompt: list[int], gen: list[int]) -> None:
        hit, node, end = self.match(prompt, f"{name} arrives")
        self._check_end(node, end, f"match_prefix(tree, {_short(prompt)})")
        self.steps[-1] += " + lock"
        self._call("lock", node)
        self.compare()
        need = len(prompt) - len(hit) + len(gen)
        if self.rc.num_allocatable < need:
            self.steps.append(f"{name} does not fit: unlock")
            self._call("unlock", node)
            self.rc.release(hit)
            self.compare()
            return
        short = need - len(self.rc.free_blocks())
        if short > 0:
            self.evict(short, f" to make room for {name}")
        self.live[name] = (prompt + gen, hit + self.rc.allocate(need), node, end)

    def finish(self, name: str) -> None:
        seq, table, node, _ = self.live.pop(name)
        self.steps.append(f"{name} finishes: insert(tree, {_short(seq)}, ...) + unlock")
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
        self._check_end(node, end, f"match_prefix(tree, {_short(tokens)})")
        self.rc.release(hit)  # RadixCache's match took references: give them back
        self.compare()

    def evict(self, k: int, why: str = "") -> None:
        self.steps.append(f"evict(tree, {k}){why}")
        before = _canon_learner(self.tree)
        cached = {b for b in range(self.num_blocks) if self.rc.is_cached(b)}
        got = self._call("evict", self.tree, k)
        self.rc.evict(k)
        want = sorted(cached - {b for b in range(self.num_blocks) if self.rc.is_cached(b)})
        if not isinstance(got, (list, tuple)):
            self.fail(f"evict returned {type(got).__name__}, expected the list of freed values")
        if sorted(got) != want:
            owner = {v: n for n in _flat(before).values() for v in n["values"]}
            locked = [owner[v] for v in got if v in owner and owner[v]["lock"] > 0]
            if locked:
                self.fail(f"evict(tree, {k}) freed values of {_edge(locked[0])}, which has lock_ref "
                          f"{locked[0]['lock']}: a running request uses it, so it must stay")
            if len(got) != len(want):
                self.fail(f"evict(tree, {k}) freed {len(got)} values, expected {len(want)}"
                          + _count_hint(len(got), len(want), k))
            self.fail(f"evict(tree, {k}) freed values {sorted(got)}, expected {want} (least recently used "
                      f"unlocked leaves first; the tree was {_draw(before)})")
        self.compare()


PREFIXES = ([], [1, 2, 3, 1, 2, 3, 0, 1], [1, 2, 3, 1, 3], [2, 2, 0, 3, 1, 1, 2])


def _stream(t: _Trace, rng: random.Random, num_ops: int, peeks: bool = True) -> None:
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


def _random_streams(learner: Learner, fns: dict[str, Callable[..., Any]], times: bool, peeks: bool = True) -> str:
    @forall(st.integers(12, 48), st.integers(0, 2**32 - 1), max_examples=25)
    def prop(num_blocks: int, seed: int) -> None:
        _stream(_Trace(learner, fns, num_blocks, times), random.Random(seed), 40, peeks)

    prop()
    return ""


# ---- twins: the learner's function and the reference on two copies of one tree --------------------------

def _twins(learner: Learner, build: Sequence[tuple[str, Any]]) -> tuple[Any, Any, Callable[[Any], Any]]:
    """Two identical trees of the learner's classes, built with the reference pieces; and a finder that maps
    a node of the second to the node at the same place in the first."""
    mine, ref = _tree_of(learner), _tree_of(learner)
    for tree in (mine, ref):
        value = 100
        for op, arg in build:
            if op == "insert":
                ref_insert(tree, arg, list(range(value, value + len(arg))))
                value += 10
            elif op == "match":
                ref_match_prefix(tree, arg)
            elif op == "lock":
                ref_lock(ref_match_prefix(tree, arg)[1])

    def same_place(node: Any) -> Any:
        path = []
        while node.parent is not None:
            path = list(node.tokens) + path
            node = node.parent
        n, pos = mine.root, 0
        while pos < len(path):
            n = n.children[path[pos]]
            pos += len(n.tokens)
        return n

    return mine, ref, same_place


def _expect_twins(mine: Any, ref: Any, what: str, exact_locks: bool = True, times: bool = True) -> None:
    diff = _diff(_canon_learner(mine), _canon_learner(ref), exact_locks=exact_locks, times=times)
    if diff:
        raise CheckFailed(one_line(f"after {what}: {diff}"))


# ---- 4.1 match with split ---------------------------------------------------------------------------------

ex41 = register(Exercise(
    "4.1", "match with split", MODULE, ("match_prefix", "split_node"),
    hint="walk from tree.root: child = node.children[tokens[pos]], count the agreeing tokens c; if c < "
         "len(child.tokens), upper = split_node(child, c) (upper takes child's place, child keeps the rest below "
         "it), stamp it and stop; else stamp the child, take its values and go on. Stamp every node of the path "
         "with the one t = tree.tick() of this call",
))


def _split_cases(learner: Learner, fn: Callable[..., Any]) -> None:
    mine, ref, _ = _twins(learner, [("insert", [1, 2, 3, 4]), ("insert", [1, 2, 3, 4, 5, 6]), ("insert", [7, 8])])
    for tree in (mine, ref):
        node = tree.root.children[1]
        node.lock_ref, node.last_access = 2, 5
    node = mine.root.children[1]
    below = node.children[5]
    upper = call(fn, node, 1, context="split_node(node [1 2 3 4], 1)")
    ref_split_node(ref.root.children[1], 1)
    what = "split_node(node [1 2 3 4] (lock_ref 2, last_access 5, one child [5 6]), k=1)"
    if not hasattr(upper, "tokens") or upper is node:
        raise CheckFailed(f"{what} returned {upper!r}, expected the new upper node (a new Node, not `node` itself)")
    if mine.root.children.get(1) is not upper:
        raise CheckFailed(f"after {what}: root.children[1] is not the node split_node returned; the new upper node "
                          "takes the old node's place under its parent")
    if node.parent is not upper or upper.children.get(2) is not node:
        raise CheckFailed(f"after {what}: the original node must stay, holding [2 3 4], as the only child of the new "
                          "upper node (whoever holds it, like a locked request, keeps the end of its path)")
    if node.children.get(5) is not below:
        raise CheckFailed(f"after {what}: the original node must keep its children (node [5 6])")
    _expect_twins(mine, ref, what)
    mine2, ref2, _ = _twins(learner, [("insert", [3, 1, 4, 1, 5, 9, 2, 6])])
    call(fn, mine2.root.children[3], 7, context="split_node(node [3 1 4 1 5 9 2 6], 7)")
    ref_split_node(ref2.root.children[3], 7)
    _expect_twins(mine2, ref2, "split_node(node [3 1 4 1 5 9 2 6], k=7)")


@ex41.check("split_node: the new upper node takes the first k tokens and the node's place")
def _split(learner: Learner) -> str:
    _split_cases(learner, learner.get("split_node"))
    return "both halves, links, lock_ref and last_access as expected"


def _expect_match(learner: Learner, fn: Callable[..., Any], build: Sequence[tuple[str, Any]],
                  tokens: list[int], times: bool = False) -> None:
    mine, ref, same_place = _twins(learner, build)
    what = f"match_prefix(tree, {_short(tokens)}) on the tree {_draw(_canon_learner(ref))}"
    got = call(fn, mine, list(tokens), context=what)
    want_values, want_node = ref_match_prefix(ref, tokens)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailed(one_line(f"{what} returned {type(got).__name__}, expected a (values, last_node) pair"))
    values, node = got
    if list(values) != want_values:
        raise CheckFailed(one_line(f"{what} returned values {list(values)}, expected {want_values} "
                                   f"({len(want_values)} tokens match)"))
    _expect_twins(mine, ref, what, times=times)
    if node is not same_place(want_node):
        expect = "tree.root (nothing matched)" if want_node is ref.root else (
            f"the node with edge {_short(want_node.tokens)} (where the match ends)")
        raise CheckFailed(one_line(f"{what} returned {node!r} as last_node, expected {expect}"))


@ex41.check("whole edges, a match ending inside an edge (split), a miss")
def _match_cases(learner: Learner) -> str:
    fn = learner.get("match_prefix")
    build = [("insert", [1, 2, 3, 4]), ("insert", [1, 2, 5, 6]), ("insert", [7])]
    _expect_match(learner, fn, build, [9, 1, 2])
    _expect_match(learner, fn, build, [1, 2, 5, 6, 7, 8])
    _expect_match(learner, fn, build, [1, 2, 5, 6])
    _expect_match(learner, fn, build, [1, 2, 3, 9])
    _expect_match(learner, fn, build, [1, 2, 3])
    _expect_match(learner, fn, build, [1, 5])
    _expect_match(learner, fn, build, [7, 7])
    _expect_match(learner, fn, build, [])
    return "values, last node and the split tree as expected"


@ex41.check("the access time is stamped on every node of the matched path")
def _match_times(learner: Learner) -> str:
    fn = learner.get("match_prefix")
    build = [("insert", [1, 2, 3, 4, 5, 6]), ("insert", [1, 2, 3, 7]), ("insert", [1, 2, 8]), ("insert", [9])]
    for tokens in ([1, 2, 3, 4, 5, 6], [1, 2, 3, 7, 0], [1, 2, 3, 4, 0], [1, 2, 8]):
        mine, ref, _ = _twins(learner, build)
        call(fn, mine, list(tokens), context=f"match_prefix(tree, {_short(tokens)})")
        t = mine.clock
        for path, n in _flat(_canon_learner(mine)).items():
            on_path = len(path) <= len(tokens) and list(path) == tokens[: len(path)]
            if on_path and n["time"] != t:
                raise CheckFailed(one_line(
                    f"after match_prefix(tree, {_short(tokens)}) on the tree {_draw(_canon_learner(ref))}, "
                    f"{_edge(n)} is on the matched path but has last_access {n['time']}, expected {t} (the "
                    f"t = tree.tick() of this call): stamp every node of the path, not only the last"))
        ref_match_prefix(ref, tokens)
        _expect_twins(mine, ref, f"match_prefix(tree, {_short(tokens)})")
    return "every node of the path stamped, the rest untouched"


@ex41.check("random request streams vs RadixCache(page_size=1): hits, splits, access order")
def _match_streams(learner: Learner) -> str:
    fns = dict(REFERENCE, match_prefix=learner.get("match_prefix"))
    _random_streams(learner, fns, times=True)
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
    mine, ref, _ = _twins(learner, build)
    values = [500 + i for i in range(len(tokens))]
    what = f"insert(tree, {_short(tokens)}, values) on the tree {_draw(_canon_learner(ref))}"
    got = call(fn, mine, list(tokens), list(values), context=what)
    want = ref_insert(ref, tokens, values)
    if got != want:
        raise CheckFailed(one_line(f"{what} returned {got!r}, expected {want} (how many leading tokens were there already)"))
    _expect_twins(mine, ref, what)


@ex42.check("into an empty tree, below a node, branching inside an edge")
def _insert_cases(learner: Learner) -> str:
    fn, note = _pieces(learner, ["insert"], ["split_node"])
    ins = fn["insert"]
    _expect_insert(learner, ins, [], [1, 2, 3])
    _expect_insert(learner, ins, [("insert", [1, 2, 3])], [1, 2, 3, 4, 5])
    _expect_insert(learner, ins, [("insert", [1, 2, 3, 4])], [1, 2, 7, 8])
    _expect_insert(learner, ins, [("insert", [1, 2, 3, 4]), ("insert", [1, 2, 7])], [1, 2, 9])
    _expect_insert(learner, ins, [("insert", [1, 2, 3, 4]), ("insert", [1, 2, 7])], [5, 1, 2])
    return "tree and return values as expected" + note


@ex42.check("what is already there is not stored again (nor split)")
def _insert_dupes(learner: Learner) -> str:
    fn, note = _pieces(learner, ["insert"], ["split_node"])
    ins = fn["insert"]
    build = [("insert", [1, 2, 3, 4]), ("insert", [1, 2, 7]), ("lock", [1, 2, 3, 4])]
    _expect_insert(learner, ins, build, [1, 2, 3, 4])
    _expect_insert(learner, ins, build, [1, 2, 3])
    _expect_insert(learner, ins, build, [1])
    _expect_insert(learner, ins, build, [1, 2])
    _expect_insert(learner, ins, build, [1, 2, 3, 4, 0])
    _expect_insert(learner, ins, build, [])
    return "duplicates skipped, locks untouched" + note


@ex42.check("random request streams vs RadixCache(page_size=1): return values, tokens stored, access order")
def _insert_streams(learner: Learner) -> str:
    fns, note = _pieces(learner, ["insert"], ["split_node", "match_prefix"])
    fns = dict(REFERENCE, **fns)
    _random_streams(learner, fns, times=True)
    return "every insert, tree and access order agree with minikv's RadixCache" + note


# ---- 4.3 lock and unlock ----------------------------------------------------------------------------------------

ex43 = register(Exercise(
    "4.3", "lock and unlock along the path", MODULE, ("lock", "unlock"),
    hint="lock: while node.parent is not None: node.lock_ref += 1; node = node.parent (unlock: -= 1). "
         "Count, do not just set a flag: two requests on one path lock it twice",
))

_LOCK_TREE = [("insert", [1, 2, 3, 4, 5]), ("insert", [1, 2, 3, 9]), ("insert", [1, 6]), ("insert", [7, 8])]


def _place(tree: Any, path: list[int]) -> Any:
    n, pos = tree.root, 0
    while pos < len(path):
        n = n.children[path[pos]]
        pos += len(n.tokens)
    return n


@ex43.check("lock(node) counts on every node from node up to the root; unlock undoes it")
def _lock_path(learner: Learner) -> str:
    lk, ul = learner.get("lock"), learner.get("unlock")
    mine, ref, _ = _twins(learner, _LOCK_TREE)
    steps = []
    for op, path in (("lock", [1, 2, 3, 4, 5]), ("lock", [1, 6]), ("unlock", [1, 2, 3, 4, 5]), ("lock", [1, 2, 3]),
                     ("unlock", [1, 6]), ("unlock", [1, 2, 3])):
        steps.append(f"{op}(node {_short(path)})")
        call(lk if op == "lock" else ul, _place(mine, path), context=steps[-1])
        (ref_lock if op == "lock" else ref_unlock)(_place(ref, path))
        _expect_twins(mine, ref, f"{', '.join(steps)} on the tree {_draw(_canon_learner(ref))}")
    return "counts along each path as expected, and back to 0"


@ex43.check("two locks on one path need two unlocks")
def _lock_counts(learner: Learner) -> str:
    lk, ul = learner.get("lock"), learner.get("unlock")
    mine, ref, _ = _twins(learner, _LOCK_TREE)
    steps = []
    for op, path in (("lock", [1, 2, 3, 9]), ("lock", [1, 2, 3, 9]), ("lock", [1, 2, 3, 4, 5]),
                     ("unlock", [1, 2, 3, 9]), ("unlock", [1, 2, 3, 4, 5]), ("unlock", [1, 2, 3, 9])):
        steps.append(f"{op}(node {_short(path)})")
        call(lk if op == "lock" else ul, _place(mine, path), context=steps[-1])
        (ref_lock if op == "lock" else ref_unlock)(_place(ref, path))
        _expect_twins(mine, ref, f"{', '.join(steps)}")
    return "counted, not flagged"


@ex43.check("random overlapping requests vs RadixCache(page_size=1): the same nodes locked")
def _lock_streams(learner: Learner) -> str:
    fns, note = _pieces(learner, ["lock", "unlock"], ["split_node", "match_prefix", "insert"])
    fns = dict(REFERENCE, **fns)
    _random_streams(learner, fns, times=False)
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
    mine, ref, _ = _twins(learner, build)
    what = f"evict(tree, {n}) on the tree {_draw(_canon_learner(ref))}"
    locked = [f"{_short(p)}" for p, node in _flat(_canon_learner(ref)).items() if node["lock"]]
    if locked:
        what += f" (locked: {', '.join(locked)})"
    before = _flat(_canon_learner(mine))
    got = call(fn, mine, n, context=what)
    want = ref_evict(ref, n)
    if not isinstance(got, (list, tuple)):
        raise CheckFailed(one_line(f"{what} returned {type(got).__name__}, expected the list of freed values"))
    if sorted(got) != sorted(want):
        owner = {v: node for node in before.values() for v in node["values"]}
        bad = [owner[v] for v in got if v in owner and owner[v]["lock"]]
        if bad:
            raise CheckFailed(one_line(f"{what} freed the values of {_edge(bad[0])}, which is locked (lock_ref "
                                       f"{bad[0]['lock']}): never evict what a running request uses"))
        if len(got) != len(want):
            raise CheckFailed(one_line(f"{what} freed {len(got)} values, expected {len(want)}: {sorted(want)}"
                                       + _count_hint(len(got), len(want), n)))
        raise CheckFailed(one_line(f"{what} freed {sorted(got)}, expected {sorted(want)} (the least recently used "
                                   "unlocked leaf first)"))
    _expect_twins(mine, ref, what)


@ex44.check("the least recently used unlocked leaf goes first")
def _evict_lru(learner: Learner) -> str:
    fn = learner.get("evict")
    _expect_evict(learner, fn, _EVICT_TREE, 2)
    _expect_evict(learner, fn, _EVICT_TREE, 5)
    _expect_evict(learner, fn, _EVICT_TREE + [("match", [7, 8, 9]), ("match", [1, 2, 5])], 2)
    return "leaves evicted in LRU order"


@ex44.check("a parent that becomes a leaf can go next; a locked node never")
def _evict_parent(learner: Learner) -> str:
    fn = learner.get("evict")
    _expect_evict(learner, fn, _EVICT_TREE, 8)
    _expect_evict(learner, fn, _EVICT_TREE, 9)
    _expect_evict(learner, fn, _EVICT_TREE + [("lock", [1, 2, 3, 4])], 9)
    _expect_evict(learner, fn, _EVICT_TREE + [("lock", [1, 2])], 9)
    _expect_evict(learner, fn, _EVICT_TREE + [("lock", [7, 8])], 3)
    return "parents re-examined, locked nodes kept"


@ex44.check("exactly num_tokens: the last leaf is cut at its end; fewer when no more can go")
def _evict_trim(learner: Learner) -> str:
    fn = learner.get("evict")
    _expect_evict(learner, fn, _EVICT_TREE, 1)
    _expect_evict(learner, fn, _EVICT_TREE, 3)
    _expect_evict(learner, fn, _EVICT_TREE, 0)
    _expect_evict(learner, fn, _EVICT_TREE + [("lock", [1, 2, 5, 6]), ("lock", [7, 8, 9])], 4)
    _expect_evict(learner, fn, [], 3)
    return "trimmed and capped as expected"


@ex44.check("random request streams under memory pressure vs RadixCache(page_size=1): the same tokens survive")
def _evict_streams(learner: Learner) -> str:
    fns, note = _pieces(learner, ["evict"], ["split_node", "match_prefix", "insert", "lock", "unlock"])
    fns = dict(REFERENCE, **fns)
    _random_streams(learner, fns, times=False)
    return "every eviction agrees with minikv's RadixCache" + note


# ---- 4.4's final check: the whole tree as a block-level prefix cache ---------------------------------------------

SALTS = (None, None, "tenant-b")


def _write(holds: dict[int, tuple[Any, tuple[int, ...]]], tokens: list[int], table: list[int], own: int,
           salt: Any, bs: int) -> None:
    """Record what the request's own blocks (from table index ``own`` on) hold: its prefix through each."""
    for i in range(own, cdiv(len(tokens), bs)):
        holds[table[i]] = (salt, tuple(tokens[: (i + 1) * bs]))


def _block_stream(cls: Any, num_blocks: int, bs: int, rng: random.Random, num_ops: int) -> int:
    """Engine-like use of ``cls(num_blocks, bs)`` and RadixCache(num_blocks, bs); returns the cached tokens seen."""
    desc = f"TreePrefixCache(num_blocks={num_blocks}, block_size={bs})"
    mine, ref = call(cls, num_blocks, bs, context=desc), RadixCache(num_blocks, bs)
    holds: dict[int, tuple[Any, tuple[int, ...]]] = {}  # block -> (salt, the prefix through it) written there
    live: list[tuple[list[int], list[int], list[int], Any, str, int]] = []
    seen: list[tuple[list[int], Any]] = []
    steps: list[str] = []
    total = 0

    def fail(text: str) -> None:
        before = "; ".join(steps[-4:-1])
        raise CheckFailed(one_line(f"{text}, at step {len(steps)} ({steps[-1]}) of a request stream on {desc}"
                                   + (f" (before: {before})" if before else "")))

    def mcall(name: str, *args: Any) -> Any:
        return call(getattr(mine, name), *args, context=f"{desc}.{name} at step {len(steps)} ({steps[-1]})")

    def compare() -> None:
        g, w = mcall("stats"), ref.stats()
        for field in ("num_cached", "num_evictable", "num_free"):
            if getattr(g, field) != getattr(w, field):
                fail(f"stats().{field} is {getattr(g, field)}, RadixCache's is {getattr(w, field)}")

    for n in range(num_ops):
        kind = rng.choices(["start", "again", "decode", "finish", "evict"], [30, 20, 20, 25, 5])[0]
        if kind in ("start", "again"):
            if kind == "again" and seen:
                tokens, salt = seen[rng.randrange(len(seen))]
                tokens = tokens[: rng.randint(1, len(tokens))] + [rng.randrange(4) for _ in range(rng.choice([1, 2, bs]))]
            else:
                tokens = list(PREFIXES[rng.randrange(len(PREFIXES))]) + [rng.randrange(4) for _ in range(rng.randint(1, 9))]
                salt = rng.choice(SALTS)
            steps.append(f"r{n} arrives: {_short(tokens)}" + (f" salt={salt!r}" if salt else ""))
            m, w = mcall("match", tokens, salt), ref.match(tokens, salt)
            if m.num_cached_tokens != w.num_cached_tokens:
                fail(f"match found {m.num_cached_tokens} cached tokens, RadixCache finds {w.num_cached_tokens}")
            for i, b in enumerate(m.block_ids):
                if holds.get(b) != (salt, tuple(tokens[: (i + 1) * bs])):
                    fail(f"hit block {i} (block id {b}) does not hold this prompt's tokens {i * bs}..{(i + 1) * bs - 1}")
            total += m.num_cached_tokens
            need = cdiv(len(tokens), bs) - len(m.block_ids)
            if need > ref.num_allocatable:
                mcall("release", list(m.block_ids))
                ref.release(w.block_ids)
                steps[-1] += " (does not fit)"
                compare()
                continue
            table, rtable = list(m.block_ids) + mcall("allocate", need), list(w.block_ids) + ref.allocate(need)
            _write(holds, tokens, table, len(m.block_ids), salt, bs)
            mcall("insert", tokens, table, salt)
            ref.insert(tokens, rtable, salt)
            live.append((tokens, table, rtable, salt, f"r{n}", len(m.block_ids)))
            seen.append((list(tokens), salt))
        elif kind == "decode" and live:
            tokens, table, rtable, salt, name, own = live[rng.randrange(len(live))]
            more = [rng.randrange(4) for _ in range(rng.randint(1, 5))]
            need = cdiv(len(tokens) + len(more), bs) - len(table)
            steps.append(f"{name} decodes {len(more)} tokens")
            if need > 0:
                if need > ref.num_allocatable:
                    continue
                new = mcall("allocate", need)
                table += new
                rtable += ref.allocate(need)
            tokens += more
            _write(holds, tokens, table, own, salt, bs)
            mcall("insert", tokens, table, salt)
            ref.insert(tokens, rtable, salt)
            seen.append((list(tokens), salt))
        elif kind == "finish" and live:
            tokens, table, rtable, salt, name, _ = live.pop(rng.randrange(len(live)))
            steps.append(f"{name} finishes")
            mcall("release", table)
            ref.release(rtable)
        elif kind == "evict":
            k = rng.randint(1, 3)
            steps.append(f"evict({k})")
            got, want = mcall("evict", k), ref.evict(k)
            if got != want:
                fail(f"evict({k}) returned {got}, RadixCache's {want}")
        else:
            continue
        compare()
    for tokens, table, rtable, _, name, _ in live:
        steps.append(f"{name} finishes")
        mcall("release", table)
        ref.release(rtable)
        compare()
    return total


def _tree_prefix_cache(learner: Learner) -> tuple[Any, str]:
    """The file's TreePrefixCache, running the learner's pieces (minikv's where theirs are not ready)."""
    _, note = _pieces(learner, [], ["split_node", "match_prefix", "insert", "lock", "unlock"])
    if learner.module is not None:
        setattr(learner.module, "evict", learner.get("evict"))
    return learner.get("TreePrefixCache"), note


@ex44.check("your tree as a block-level prefix cache (TreePrefixCache) vs RadixCache(num_blocks, block_size)")
def _as_prefix_cache(learner: Learner) -> str:
    cls, note = _tree_prefix_cache(learner)
    hits = 0

    @forall(st.integers(2, 4), st.integers(8, 20), st.integers(0, 2**32 - 1), max_examples=20)
    def prop(bs: int, num_blocks: int, seed: int) -> None:
        nonlocal hits
        hits += _block_stream(cls, num_blocks, bs, random.Random(seed), 40)

    prop()
    if hits == 0:
        raise AssertionError("the streams had no cache hits: they no longer exercise the cache")
    return ("request streams: same cached tokens per request and pool counts as RadixCache, hits hold the "
            "prompt's K/V" + note)


# ---- 4.4's final check: the learner's tree serves the engine ------------------------------------------------

ENGINE_BLOCK_SIZE = 4
ENGINE_NUM_BLOCKS = 24
ENGINE_MAX_TOKENS = 6
_SYSTEM = [(11 * i + 5) % 300 + 10 for i in range(18)]  # an 18-token "system prompt" of tiny-llama token ids
FOLLOW_UP = (70, 71)
ENGINE_ROUNDS: tuple[tuple[tuple[int, ...], ...], ...] = (
    (tuple(_SYSTEM + [40, 41, 42]),),                                       # all misses
    (tuple(_SYSTEM + [40, 41, 50, 51]), tuple(_SYSTEM + [60, 61, 62, 63, 64])),  # branch inside a block, and after it
    ((),),                                                                   # a follow-up turn of the first request
    tuple(tuple([200 + i] * 20) for i in range(3)),                         # strangers: the pool must evict
    (tuple(_SYSTEM + [40, 41, 50, 52]),),                                   # what is left after eviction
)


def engine_run(prefix_cache: Any) -> list[list[tuple[tuple[int, ...], int]]]:
    """Greedy (tokens, num_cached_tokens) per request of ENGINE_ROUNDS, one ``generate`` call per round.

    The ``()`` request is the first request's prompt + its answer + FOLLOW_UP (a second turn)."""
    from minikv import LLM, SamplingParams

    llm = LLM("tiny-llama", device="cpu", prefix_cache=prefix_cache, block_size=ENGINE_BLOCK_SIZE,
              num_blocks=ENGINE_NUM_BLOCKS)
    params = SamplingParams(max_tokens=ENGINE_MAX_TOKENS, temperature=0.0)
    rounds: list[list[tuple[tuple[int, ...], int]]] = []
    for prompts in ENGINE_ROUNDS:
        ids = [list(p) if p else list(ENGINE_ROUNDS[0][0]) + list(rounds[0][0][0]) + list(FOLLOW_UP) for p in prompts]
        outs = llm.generate([{"prompt_token_ids": p} for p in ids], params)
        rounds.append([(tuple(o.token_ids), int(o.num_cached_tokens)) for o in outs])
    return rounds


@shared
def reference_engine_run() -> list[list[tuple[tuple[int, ...], int]]]:
    """``engine_run("radix")``, computed once per grading session."""
    return engine_run("radix")


@ex44.check('serves LLM("tiny-llama") as its prefix cache, like prefix_cache="radix"', final=True)
def _engine(learner: Learner) -> str:
    cls, note = _tree_prefix_cache(learner)
    try:
        want = reference_engine_run()
    except InvalidRequestError as exc:
        raise CheckFailed(one_line(f"this minikv's engine cannot run prefix_cache='radix' yet ({exc}); update minikv")) from None
    summary = expect_same_engine_runs(lambda: engine_run(lambda num_blocks, block_size: cls(num_blocks, block_size)),
                                      want, "your TreePrefixCache", "prefix_cache='radix'")
    return summary + note


__all__ = ["ENGINE_ROUNDS", "engine_run", "reference_engine_run", "REFERENCE", "ref_evict", "ref_insert", "ref_lock", "ref_match_prefix", "ref_split_node", "ref_unlock"]

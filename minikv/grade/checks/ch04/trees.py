"""Minikv's version of each chapter 04 piece, written on the learner's own ``Node`` class; trees as plain data
and what differs between two, in one line; twins (two copies of one tree of the learner's classes, one
changed by the learner's function, one by the reference) for the hand-made cases."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any

from minikv.grade import compare
from minikv.grade.compare import CheckFailed, call, one_line
from minikv.grade.runner import Learner
from minikv.prefix import RadixCache

MODULE = "ch04_radix_tree"


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


def all_nodes(root: Any) -> list[Any]:
    out, stack = [], list(root.children.values())
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.children.values())
    return out


def ref_evict(tree: Any, num_tokens: int) -> list[int]:
    heap = [(n.last_access, i, n) for i, n in enumerate(all_nodes(tree.root)) if not n.children and not n.lock_ref]
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


def short(tokens: Sequence[Any], limit: int = 8) -> str:
    """``[1 2 3]``: a token run as the tree drawings show it (:func:`minikv.grade.compare.short`)."""
    return compare.short(tokens, limit, sep=" ")


def canon_learner(tree: Any) -> list[dict[str, Any]]:
    """The learner's tree as sorted plain data; CheckFailed on a broken link (wrong key, parent, lengths)."""
    seen: set[int] = set()

    def walk(node: Any, prefix: tuple[int, ...]) -> list[dict[str, Any]]:
        kids = []
        children = getattr(node, "children", None)
        if not isinstance(children, dict):
            raise CheckFailed(f"node {short(prefix)}'s children is a {type(children).__name__}, expected a dict")
        for key, child in children.items():
            if id(child) in seen or len(seen) > 5000:
                raise CheckFailed("your tree has a cycle (a node is its own descendant, or appears twice)")
            seen.add(id(child))
            tokens, values = list(getattr(child, "tokens", [])), list(getattr(child, "values", []))
            where = f"the node with edge {short(tokens)} after {short(prefix)}"
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


def canon_rc(rc: RadixCache) -> list[dict[str, Any]]:
    def conv(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(({"edge": tuple(n["tokens"]), "values": tuple(n["block_ids"]), "lock": n["lock_ref"],
                        "time": n["last_access"], "kids": conv(n["children"])} for n in nodes),
                      key=lambda n: n["edge"][0])

    trees = rc.to_dict()
    return conv(trees[0]["children"]) if trees else []


def flatten(canon: list[dict[str, Any]], prefix: tuple[int, ...] = ()) -> dict[tuple[int, ...], dict[str, Any]]:
    out: dict[tuple[int, ...], dict[str, Any]] = {}
    for n in canon:
        path = prefix + n["edge"]
        out[path] = dict(n, prefix=prefix)
        out.update(flatten(n["kids"], path))
    return out


def draw(canon: list[dict[str, Any]]) -> str:
    """``(1 2 (3 4) (5))``: each node's edge, its children in parentheses."""
    if not canon:
        return "(empty)"
    return " ".join("(" + " ".join(map(str, n["edge"])) + (" " + draw(n["kids"]) if n["kids"] else "") + ")"
                    for n in canon)


def num_tokens(canon: list[dict[str, Any]]) -> int:
    return sum(len(n["edge"]) + num_tokens(n["kids"]) for n in canon)


def node_name(n: dict[str, Any]) -> str:
    return f"node {short(n['edge'])}" + (f" (after {short(n['prefix'])})" if n["prefix"] else "")


def tree_diff(mine: list[dict[str, Any]], want: list[dict[str, Any]], exact_locks: bool, times: bool) -> str:
    """What differs between two trees, in one line ("" when nothing does)."""
    if draw(mine) != draw(want):
        got_n, want_n = num_tokens(mine), num_tokens(want)
        if got_n > want_n:
            why = f"yours stores {got_n} tokens, {want_n} are expected: a prefix stored twice, or something not evicted?"
        elif got_n < want_n:
            why = f"yours stores {got_n} tokens, {want_n} are expected: tokens lost or not stored?"
        else:
            why = "the same tokens cut into different edges (a split where there should be none, or a missing one?)"
        return f"the tree is {draw(mine)}, expected {draw(want)}: {why}"
    fm, fw = flatten(mine), flatten(want)
    for path, w in fw.items():
        g = fm[path]
        if g["values"] != w["values"]:
            return f"{node_name(w)} holds values {list(g['values'])}, expected {list(w['values'])}"
    for path, w in fw.items():
        g = fm[path]
        if exact_locks and g["lock"] != w["lock"]:
            why = ""
            if g["lock"] == 1 and w["lock"] > 1:
                why = f" ({w['lock']} requests lock it: keep a count, not a flag)"
            elif g["lock"] == 0 and any(fm[p]["lock"] for p in fm if p[:len(path)] == path and p != path):
                why = " (a node below it is locked: lock every node from the node up to the root)"
            return f"{node_name(w)} has lock_ref {g['lock']}, expected {w['lock']}{why}"
        if not exact_locks and (g["lock"] > 0) != (w["lock"] > 0):
            if w["lock"] > 0:
                return (f"{node_name(w)} has lock_ref {g['lock']}, but a running request uses it (its match went through "
                        f"this node or below): it must be locked")
            return f"{node_name(w)} has lock_ref {g['lock']}, but no running request uses it any more: it must be 0"
    if times:
        paths = list(fw)
        for a in paths:
            for b in paths:
                (ga, gb), (wa, wb) = (fm[a]["time"], fm[b]["time"]), (fw[a]["time"], fw[b]["time"])
                if (ga < gb) != (wa < wb) or (ga == gb) != (wa == wb):
                    rel = "after" if wa > wb else "before" if wa < wb else "at the same time as"
                    got = "after" if ga > gb else "before" if ga < gb else "at the same time as"
                    return (f"{node_name(fw[a])} should have been used {rel} {node_name(fw[b])} (last_access), "
                            f"but yours says {got} ({ga} vs {gb})")
    return ""


def tree_of(learner: Learner) -> Any:
    cls = learner.get("RadixTree")
    return call(cls, context="RadixTree()")


def evict_problem(got: Any, want: Sequence[int], before: list[dict[str, Any]], n: int) -> str:
    """What is wrong with ``got``, the values ``evict(tree, n)`` freed from the tree ``before`` (as data), or ""."""
    if not isinstance(got, (list, tuple)):
        return f"returned {type(got).__name__}, expected the list of freed values"
    if sorted(got) == sorted(want):
        return ""
    owner = {v: node for node in flatten(before).values() for v in node["values"]}
    locked = [owner[v] for v in got if v in owner and owner[v]["lock"]]
    if locked:
        return (f"freed the values of {node_name(locked[0])}, which is locked (lock_ref {locked[0]['lock']}): "
                "never evict what a running request uses")
    if len(got) > len(want):
        why = (f"free exactly {n} when that many can go: a leaf longer than what is still needed is cut at its "
               "end, not removed whole")
    elif len(got) < len(want):
        why = "keep going while unlocked leaves remain, parents that become leaves included"
    else:
        return f"freed {sorted(got)}, expected {sorted(want)} (the least recently used unlocked leaf first)"
    return f"freed {len(got)} values, expected {len(want)}: {sorted(want)} ({why})"


# ---- twins: the learner's function and the reference on two copies of one tree --------------------------

def twins(learner: Learner, build: Sequence[tuple[str, Any]]) -> tuple[Any, Any, Callable[[Any], Any]]:
    """Two identical trees of the learner's classes, built with the reference pieces; and a finder that maps
    a node of the second to the node at the same place in the first."""
    mine, ref = tree_of(learner), tree_of(learner)
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


def expect_twins(mine: Any, ref: Any, what: str, exact_locks: bool = True, times: bool = True) -> None:
    diff = tree_diff(canon_learner(mine), canon_learner(ref), exact_locks=exact_locks, times=times)
    if diff:
        raise CheckFailed(one_line(f"after {what}: {diff}"))


def node_at(tree: Any, path: list[int]) -> Any:
    n, pos = tree.root, 0
    while pos < len(path):
        n = n.children[path[pos]]
        pos += len(n.tokens)
    return n


def split_cases(learner: Learner, fn: Callable[..., Any]) -> None:
    mine, ref, _ = twins(learner, [("insert", [1, 2, 3, 4]), ("insert", [1, 2, 3, 4, 5, 6]), ("insert", [7, 8])])
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
    expect_twins(mine, ref, what)
    mine2, ref2, _ = twins(learner, [("insert", [3, 1, 4, 1, 5, 9, 2, 6])])
    call(fn, mine2.root.children[3], 7, context="split_node(node [3 1 4 1 5 9 2 6], 7)")
    ref_split_node(ref2.root.children[3], 7)
    expect_twins(mine2, ref2, "split_node(node [3 1 4 1 5 9 2 6], k=7)")

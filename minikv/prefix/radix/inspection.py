"""Inspection: check every invariant from scratch, and show the trees as data, text or a graph.

Read-only views of a :class:`~minikv.prefix.radix.RadixCache`, for tests,
notebooks and debugging. ``check_invariants`` recounts what the other layers
keep incrementally (the invariants listed in the package docstring) and
names the first one that does not hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from minikv.prefix.radix.locks import RadixLocks
from minikv.prefix.radix.node import RadixNode, holder_above, short_tokens


class RadixInspection(RadixLocks):
    """``check_invariants``, ``to_dict``, ``render`` and ``to_dot`` of a radix cache."""

    def check_invariants(self) -> None:
        """Recompute every count from scratch and raise AssertionError on a mismatch (for tests)."""
        bs, ref = self.block_size, self._ledger.ref_count
        deepest: dict[int, RadixNode] = {}
        owner: dict[int, RadixNode] = {}
        lock: dict[RadixNode, int] = {}
        order = list(self.nodes())
        for node in order:
            par = node.parent
            assert par is not None and node.alive
            if node.start != par.end or not node.tokens or len(node.tokens) % self.page_size:
                raise AssertionError(f"{node}: bad span or length")
            if par.children.get(node.tokens[: self.page_size]) is not node:
                raise AssertionError(f"{node}: not under its page key")
            ranges = (node.end - 1) // bs - node.start // bs + 1
            if len(node.block_ids) != ranges:
                raise AssertionError(f"{node}: {len(node.block_ids)} blocks for {ranges} ranges")
            first = node.block_ids[0]
            shares = bool(node.start % bs) and holder_above(par, first) is not None
            if shares != node.shares_first_block:
                raise AssertionError(f"{node}: shares_first_block is stale")
            for b in node.block_ids:
                deepest[b] = node  # parents come first, so the last writer is the deepest
            for b in node.owned_blocks:
                if b in owner:
                    raise AssertionError(f"block {b} owned by {owner[b]} and {node}")
                owner[b] = node
        for node in reversed(order):  # children before parents
            direct = sum(ref(b) for b in node.block_ids if deepest[b] is node)
            direct += sum(1 for _, at in self._pins.values() if at is node)
            lock[node] = lock.get(node, 0) + direct
            par = node.parent
            if par is not None and not par.is_root:
                lock[par] = lock.get(par, 0) + lock[node]
        if deepest != self._deepest or set(owner) != set(deepest):
            raise AssertionError("deepest-node map is stale")
        for node in order:
            if node.lock_ref != lock[node]:
                raise AssertionError(f"{node}: lock_ref should be {lock[node]}")
        evictable = sum(n.num_owned for n in order if n.lock_ref == 0)
        if evictable != self._num_evictable:
            raise AssertionError(f"num_evictable is {self._num_evictable}, should be {evictable}")
        for dst, (src, node) in self._pins.items():
            if not node.alive or src not in node.block_ids or ref(dst) < 1:
                raise AssertionError(f"copy pin {dst} <- {src} at {node} is stale")
        self._ledger.check_invariants()
        free = set(self._ledger.free_ids())
        expect_free = {b for b in range(self.num_blocks) if not ref(b) and b not in deepest}
        if free != expect_free:
            raise AssertionError(f"free list {sorted(free)} should be {sorted(expect_free)}")
        queued = {id(e[3]) for e in self._heap if e[3].alive}
        for node in order:
            if not node.children and not node.lock_ref and id(node) not in queued:
                raise AssertionError(f"evictable leaf {node} is not in the heap")
        if self._num_nodes != len(order):
            raise AssertionError("node count is stale")

    def to_dict(self) -> list[dict[str, Any]]:
        """The trees as plain data (one dict per salt), e.g. to draw in a notebook."""

        def node_dict(node: RadixNode) -> dict[str, Any]:
            return {
                "id": node.id,
                "tokens": list(node.tokens),
                "start": node.start,
                "block_ids": list(node.block_ids),
                "shares_first_block": node.shares_first_block,
                "lock_ref": node.lock_ref,
                "last_access": node.last_access,
                "hit_count": node.hit_count,
                "children": [node_dict(c) for c in node.children.values()],
            }

        return [
            {
                "salt": salt,
                "extra_keys": list(extra),
                "children": [node_dict(c) for c in root.children.values()],
            }
            for (salt, extra), root in self._roots.items()
        ]

    def render(self, decode: Callable[[list[int]], str] | None = None, max_tokens: int = 8) -> str:
        """The trees as ASCII art, one line per node.

        Each line: the edge's tokens (``decode`` turns them into text if
        given), its positions, its blocks (``~b``: shared with the parent,
        owned by it), ``lock_ref``, last access time and hit count.
        """
        lines: list[str] = []

        def label(node: RadixNode) -> str:
            toks = list(node.tokens)
            if decode is not None:
                text = repr(decode(toks))
            else:
                text = short_tokens(toks, max_tokens)
            blocks = [str(b) for b in node.block_ids]
            if node.shares_first_block:
                blocks[0] = "~" + blocks[0]
            return (
                f"[{text}] @{node.start}..{node.end} blocks=[{','.join(blocks)}] "
                f"lock={node.lock_ref} t={node.last_access} hits={node.hit_count}"
            )

        def walk(node: RadixNode, indent: str) -> None:
            kids = list(node.children.values())
            for i, child in enumerate(kids):
                last = i == len(kids) - 1
                lines.append(indent + ("└── " if last else "├── ") + label(child))
                walk(child, indent + ("    " if last else "│   "))

        for (salt, extra), root in self._roots.items():
            lines.append(f"root salt={salt!r}" + (f" extra_keys={extra!r}" if extra else ""))
            walk(root, "")
        return "\n".join(lines) if lines else "(empty)"

    def to_dot(self) -> str:
        """The trees in Graphviz dot syntax (``graphviz.Source(cache.to_dot())``)."""
        out = ["digraph radix {", "  node [shape=box, fontname=monospace];"]
        for k, ((salt, _), root) in enumerate(self._roots.items()):
            name = repr(salt).replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'  r{k} [label="salt={name}", shape=ellipse];')
            stack = [(f"r{k}", c) for c in root.children.values()]
            while stack:
                up, node = stack.pop()
                style = ", style=filled, fillcolor=lightpink" if node.lock_ref else ""
                label = short_tokens(node.tokens, 8)
                label += f"\\nblocks {node.block_ids}\\nlock {node.lock_ref}"
                out.append(f'  n{node.id} [label="{label}"{style}];')
                out.append(f"  {up} -> n{node.id};")
                stack.extend((f"n{node.id}", c) for c in node.children.values())
        out.append("}")
        return "\n".join(out)


__all__ = ["RadixInspection"]

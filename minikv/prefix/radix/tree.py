"""The tree itself: walk down a prompt, split an edge, hang a new leaf, read the longest prefix.

The middle layer of :class:`~minikv.prefix.radix.RadixCache`. Every change
of shape here keeps the lock and eviction counts of :mod:`.locks` right: a
split hands the upper part the locks of the blocks only it uses, a new leaf
starts with one lock per reference its blocks already have.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from minikv.errors import InvalidRequestError
from minikv.prefix.base import as_token_ids
from minikv.prefix.radix.locks import RadixLocks
from minikv.prefix.radix.node import (
    InsertResult,
    Namespace,
    RadixNode,
    common_len,
    holder_above,
    make_namespace,
)


class RadixTree(RadixLocks):
    """Walk, split, insert and prefix lookup over the trees of a radix cache."""

    _clock: int  # logical time: one tick per match or insert

    def num_tree_tokens(self) -> int:
        """Token ids stored on all edges: each distinct cached prefix counts once."""
        return sum(len(n.tokens) for n in self.nodes())

    def longest_prefix(
        self,
        token_ids: Sequence[int],
        salt: str | None = None,
        *,
        extra_keys: Sequence[Hashable] = (),
    ) -> int:
        """Length of the longest prefix of ``token_ids`` stored in the tree, token-exact.

        No last-token rule, no page rounding, no side effects (nothing is
        locked, split or stamped): for statistics.
        """
        tokens = as_token_ids(token_ids)
        node = self._roots.get(make_namespace(salt, extra_keys))
        pos, n, p = 0, len(tokens), self.page_size
        while node is not None and pos < n:
            child = node.children.get(tuple(tokens[pos : pos + p])) if pos + p <= n else None
            if child is None:
                if p > 1:  # the query's next page may still agree with a child in part
                    kids = node.children.values()
                    pos += max((common_len(c.tokens, tokens, pos, n) for c in kids), default=0)
                break
            c = common_len(child.tokens, tokens, pos, n)
            pos += c
            node = child if c == len(child.tokens) else None
        return pos

    # ------------------------------------------------------------------ match

    def _walk(
        self, root: RadixNode, tokens: list[int], limit: int
    ) -> tuple[list[RadixNode], int, tuple[RadixNode, int] | None]:
        """Follow ``tokens[:limit]`` down in whole pages.

        Returns the nodes passed whole, the number of tokens matched, and
        ``(node, k)`` when the match ends ``k`` tokens into ``node``'s edge.
        """
        path: list[RadixNode] = []
        node, pos, p = root, 0, self.page_size
        while pos + p <= limit:
            child = node.children.get(tuple(tokens[pos : pos + p]))
            if child is None:
                break
            c = common_len(child.tokens, tokens, pos, limit)
            c -= c % p  # >= p: the first page is the key
            if c < len(child.tokens):
                return path, pos + c, (child, c)
            path.append(child)
            node, pos = child, pos + c
        return path, pos, None

    def _match_path(self, root: RadixNode, tokens: list[int], length: int) -> tuple[list[RadixNode], list[int]]:
        """The nodes of the first ``length`` tokens (splitting the last edge there) and their blocks.

        Stamps the path's access time and hit count. The blocks come one per
        block range of the prefix, the last one possibly only partly matched.
        """
        path, _, edge = self._walk(root, tokens, length)
        if edge is not None:
            path.append(self._split(*edge))
        self._clock += 1
        for node in path:
            node.last_access = self._clock
            node.hit_count += 1
        bs = self.block_size
        by_range: list[int] = [-1] * (-(-length // bs))
        for node in path:  # deeper nodes overwrite: their copy of a block range is fuller
            first = node.start // bs
            for i, b in enumerate(node.block_ids[: len(by_range) - first]):
                by_range[first + i] = b
        return path, by_range

    def _split(self, node: RadixNode, k: int) -> RadixNode:
        """Cut ``node``'s edge after ``k`` tokens; returns the new upper node.

        The lower part keeps ``node`` (its children, heap entries and
        deepest-node links stay valid). Blocks only the upper part uses move
        their locks up to it.
        """
        bs, start = self.block_size, node.start
        mid = start + k
        first = start // bs
        upper_blocks = node.block_ids[: (mid - 1) // bs - first + 1]
        lower_blocks = node.block_ids[mid // bs - first :]
        upper_only = upper_blocks[:-1] if mid % bs else upper_blocks
        if node.lock_ref == 0:
            self._num_evictable -= node.num_owned
        upper = RadixNode(
            next(self._ids), node.tokens[:k], start, upper_blocks, node.parent,
            node.shares_first_block,
        )  # fmt: skip
        upper.lock_ref = node.lock_ref
        upper.last_access, upper.hit_count = node.last_access, node.hit_count
        node.lock_ref -= sum(self._ledger.ref_count(b) for b in upper_only)
        for b in upper_only:
            self._deepest[b] = upper
        node.tokens, node.start, node.block_ids = node.tokens[k:], mid, lower_blocks
        node.shares_first_block = mid % bs != 0
        assert node.parent is not None
        node.parent.children[upper.tokens[: self.page_size]] = upper
        upper.children[node.tokens[: self.page_size]] = node
        node.parent = upper
        self._num_nodes += 1
        if upper.lock_ref == 0:
            self._num_evictable += upper.num_owned
        if node.lock_ref == 0:
            self._num_evictable += node.num_owned
            self._maybe_push(node)
        return upper

    # ----------------------------------------------------------------- insert

    def _insert_tokens(self, ns: Namespace, tokens: list[int], n: int, ids: list[int]) -> InsertResult:
        """Add ``tokens[:n]`` (whole pages, ``n > 0``) to the tree of ``ns``, pointing at ``ids``.

        Walks the existing path, splitting an edge where the sequence branches
        off, and hangs the rest below it as one new leaf.
        """
        p = self.page_size
        root = self._roots.get(ns)
        if root is None:
            root = self._roots[ns] = RadixNode(0, (), 0, [], None)
            root.namespace = ns
        self._clock += 1
        node, pos = root, 0
        while pos < n:
            child = node.children.get(tuple(tokens[pos : pos + p]))
            if child is None:
                new = self._add_leaf(node, tuple(tokens[pos:n]), pos, ids)
                return InsertResult(pos, n - pos, new.num_owned)
            c = common_len(child.tokens, tokens, pos, n)
            c -= c % p
            if c < len(child.tokens):
                if pos + c == n:  # the sequence ends inside this edge: all of it is there
                    child.last_access = self._clock
                    self._maybe_push(child)
                    return InsertResult(n, 0, 0)
                child = self._split(child, c)
            child.last_access = self._clock
            self._maybe_push(child)
            node, pos = child, pos + c
        return InsertResult(n, 0, 0)

    def _add_leaf(
        self, parent: RadixNode, tokens: tuple[int, ...], start: int, ids: list[int]
    ) -> RadixNode:
        """Hang a leaf for ``tokens`` (from position ``start``) below ``parent``, on ``ids``."""
        bs = self.block_size
        ref = self._ledger.ref_count
        blocks = ids[start // bs : (start + len(tokens) - 1) // bs + 1]
        # Starting mid-block, the caller's block may already back an ancestor (the
        # caller's own earlier insert): then the leaf shares it. Any other cached block is an error.
        holder = self._deepest.get(blocks[0]) if start % bs else None
        shares = holder is not None and holder_above(parent, blocks[0]) is holder
        for i, b in enumerate(blocks):
            if b in self._deepest and not (i == 0 and shares):
                raise InvalidRequestError(
                    f"block {b} is cached for other tokens than positions {start}.. of this "
                    f"sequence; pass the sequence's own tokens, block table and salt"
                )
        leaf = RadixNode(next(self._ids), tokens, start, blocks, parent, shares)
        leaf.last_access = self._clock
        parent.children[tokens[: self.page_size]] = leaf
        self._num_nodes += 1
        for b in blocks:
            self._deepest[b] = leaf
        leaf.lock_ref = sum(ref(b) for b in blocks)
        if leaf.lock_ref == 0:
            self._num_evictable += leaf.num_owned
            self._maybe_push(leaf)
        if not parent.is_root:
            # Holds on new blocks lock every ancestor; a shared first block's holds were
            # counted from the ancestor that holds it up, and now also lock the nodes between.
            pending = {parent: leaf.lock_ref}
            if holder is not None and shares:
                pending[holder] = pending.get(holder, 0) - ref(blocks[0])
            self._propagate(pending)
        return leaf


__all__ = ["RadixTree"]

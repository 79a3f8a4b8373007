"""A radix-tree prefix cache (SGLang's RadixAttention) behind the same API as the hash cache.

SGLang (Zheng et al., arXiv 2312.07104) keeps every cached prefix in one
radix tree: each edge is a run of token ids together with where their K/V
live; a node's children are keyed by the first token (or first *page*) of
their run. Finding the longest cached prefix is one walk from the root;
requests that share a system prompt share its path.

**Pages.** ``page_size`` is the granularity of the tree's keys and matches:

- ``page_size == block_size`` (the default): runs are whole blocks, a match is
  a whole number of blocks. On any request stream without eviction it hits
  exactly what :class:`~minikv.prefix.BlockHashCache` hits.
- ``page_size == 1``: token-granular, as SGLang runs by default. The tree
  finds the true longest common prefix with every earlier request, even one
  that ends in the middle of a block.

**Partly shared blocks** (``page_size < block_size``). The engine can share
only whole blocks, by pointer. So a hit of ``L`` tokens with ``r = L %
block_size > 0`` is served as: the ``L // block_size`` full blocks shared by
pointer, plus a *fresh* block that ``match`` allocates for the caller, with
``Match.copy_from_block`` (the tree's block holding tokens ``L - r .. L - 1``)
and ``Match.copy_tokens = r``. The engine copies those ``r`` slots into the
fresh block before it runs the model (copy-on-write of the last, partial
block), e.g. ``kv[:, :, dst, :r] = kv[:, :, src, :r]`` on the pool tensor, and
computes from token ``L`` on. The copied tokens count as cached: they need no
recompute. Until the copy has surely happened (the caller ``insert``s or
``release``s that fresh block) the source is *pinned*: the node where the
match ended stays locked. With ``partial_copy=False`` a hit is cut down to
whole blocks instead, while the tree still indexes every token
(``longest_prefix``).

In this paged form several nodes on one path can point to the *same* block:
a node that starts mid-block may share its first block with an ancestor (the
same request wrote both). A block belongs to (is freed with) the shallowest
node that points to it.

**Locks.** A node with ``lock_ref > 0`` is in use at or below it: it is never
evicted. SGLang counts one lock per running request on every node of its
path. Here the engine only names *blocks* (``match`` hands them out,
``release`` takes them back), so each reference a running request holds on a
cached block is one lock on the path from the deepest node using that block
up to the root (for a full block that node is on the request's own path),
and each copy pin one lock from the node where its match ended. The counts
differ from SGLang's, but are zero exactly when nothing in the subtree is in
use, which is all eviction reads. A block a request allocated that never
entered the tree goes back to the free list on ``release``; a block in the
tree is freed only when its node is evicted.

**Eviction.** Only unlocked leaves are evictable. They wait in a heap ordered
by an :mod:`~minikv.prefix.policies` policy (LRU by default, LFU); stale
entries are skipped when popped. Evicting a leaf frees the blocks it owns,
then its parent may become an evictable leaf. When fewer blocks are needed
than a leaf owns, only the leaf's tail is cut off. Every ``match`` and
``insert`` stamps the access time on its whole path, not only the leaf.

**Salts.** One tree per ``(salt, extra_keys)``: different salts never share.

An engine uses it exactly like :class:`~minikv.prefix.BlockHashCache`
(``match`` -> ``allocate`` the rest -> run -> ``insert`` -> ``release``), plus
the copy when ``Match.copy_from_block`` is set.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from minikv.errors import BlockAllocatorError, InvalidRequestError, KVCacheFull
from minikv.prefix.base import CacheStats, Match, PrefixCacheError, _check_sizes, as_block_ids
from minikv.prefix.policies import EvictionPolicy, resolve_policy

Namespace = tuple[Hashable, tuple[Hashable, ...]]
"""``(salt, extra_keys)``: which tree a request's tokens live in."""


@dataclass(frozen=True)
class InsertResult:
    """What an ``insert`` did, in tokens and blocks.

    ``prefix_len``: tokens already in the tree (SGLang's return value);
    ``new_tokens``: tokens added; ``new_blocks``: blocks that became cached.
    """

    prefix_len: int
    new_tokens: int
    new_blocks: int


class RadixNode:
    """One edge of the tree and the node it leads to.

    ``tokens`` are the token ids of the edge, at positions ``start .. end - 1``
    of every sequence through it. ``block_ids[i]`` is the block holding
    positions of block range ``start // block_size + i``; when the node starts
    mid-block and its first block also backs an ancestor
    (``shares_first_block``), the ancestor owns that block.
    """

    __slots__ = (
        "id", "tokens", "start", "block_ids", "shares_first_block", "parent", "children",
        "lock_ref", "last_access", "hit_count", "alive", "namespace",
    )  # fmt: skip

    def __init__(
        self,
        node_id: int,
        tokens: tuple[int, ...],
        start: int,
        block_ids: list[int],
        parent: RadixNode | None,
        shares_first_block: bool = False,
    ) -> None:
        self.id = node_id
        self.tokens = tokens
        self.start = start
        self.block_ids = block_ids
        self.shares_first_block = shares_first_block
        self.parent = parent
        self.children: dict[tuple[int, ...], RadixNode] = {}
        self.lock_ref = 0
        self.last_access = 0
        self.hit_count = 0
        self.alive = True
        self.namespace: Namespace | None = None  # set on roots only

    @property
    def end(self) -> int:
        """Position just past the edge's last token."""
        return self.start + len(self.tokens)

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def owned_blocks(self) -> list[int]:
        """The blocks freed when this node is evicted."""
        return self.block_ids[1:] if self.shares_first_block else self.block_ids

    @property
    def num_owned(self) -> int:
        return len(self.block_ids) - self.shares_first_block

    def __repr__(self) -> str:
        return (
            f"RadixNode(id={self.id}, span={self.start}..{self.end}, blocks={self.block_ids}, "
            f"lock_ref={self.lock_ref})"
        )


def _as_tokens(token_ids: Sequence[int]) -> list[int]:
    try:
        return [operator.index(t) for t in token_ids]
    except TypeError as e:
        raise InvalidRequestError(f"token ids must be integers: {e}") from None


def _common_len(edge: tuple[int, ...], tokens: list[int], pos: int, end: int) -> int:
    """How many leading tokens of ``edge`` equal ``tokens[pos:end]``."""
    n = min(len(edge), end - pos)
    i = 0
    while i < n and edge[i] == tokens[pos + i]:
        i += 1
    return i


def _short(tokens: list[int], n: int) -> str:
    """The first ``n`` token ids, space-separated, "…" if there are more."""
    return " ".join(map(str, tokens[:n])) + (" …" if len(tokens) > n else "")


def _namespace(salt: Hashable, extra_keys: Sequence[Hashable]) -> Namespace:
    ns = (salt, tuple(extra_keys))
    try:
        hash(ns)
    except TypeError:
        raise InvalidRequestError(
            f"a cache salt and extra keys must be hashable (str, int, bytes, tuples), got "
            f"{salt!r} and {extra_keys!r}"
        ) from None
    return ns


class RadixCache:
    """A :class:`~minikv.prefix.PrefixCache` over one radix tree per salt (SGLang style).

    Owns blocks ``0 .. num_blocks - 1``: each is *free*, *held* by a running
    request (``ref_count > 0``), or *cached* in the tree (or both held and
    cached). ``page_size`` (a divisor of ``block_size``; default
    ``block_size``) is the tree's granularity; below ``block_size`` a partial
    hit comes with a copy-on-write block unless ``partial_copy=False``.
    ``policy``: ``"lru"`` (default), ``"lfu"`` or an
    :class:`~minikv.prefix.policies.EvictionPolicy`.

    ``match`` and ``insert`` also take ``extra_keys`` (e.g. ``(("lora", 3),)``),
    like :class:`~minikv.prefix.BlockHashCache`: they select the tree.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        page_size: int | None = None,
        policy: str | EvictionPolicy = "lru",
        partial_copy: bool = True,
    ) -> None:
        _check_sizes(num_blocks, block_size)
        page = block_size if page_size is None else int(page_size)
        if page < 1 or block_size % page:
            raise ValueError(
                f"page_size must divide block_size={block_size} (1 or {block_size} are the "
                f"usual choices), got {page_size}"
            )
        self.num_blocks = int(num_blocks)
        self.block_size = int(block_size)
        self.page_size = page
        self.partial_copy = bool(partial_copy)
        self.policy = resolve_policy(policy)
        self._reset_state()

    def _reset_state(self) -> None:
        self._roots: dict[Namespace, RadixNode] = {}
        self._free: deque[int] = deque(range(self.num_blocks))
        self._ref = [0] * self.num_blocks  # references held by running requests
        self._deepest: dict[int, RadixNode] = {}  # cached block -> deepest node using it
        self._pins: dict[int, tuple[int, RadixNode]] = {}  # copy block -> (source, locked node)
        self._num_evictable = 0  # blocks owned by nodes with lock_ref == 0
        self._heap: list[tuple[Any, int, int, RadixNode]] = []
        self._num_nodes = 0
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self._clock = 0
        self._requests = 0
        self._query_tokens = 0
        self._hit_tokens = 0
        self._evictions = 0

    # ----------------------------------------------------------------- queries

    @property
    def num_allocatable(self) -> int:
        return len(self._free) + self._num_evictable

    @property
    def num_nodes(self) -> int:
        """Nodes in all trees, roots not counted."""
        return self._num_nodes

    def ref_count(self, block_id: int) -> int:
        """References running requests hold on the block (copy pins not counted)."""
        return self._ref[block_id]

    def is_cached(self, block_id: int) -> bool:
        return block_id in self._deepest

    def free_blocks(self) -> list[int]:
        """Free blocks, the next one ``allocate`` takes first."""
        return list(self._free)

    def nodes(self) -> Iterator[RadixNode]:
        """Every node of every tree, parents before children (roots not included)."""
        for root in self._roots.values():
            stack = list(reversed(root.children.values()))
            while stack:
                node = stack.pop()
                yield node
                stack.extend(reversed(node.children.values()))

    def num_tree_tokens(self) -> int:
        """Token ids stored on all edges: each distinct cached prefix counts once."""
        return sum(len(n.tokens) for n in self.nodes())

    def stats(self) -> CacheStats:
        """Counters as :class:`~minikv.prefix.CacheStats`.

        ``num_used`` counts what ``allocate`` cannot take: blocks held by
        requests, plus cached blocks whose subtree is locked.
        """
        free, evictable = len(self._free), self._num_evictable
        return CacheStats(
            num_blocks=self.num_blocks,
            block_size=self.block_size,
            num_used=self.num_blocks - free - evictable,
            num_evictable=evictable,
            num_free=free,
            num_cached=len(self._deepest),
            requests=self._requests,
            query_tokens=self._query_tokens,
            hit_tokens=self._hit_tokens,
            evictions=self._evictions,
        )

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
        tokens = _as_tokens(token_ids)
        node = self._roots.get(_namespace(salt, extra_keys))
        pos, n, p = 0, len(tokens), self.page_size
        while node is not None and pos < n:
            child = node.children.get(tuple(tokens[pos : pos + p])) if pos + p <= n else None
            if child is None:
                if p > 1:  # the query's next page may still agree with a child in part
                    kids = node.children.values()
                    pos += max((_common_len(c.tokens, tokens, pos, n) for c in kids), default=0)
                break
            c = _common_len(child.tokens, tokens, pos, n)
            pos += c
            node = child if c == len(child.tokens) else None
        return pos

    # -------------------------------------------------------------- operations

    def match(
        self,
        token_ids: Sequence[int],
        salt: str | None = None,
        *,
        extra_keys: Sequence[Hashable] = (),
    ) -> Match:
        """Longest cached prefix (whole pages, last token excluded); locks its path.

        Splits the edge the match ends in, takes a reference on each shared
        block and stamps the path's access time and hit count. A partial last
        block comes as a fresh block plus ``copy_from_block``/``copy_tokens``
        (see the module docstring); if no block can be had for it, the hit is
        cut to whole blocks. Never raises :class:`KVCacheFull`.
        """
        tokens = _as_tokens(token_ids)
        ns = _namespace(salt, extra_keys)
        self._requests += 1
        self._query_tokens += len(tokens)
        root = self._roots.get(ns)
        if root is None or len(tokens) < 2:
            return Match((), 0)
        bs = self.block_size
        _, length, _ = self._walk(root, tokens, len(tokens) - 1)  # the last-token rule
        if length % bs and not self.partial_copy:
            length -= length % bs
        if length == 0:
            return Match((), 0)
        path, _, edge = self._walk(root, tokens, length)
        if edge is not None:
            path.append(self._split(*edge))
        self._clock += 1
        for node in path:
            node.last_access = self._clock
            node.hit_count += 1
        by_range: list[int] = [-1] * (-(-length // bs))
        for node in path:  # deeper nodes overwrite: their copy of a block range is fuller
            first = node.start // bs
            for i, b in enumerate(node.block_ids[: len(by_range) - first]):
                by_range[first + i] = b
        full = by_range[: length // bs]
        self._add_refs(full, +1)
        rest = length % bs
        if rest:
            src, end_node = by_range[-1], path[-1]
            self._propagate({end_node: +1})  # pin the source before allocating: that may evict
            if self.num_allocatable:
                dst = self._take(1)[0]
                self._pins[dst] = (src, end_node)
                self._hit_tokens += length
                return Match((*full, dst), length, copy_from_block=src, copy_tokens=rest)
            self._propagate({end_node: -1})
            length -= rest
        self._hit_tokens += length
        return Match(tuple(full), length)

    def allocate(self, n: int) -> list[int]:
        """``n`` fresh blocks with ref 1: free ones first, then by evicting leaves.

        All-or-nothing: raises :class:`KVCacheFull` and changes nothing when
        fewer than ``n`` blocks are free or evictable.
        """
        if n < 0:
            raise ValueError(f"cannot allocate a negative number of blocks ({n})")
        return self._take(n)

    def insert(
        self,
        token_ids: Sequence[int],
        block_ids: Sequence[int],
        salt: str | None = None,
        *,
        extra_keys: Sequence[Hashable] = (),
    ) -> int:
        """Cache a sequence's tokens (whole pages); returns how many blocks became cached.

        See :meth:`insert_detailed`, which also says how much was already there.
        """
        return self.insert_detailed(token_ids, block_ids, salt, extra_keys=extra_keys).new_blocks

    def insert_detailed(
        self,
        token_ids: Sequence[int],
        block_ids: Sequence[int],
        salt: str | None = None,
        *,
        extra_keys: Sequence[Hashable] = (),
    ) -> InsertResult:
        """Add the whole pages of ``token_ids`` to the tree, pointing at ``block_ids``.

        ``token_ids``: tokens whose K/V are written; ``block_ids``: the
        sequence's block table, held by the caller. Walks the existing path
        (splitting an edge where the sequence branches off) and hangs the
        rest below it as one new leaf. Tokens already in the tree are never
        stored twice: the caller's blocks for them stay uncached and are
        freed on ``release``. Call it again as the sequence grows.
        """
        tokens = _as_tokens(token_ids)
        ids = as_block_ids(block_ids)
        bs, p = self.block_size, self.page_size
        n = len(tokens) - len(tokens) % p
        nb = -(-n // bs)
        if nb > len(ids):
            raise ValueError(
                f"{n} tokens fill {nb} blocks of {bs}, but the block table has only "
                f"{len(ids)} blocks"
            )
        for b in ids[:nb]:
            if not 0 <= b < self.num_blocks or self._ref[b] == 0:
                raise BlockAllocatorError(
                    f"block {b} is not held by anyone; insert only blocks that match() or "
                    f"allocate() gave the sequence and that it has not released"
                )
        if len(set(ids[:nb])) != nb:
            raise ValueError(f"the block table {ids[:nb]} names a block twice")
        ns = _namespace(salt, extra_keys)
        for b in ids[:nb]:  # the K/V are written, so any copy into b is done
            if b in self._pins:
                self._unpin(b)
        if n == 0:
            return InsertResult(0, 0, 0)
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
            c = _common_len(child.tokens, tokens, pos, n)
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

    def release(self, block_ids: Sequence[int]) -> None:
        """Drop one reference on each block (tail first); this unlocks their paths in the tree.

        A block that is not cached and no longer referenced goes to the free
        list. Releasing a fresh copy-on-write block unpins its source.
        Validates first: an unknown, unheld or repeated id raises
        :class:`BlockAllocatorError` and releases nothing.
        """
        ids = as_block_ids(block_ids)
        seen: set[int] = set()
        for b in ids:
            if not 0 <= b < self.num_blocks:
                raise BlockAllocatorError(
                    f"block {b} does not exist: the pool has blocks 0..{self.num_blocks - 1}"
                )
            if self._ref[b] == 0 or b in seen:
                raise BlockAllocatorError(
                    f"block {b} is not held (released twice, or never handed out); release "
                    f"each block of a sequence once"
                )
            seen.add(b)
        for b in ids:
            if b in self._pins:
                self._unpin(b)
        self._add_refs(ids, -1)
        for b in reversed(ids):
            if self._ref[b] == 0 and b not in self._deepest:
                self._free.append(b)

    def evict(self, n: int) -> int:
        """Free up to ``n`` cached blocks of unlocked leaves, by policy order; returns how many."""
        return self._evict(min(max(n, 0), self._num_evictable))

    def reset(self) -> None:
        """Forget every tree, restore the free list to ``0 .. n-1`` and zero the counters.

        Raises :class:`PrefixCacheError` (and changes nothing) while any block
        is held by a request.
        """
        held = sum(1 for r in self._ref if r)
        if held:
            raise PrefixCacheError(
                f"cannot reset the prefix cache while {held} blocks are in use; finish or "
                f"abort the running requests first"
            )
        for node in self.nodes():
            node.alive = False
        self._reset_state()

    # --------------------------------------------------------------- internals

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
            c = _common_len(child.tokens, tokens, pos, limit)
            c -= c % p  # >= p: the first page is the key
            if c < len(child.tokens):
                return path, pos + c, (child, c)
            path.append(child)
            node, pos = child, pos + c
        return path, pos, None

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
        node.lock_ref -= sum(self._ref[b] for b in upper_only)
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

    def _add_leaf(
        self, parent: RadixNode, tokens: tuple[int, ...], start: int, ids: list[int]
    ) -> RadixNode:
        """Hang a leaf for ``tokens`` (from position ``start``) below ``parent``, on ``ids``."""
        bs = self.block_size
        blocks = ids[start // bs : (start + len(tokens) - 1) // bs + 1]
        # Starting mid-block, the caller's block may already back an ancestor (the
        # caller's own earlier insert): then the leaf shares it. Any other cached block is an error.
        holder = self._deepest.get(blocks[0]) if start % bs else None
        shares = holder is not None and self._holder_above(parent, blocks[0]) is holder
        for i, b in enumerate(blocks):
            if b in self._deepest and not (i == 0 and shares):
                raise ValueError(
                    f"block {b} is cached for other tokens than positions {start}.. of this "
                    f"sequence; pass the sequence's own tokens, block table and salt"
                )
        leaf = RadixNode(next(self._ids), tokens, start, blocks, parent, shares)
        leaf.last_access = self._clock
        parent.children[tokens[: self.page_size]] = leaf
        self._num_nodes += 1
        for b in blocks:
            self._deepest[b] = leaf
        leaf.lock_ref = sum(self._ref[b] for b in blocks)
        if leaf.lock_ref == 0:
            self._num_evictable += leaf.num_owned
            self._maybe_push(leaf)
        if not parent.is_root:
            # Holds on new blocks lock every ancestor; a shared first block's holds were
            # counted from the ancestor that holds it up, and now also lock the nodes between.
            pending = {parent: leaf.lock_ref}
            if holder is not None and shares:
                pending[holder] = pending.get(holder, 0) - self._ref[blocks[0]]
            self._propagate(pending)
        return leaf

    def _holder_above(self, node: RadixNode, block: int) -> RadixNode | None:
        """The nearest node from ``node`` up whose last block is ``block``, or None."""
        while not node.is_root:
            if node.block_ids[-1] == block:
                return node
            assert node.parent is not None
            node = node.parent
        return None

    def _add_refs(self, blocks: Iterable[int], delta: int) -> None:
        """Add ``delta`` to each block's ref count and to ``lock_ref`` from its deepest node up."""
        pending: dict[RadixNode, int] = {}
        for b in blocks:
            self._ref[b] += delta
            node = self._deepest.get(b)
            if node is not None:
                pending[node] = pending.get(node, 0) + delta
        self._propagate(pending)

    def _propagate(self, pending: dict[RadixNode, int]) -> None:
        """Apply lock deltas to nodes and all their ancestors, each node once (children first)."""
        heap = [(-n.start, n.id, n) for n in pending]
        heapq.heapify(heap)
        while heap:
            _, _, node = heapq.heappop(heap)
            delta = pending.pop(node)
            if delta == 0:
                continue
            old = node.lock_ref
            node.lock_ref = new = old + delta
            if new < 0:
                raise AssertionError(f"lock_ref of {node} went negative")
            if old == 0:
                self._num_evictable -= node.num_owned
            elif new == 0:
                self._num_evictable += node.num_owned
                self._maybe_push(node)
            parent = node.parent
            if parent is not None and not parent.is_root:
                if parent not in pending:
                    heapq.heappush(heap, (-parent.start, parent.id, parent))
                pending[parent] = pending.get(parent, 0) + delta

    def _unpin(self, dst: int) -> None:
        self._propagate({self._pins.pop(dst)[1]: -1})

    def _maybe_push(self, node: RadixNode) -> None:
        """Queue ``node`` for eviction if it is an unlocked leaf (with its current priority)."""
        if node.alive and not node.is_root and not node.children and node.lock_ref == 0:
            if len(self._heap) > 2 * self._num_nodes + 64:
                self._rebuild_heap()
            entry = (self.policy.priority(node), node.id, next(self._seq), node)
            heapq.heappush(self._heap, entry)

    def _rebuild_heap(self) -> None:
        """Drop stale entries: one fresh entry per evictable leaf."""
        self._heap = [
            (self.policy.priority(n), n.id, next(self._seq), n)
            for n in self.nodes()
            if not n.children and n.lock_ref == 0
        ]
        heapq.heapify(self._heap)

    def _pop_victim(self) -> RadixNode | None:
        """The evictable leaf of least priority, or None (lazy deletion of stale entries)."""
        while self._heap:
            prio, _, _, node = heapq.heappop(self._heap)
            if not node.alive or node.children or node.lock_ref:
                continue
            now = self.policy.priority(node)
            if prio != now:
                heapq.heappush(self._heap, (now, node.id, next(self._seq), node))
                continue
            return node
        return None

    def _evict(self, n: int) -> int:
        """Free ``n`` blocks (``n <= num_evictable``) from leaves in policy order."""
        freed = 0
        while freed < n:
            node = self._pop_victim()
            if node is None:
                raise AssertionError(
                    f"{self._num_evictable} blocks counted evictable but no evictable leaf found"
                )
            owned = node.num_owned
            if owned > n - freed:
                self._trim_leaf(node, n - freed)
                freed = n
            else:
                self._remove_leaf(node)
                freed += owned
        return freed

    def _free_cached(self, blocks: list[int]) -> None:
        for b in blocks:
            del self._deepest[b]
            self._free.append(b)
        self._num_evictable -= len(blocks)
        self._evictions += len(blocks)

    def _trim_leaf(self, node: RadixNode, k: int) -> None:
        """Evict only the last ``k`` blocks of an unlocked leaf (it keeps at least one)."""
        bs = self.block_size
        dropped = node.block_ids[-k:]
        node.block_ids = node.block_ids[:-k]
        end = (node.start // bs + len(node.block_ids)) * bs
        node.tokens = node.tokens[: end - node.start]
        self._free_cached(dropped)
        self._maybe_push(node)

    def _remove_leaf(self, node: RadixNode) -> None:
        """Evict an unlocked leaf: free what it owns; its parent may become evictable."""
        parent = node.parent
        assert parent is not None
        del parent.children[node.tokens[: self.page_size]]
        self._free_cached(node.owned_blocks)
        if node.shares_first_block:
            holder = self._holder_above(parent, node.block_ids[0])
            assert holder is not None
            self._deepest[node.block_ids[0]] = holder
        node.alive = False
        self._num_nodes -= 1
        if not parent.is_root:
            self._maybe_push(parent)
        elif not parent.children:
            assert parent.namespace is not None
            del self._roots[parent.namespace]

    def _take(self, n: int) -> list[int]:
        if n > self.num_allocatable:
            raise KVCacheFull(
                f"the KV pool has {self.num_allocatable} free or evictable blocks of "
                f"{self.block_size} tokens but {n} are needed ({self.stats().num_used} of "
                f"{self.num_blocks} blocks are held by running requests or their cached "
                f"prefixes); raise num_blocks or kv_cache_memory, or shorten the prompt"
            )
        if len(self._free) < n:
            self._evict(n - len(self._free))
        out = [self._free.popleft() for _ in range(n)]
        for b in out:
            self._ref[b] = 1
        return out

    # ------------------------------------------------------------ inspection

    def check_invariants(self) -> None:
        """Recompute every count from scratch and raise AssertionError on a mismatch (for tests)."""
        bs = self.block_size
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
            shares = bool(node.start % bs) and self._holder_above(par, first) is not None
            if shares != node.shares_first_block:
                raise AssertionError(f"{node}: shares_first_block is stale")
            for b in node.block_ids:
                deepest[b] = node  # parents come first, so the last writer is the deepest
            for b in node.owned_blocks:
                if b in owner:
                    raise AssertionError(f"block {b} owned by {owner[b]} and {node}")
                owner[b] = node
        for node in reversed(order):  # children before parents
            direct = sum(self._ref[b] for b in node.block_ids if deepest[b] is node)
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
            if not node.alive or src not in node.block_ids or self._ref[dst] < 1:
                raise AssertionError(f"copy pin {dst} <- {src} at {node} is stale")
        if any(r < 0 for r in self._ref):
            raise AssertionError("a negative ref count")
        free = set(self._free)
        if len(free) != len(self._free):
            raise AssertionError("a block is on the free list twice")
        expect_free = {b for b in range(self.num_blocks) if not self._ref[b] and b not in deepest}
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
                text = _short(toks, max_tokens)
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
                label = _short(list(node.tokens), 8)
                label += f"\\nblocks {node.block_ids}\\nlock {node.lock_ref}"
                out.append(f'  n{node.id} [label="{label}"{style}];')
                out.append(f"  {up} -> n{node.id};")
                stack.extend((f"n{node.id}", c) for c in node.children.values())
        out.append("}")
        return "\n".join(out)

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"RadixCache(num_blocks={self.num_blocks}, block_size={self.block_size}, "
            f"page_size={self.page_size}, policy={self.policy.name!r}, nodes={self._num_nodes}, "
            f"used={s.num_used}, evictable={s.num_evictable}, free={s.num_free}, "
            f"hit_rate={s.hit_rate:.1%})"
        )


__all__ = ["InsertResult", "RadixCache", "RadixNode"]

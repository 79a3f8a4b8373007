"""Locks and eviction: which nodes are in use, and which leaf goes when blocks run out.

The bottom layer of :class:`~minikv.prefix.radix.RadixCache`: it declares
the state every layer shares and keeps the lock counts, copy pins, the
evictable-block count and the eviction heap right (invariants 3, 4, 6 and 7
of the package docstring). The tree layer (:mod:`.tree`) calls it whenever a split
or a new leaf moves blocks between nodes; the cache (:mod:`.cache`) when
requests take or drop references.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any

from minikv.prefix.ghost import ROOT_KEY, GhostList
from minikv.prefix.ledger import BlockLedger
from minikv.prefix.policies import EvictionPolicy
from minikv.prefix.radix.node import Namespace, RadixNode, holder_above, iter_nodes

HeapEntry = tuple[Any, int, int, RadixNode]
"""``(policy priority, node id, push sequence number, node)``: smallest first."""


class RadixLocks:
    """The shared state of a radix cache, and the bookkeeping of locks and eviction.

    Not used on its own: :class:`~minikv.prefix.radix.RadixCache` sets the
    state up (``_reset_state``) and builds on these methods.
    """

    num_blocks: int
    block_size: int
    page_size: int
    policy: EvictionPolicy
    _ledger: BlockLedger  # reference counts (held by requests) and the free list
    _roots: dict[Namespace, RadixNode]  # one tree per (salt, extra_keys)
    _deepest: dict[int, RadixNode]  # cached block -> deepest node using it
    _pins: dict[int, tuple[int, RadixNode]]  # copy block -> (source block, locked node)
    _num_evictable: int  # blocks owned by nodes with lock_ref == 0
    _heap: list[HeapEntry]  # unlocked leaves (and stale entries, skipped when popped)
    _num_nodes: int
    _ids: Iterator[int]  # node ids
    _seq: Iterator[int]  # heap tie-breakers
    _evictions: int
    _ghost: GhostList  # keys of recently evicted full blocks (for explain_miss)
    _generation: int  # the policy's generation the heap is ordered for
    _spill_blocks: Any  # (node, first block range, blocks) -> None: queue evicted blocks for the offload tier
    _flush_spill: Any  # () -> None: copy them there (minikv.prefix.radix.offload)

    def nodes(self) -> Iterator[RadixNode]:
        """Every node of every tree, parents before children (roots not included)."""
        return iter_nodes(self._roots.values())

    # ---------------------------------------------------------------- locks

    def _lock_blocks(self, blocks: Iterable[int], delta: int) -> None:
        """Add ``delta`` to ``lock_ref`` from each cached block's deepest node up to the root.

        Called with +1 when a request takes a reference on cached blocks and
        -1 when it drops them (the ledger's counts change alongside).
        """
        pending: dict[RadixNode, int] = {}
        for b in blocks:
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

    def _pin(self, dst: int, src: int, node: RadixNode) -> None:
        """Record that fresh block ``dst`` copies from ``src``; ``node`` is already locked once for it."""
        self._pins[dst] = (src, node)

    def _unpin(self, dst: int) -> None:
        """The copy into ``dst`` has happened (or never will): unlock the node that kept its source."""
        self._propagate({self._pins.pop(dst)[1]: -1})

    # ------------------------------------------------------------- eviction

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
        if self._generation != getattr(self.policy, "generation", 0):  # the policy changed its order
            self._generation = getattr(self.policy, "generation", 0)
            self._rebuild_heap()
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
        """Cached, unreferenced blocks leave the tree and join the free list's tail."""
        for b in blocks:
            del self._deepest[b]
            self._ledger.free(b)
        self._num_evictable -= len(blocks)
        self._evictions += len(blocks)

    def _remember(self, node: RadixNode, first_block: int) -> int | None:
        """Put the full blocks of ``node``'s path from block ``first_block`` on in the ghost list.

        Returns the key of the path's first ``first_block`` blocks when it
        came along (what a trimmed leaf keeps), else None.

        The keys chain from the root (:func:`minikv.prefix.ghost.block_keys`);
        each node caches the key at its end, so this costs the node's own
        blocks, not the whole path, once its ancestors' keys are known.
        """
        if not self._ghost.capacity:
            return None
        bs = self.block_size
        chain = [node]  # node and its ancestors whose key is not known yet, deepest first
        up = node.parent
        while up is not None and not up.is_root and up.ghost_key is None:
            chain.append(up)
            up = up.parent
        root = up
        while root is not None and not root.is_root:
            root = root.parent
        assert root is not None and root.namespace is not None
        salt, extra = root.namespace
        if up is None or up.is_root:
            done, key = 0, hash((ROOT_KEY, extra))
        else:
            done, key = up.end // bs, up.ghost_key
        kept = None
        for n in reversed(chain):  # shallowest first
            upto = n.end // bs
            if n is node and first_block == done:
                kept = key
            if upto > done:
                toks = self._path_tokens(n, done * bs)
                for b in range(done, upto):
                    key = hash((key, tuple(toks[(b - done) * bs : (b - done + 1) * bs])))
                    if n is node:
                        if b >= first_block:
                            self._ghost.add(key, salt)
                        elif b == first_block - 1:
                            kept = key
                done = upto
            n.ghost_key = key
        return kept

    @staticmethod
    def _path_tokens(node: RadixNode, pos: int) -> list[int]:
        """The path's tokens from position ``pos`` to ``node.end`` (walking up as far as needed)."""
        parts, up = [], node
        while up is not None and not up.is_root and up.end > pos:
            parts.append(up.tokens[max(0, pos - up.start) :])
            up = up.parent
        return [t for part in reversed(parts) for t in part]

    def _trim_leaf(self, node: RadixNode, k: int) -> None:
        """Evict only the last ``k`` blocks of an unlocked leaf (it keeps at least one)."""
        bs = self.block_size
        kept = self._remember(node, node.start // bs + len(node.block_ids) - k)
        dropped = node.block_ids[-k:]
        self._spill_blocks(node, node.start // bs + len(node.block_ids) - k, dropped)
        node.block_ids = node.block_ids[:-k]
        end = (node.start // bs + len(node.block_ids)) * bs
        node.tokens = node.tokens[: end - node.start]
        node.ghost_key = kept  # its end moved: the key of what is left, if known
        self._free_cached(dropped)
        self._maybe_push(node)

    def _remove_leaf(self, node: RadixNode) -> None:
        """Evict an unlocked leaf: free what it owns; its parent may become evictable."""
        parent = node.parent
        assert parent is not None
        self._remember(node, node.start // self.block_size)  # a shared first block loses its tail too
        del parent.children[node.tokens[: self.page_size]]
        self._spill_blocks(node, node.start // self.block_size + node.shares_first_block, node.owned_blocks)
        self._free_cached(node.owned_blocks)
        if node.shares_first_block:
            holder = holder_above(parent, node.block_ids[0])
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
        """``n`` fresh blocks, reference 1 each: the free list first, then evicted leaves' blocks.

        All-or-nothing: :class:`~minikv.errors.KVCacheFull` (nothing changed)
        when fewer than ``n`` blocks are free or evictable.
        """
        led = self._ledger
        n = led.require(n, led.num_free + self._num_evictable, "running requests or their cached prefixes")
        if led.num_free < n:
            self._evict(n - led.num_free)
            self._flush_spill()
        return led.take(n)


__all__ = ["HeapEntry", "RadixLocks"]

"""The radix cache's read-only side: counts, ``stats``, ``peek`` and ``explain_miss`` (a mixin of the cache).

Everything here only looks: no method splits an edge, takes a lock, stamps
an access time or moves a counter, so a scheduler may call them as often as
it likes between steps. They read the state that :mod:`.locks` declares and
:class:`~minikv.prefix.radix.RadixCache` sets up; the operations that change
it (``match``, ``allocate``, ``insert``, ``release``, ``evict``, ``reset``)
stay in :mod:`.cache`. The invariants they rely on are listed once, in the
package docstring of :mod:`minikv.prefix.radix`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from minikv.prefix.base import CacheStats, as_token_ids
from minikv.prefix.ghost import block_keys, check_hit, classify
from minikv.prefix.radix.node import RadixNode, make_namespace
from minikv.prefix.radix.tree import RadixTree
from minikv.prefix.report import MissReport


class RadixQueries(RadixTree):
    """Counts, ``stats``, ``peek`` and ``explain_miss`` over the state a :class:`~minikv.prefix.radix.RadixCache` keeps."""

    partial_copy: bool
    _requests: int  # match calls since the last reset
    _query_tokens: int  # prompt tokens they asked about
    _hit_tokens: int  # tokens they were given as cached
    _tier_run: Callable[..., list[bytes]]  # from .offload
    _offload_fields: Callable[[], dict[str, int]]  # from .offload

    @property
    def num_allocatable(self) -> int:
        return self._ledger.num_free + self._num_evictable

    @property
    def num_nodes(self) -> int:
        """Nodes in all trees, roots not counted."""
        return self._num_nodes

    def ref_count(self, block_id: int) -> int:
        """References running requests hold on the block (copy pins not counted)."""
        return self._ledger.ref_count(block_id)

    def is_cached(self, block_id: int) -> bool:
        return block_id in self._deepest

    def free_blocks(self) -> list[int]:
        """Free blocks, the next one ``allocate`` takes first."""
        return self._ledger.free_ids()

    def stats(self) -> CacheStats:
        """Counters as :class:`~minikv.prefix.CacheStats`.

        ``num_used`` counts what ``allocate`` cannot take: blocks held by
        requests, plus cached blocks whose subtree is locked.
        """
        free, evictable = self._ledger.num_free, self._num_evictable
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
            **self._offload_fields(),
        )

    def peek(
        self,
        token_ids: Sequence[int],
        salt: str | None = None,
        *,
        extra_keys: Sequence[Hashable] = (),
    ) -> int:
        """The ``num_cached_tokens`` that :meth:`match` would return now; changes nothing.

        Same rules as ``match``: whole pages, the last token never hits, one
        tree per salt, and a partial last block (``page_size < block_size``)
        only with ``partial_copy`` and only when ``match`` could get the
        fresh block to copy it into (else the hit is cut to whole blocks).
        Nothing is split, locked, stamped or counted: the eviction order, the
        clock, hit counts and ``stats()`` stay as they were.

        >>> from minikv.prefix.radix import RadixCache
        >>> c = RadixCache(4, 2, page_size=1)
        >>> c.insert([1, 2, 3], c.allocate(2))
        2
        >>> c.peek([1, 2, 3, 9]), c.peek([1, 2, 3]), c.peek([1, 2, 3, 9], salt="x")
        (3, 2, 0)
        >>> c.stats().requests
        0
        """
        tokens = as_token_ids(token_ids)
        ns = make_namespace(salt, extra_keys)
        root = self._roots.get(ns)
        if len(tokens) < 2:
            return 0
        bs = self.block_size
        length = 0 if root is None else self._walk(root, tokens, len(tokens) - 1)[1]  # the last-token rule
        if length % bs and not self.partial_copy:
            length -= length % bs
        budget = self.num_allocatable - (self._evictable_on_path(root, tokens, length) if length else 0)
        run = self._tier_run(tokens, ns, length // bs, budget, memo=True)
        if run:
            return (length // bs + len(run)) * bs
        if length % bs and budget <= 0:
            length -= length % bs  # match could not get the copy's fresh block
        return length

    def _evictable_on_path(self, root: RadixNode, tokens: list[int], length: int) -> int:
        """Evictable blocks that ``match`` would lock on the path of ``tokens[:length]``.

        ``match`` locks every node of that path (the edge it ends in split
        first), so each one still unlocked stops being evictable: all its
        owned blocks, and of a split edge the blocks its upper part would own.
        """
        path, _, edge = self._walk(root, tokens, length)
        lost = sum(node.num_owned for node in path if node.lock_ref == 0)
        if edge is not None and edge[0].lock_ref == 0:
            node, k = edge
            bs = self.block_size
            upper_blocks = (node.start + k - 1) // bs - node.start // bs + 1
            lost += upper_blocks - node.shares_first_block
        return lost

    def explain_miss(
        self,
        token_ids: Sequence[int],
        salt: str | None = None,
        num_cached_tokens: int = 0,
        *,
        extra_keys: Sequence[Hashable] = (),
    ) -> MissReport:
        """Why the prompt missed where it did (:class:`~minikv.prefix.report.MissReport`).

        ``num_cached_tokens``: what ``match`` gave it. Past the longest prefix
        the tree holds (token-exact), a block is ``evicted`` if the ghost list
        remembers it under this salt, ``other_salt`` if it is remembered
        under, or its first token is held by, the tree of another salt (same
        extra keys), ``never_seen`` otherwise. Takes no locks, splits nothing,
        changes no statistics or access times.
        """
        tokens = as_token_ids(token_ids)
        n, bs = len(tokens), self.block_size
        hit = check_hit(n, num_cached_tokens)
        held = self.longest_prefix(tokens, salt, extra_keys=extra_keys)
        keys = block_keys(tokens, bs, n // bs, extra_keys)
        extra = tuple(extra_keys)
        other = max(
            (self.longest_prefix(tokens, s, extra_keys=extra) for s, e in self._roots if e == extra and s != salt),
            default=0,
        )

        def status(i: int) -> str:
            key = keys[i] if i < len(keys) else None
            if key is not None and self._ghost.has(key, salt):
                return "evicted"
            if other > i * bs or (key is not None and self._ghost.other_salt(key, salt)):
                return "other_salt"
            return "never_seen"

        return classify(n, hit, held, self.page_size, bs, status)


__all__ = ["RadixQueries"]

"""The radix cache's public face: the :class:`~minikv.prefix.PrefixCache` API over the tree.

The top layer of :mod:`minikv.prefix.radix`: the operations ``match``,
``allocate``, ``insert``, ``release``, ``evict`` and ``reset``. It checks
their arguments, takes and drops block references in the ledger, and leaves
the tree's shape to :mod:`.tree`, the lock counts to :mod:`.locks`, the
read-only queries (``stats``, ``peek``, ``explain_miss``) to :mod:`.queries`
and the host tier to :mod:`.offload`.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence

from minikv.errors import InvalidRequestError
from minikv.prefix.base import Match, as_block_ids, as_token_ids
from minikv.prefix.ghost import GhostList
from minikv.prefix.ledger import BlockLedger, whole_number
from minikv.prefix.offload import OffloadTier, check_offload
from minikv.prefix.policies import EvictionPolicy, bind_policy, resolve_policy
from minikv.prefix.radix.inspection import RadixInspection
from minikv.prefix.radix.node import InsertResult, make_namespace
from minikv.prefix.radix.offload import RadixOffload
from minikv.prefix.radix.queries import RadixQueries


def _check_page_size(page_size: object, block_size: int) -> int:
    """``page_size`` as an int dividing ``block_size`` (``None``: ``block_size``)."""
    if page_size is None:
        return block_size
    page = whole_number("page_size", page_size, 1, f"1 or {block_size}")
    if block_size % page:
        divisors = ", ".join(str(d) for d in range(1, block_size + 1) if block_size % d == 0)
        raise InvalidRequestError(
            f"page_size must divide block_size={block_size}: give one of {divisors} (1: token-"
            f"granular, {block_size}: whole blocks), got {page}"
        )
    return page


class RadixCache(RadixQueries, RadixInspection, RadixOffload):
    """A :class:`~minikv.prefix.PrefixCache` over one radix tree per salt (SGLang style).

    Owns blocks ``0 .. num_blocks - 1``: each is *free*, *held* by a running
    request (``ref_count > 0``), or *cached* in the tree (or both held and
    cached). ``page_size`` (a divisor of ``block_size``; default
    ``block_size``) is the tree's granularity; below ``block_size`` a partial
    hit comes with a copy-on-write block unless ``partial_copy=False``.
    ``policy``: ``"lru"`` (default), ``"lfu"``, ``"slru"``, ``"shallow"`` or an
    :class:`~minikv.prefix.policies.EvictionPolicy`. ``ghost_size``: how many
    evicted full blocks' keys to remember for :meth:`explain_miss` (default
    ``num_blocks``; 0 remembers none).

    ``match`` and ``insert`` also take ``extra_keys`` (e.g. ``(("lora", 3),)``),
    like :class:`~minikv.prefix.BlockHashCache`: they select the tree.

    ``offload``: an :class:`~minikv.prefix.offload.OffloadTier`: evicted full
    blocks are copied to host memory and a later hit copies them back
    (:mod:`minikv.prefix.radix.offload`); ``stats().offload_hit_tokens``.

    One request's cycle (``match`` -> ``allocate`` the rest -> run ->
    ``insert`` -> ``release``); the second request hits the first's prefix:

    >>> c = RadixCache(4, 2)
    >>> m = c.match([1, 2, 3, 4, 5])
    >>> ids = [*m.block_ids, *c.allocate(3)]
    >>> c.insert([1, 2, 3, 4, 5], ids), c.release(ids)
    (2, None)
    >>> m = c.match([1, 2, 3, 4, 9])
    >>> m.num_cached_tokens, m.block_ids == tuple(ids[:2])
    (4, True)
    >>> c.release(m.block_ids); c.stats().hit_tokens
    4
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        page_size: int | None = None,
        policy: str | EvictionPolicy = "lru",
        partial_copy: bool = True,
        ghost_size: int | None = None,
        *,
        offload: OffloadTier | None = None,
    ) -> None:
        self._ledger = BlockLedger(num_blocks, block_size)
        self.num_blocks, self.block_size = self._ledger.num_blocks, self._ledger.block_size
        self.offload = check_offload(offload, self.block_size)
        self.page_size = _check_page_size(page_size, self.block_size)
        if not isinstance(partial_copy, bool):
            raise InvalidRequestError(f"partial_copy must be True or False, got {partial_copy!r}")
        self.partial_copy = partial_copy
        self._policy = resolve_policy(policy)  # a stateful one is bound afresh on each reset
        self._ghost = GhostList(self.num_blocks if ghost_size is None else ghost_size)
        self._reset_state()

    def _reset_state(self) -> None:
        self.policy = bind_policy(self._policy, self.num_blocks, self.block_size)
        self._observe = getattr(self.policy, "observe", None)  # a stateful policy watches every match
        self._roots = {}
        self._ledger.reset()
        self._deepest = {}
        self._pins = {}
        self._num_evictable = 0
        self._heap = []
        self._generation = getattr(self.policy, "generation", 0)
        self._num_nodes = 0
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self._clock = 0
        self._requests = 0
        self._query_tokens = 0
        self._hit_tokens = 0
        self._evictions = 0
        self._ghost.clear()
        self._offload_hit_tokens = 0
        self._spill = []
        if self.offload is not None:
            self.offload.reset()

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
        (see the package docstring); if no block can be had for it, the hit is
        cut to whole blocks. With an offload tier the hit goes on there, in
        full blocks copied back into fresh ones (:mod:`minikv.prefix.radix.offload`);
        a tier block then replaces a partial last block. Never raises :class:`KVCacheFull`.
        """
        tokens = as_token_ids(token_ids)
        ns = make_namespace(salt, extra_keys)
        self._requests += 1
        self._query_tokens += len(tokens)
        if self._observe is not None:
            self._observe(tokens, salt, extra_keys)
        root = self._roots.get(ns)
        if len(tokens) < 2:
            return Match((), 0)
        bs = self.block_size
        length = 0 if root is None else self._walk(root, tokens, len(tokens) - 1)[1]  # the last-token rule
        if length % bs and not self.partial_copy:
            length -= length % bs
        run = []
        if self.offload is not None:  # the tier may go on where the tree stops (as many as can be copied back)
            budget = self.num_allocatable - (self._evictable_on_path(root, tokens, length) if length else 0)
            run = self._tier_run(tokens, ns, length // bs, budget)
        if length == 0 and not run:
            return Match((), 0)
        path, by_range = self._match_path(root, tokens, length) if length else ([], [])
        full = by_range[: length // bs]
        self._ledger.hold(full)
        self._lock_blocks(full, +1)
        if run:
            try:
                fresh = self._load_run(ns, tokens, full, run)
            except BaseException:
                self.release(full)
                raise
            hit = (len(full) + len(fresh)) * bs
            self._hit_tokens += hit
            return Match((*full, *fresh), hit)
        rest = length % bs
        if rest:
            src, end_node = by_range[-1], path[-1]
            self._propagate({end_node: +1})  # pin the source before allocating: that may evict
            if self.num_allocatable:
                dst = self._take(1)[0]
                self._pin(dst, src, end_node)
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
        tokens = as_token_ids(token_ids)
        ids = as_block_ids(block_ids)
        bs, p = self.block_size, self.page_size
        n = len(tokens) - len(tokens) % p
        nb = -(-n // bs)
        if nb > len(ids):
            raise InvalidRequestError(
                f"{n} tokens fill {nb} blocks of {bs}, but the block table has only "
                f"{len(ids)} blocks"
            )
        self._ledger.check_held(ids[:nb])
        if len(set(ids[:nb])) != nb:
            raise InvalidRequestError(f"the block table {ids[:nb]} names a block twice")
        ns = make_namespace(salt, extra_keys)
        for b in ids[:nb]:  # the K/V are written, so any copy into b is done
            if b in self._pins:
                self._unpin(b)
        if n == 0:
            return InsertResult(0, 0, 0)
        result = self._insert_tokens(ns, tokens, n, ids)
        if result.new_blocks and self.offload is not None:  # cached in the pool again: out of the tier
            self._drop_from_tier(self._deepest[ids[(n - 1) // bs]])
        return result

    def release(self, block_ids: Sequence[int]) -> None:
        """Drop one reference on each block (tail first); this unlocks their paths in the tree.

        A block that is not cached and no longer referenced goes to the free
        list. Releasing a fresh copy-on-write block unpins its source.
        Validates first: an unknown, unheld or repeated id raises
        :class:`BlockAllocatorError` and releases nothing.
        """
        ids = self._ledger.check_release(block_ids)
        for b in ids:
            if b in self._pins:
                self._unpin(b)
        zeroed = self._ledger.drop(ids)  # last block first
        self._lock_blocks(ids, -1)
        for b in zeroed:
            if b not in self._deepest:
                self._ledger.free(b)

    def evict(self, n: int) -> int:
        """Free up to ``n`` cached blocks of unlocked leaves, by policy order; returns how many."""
        done = self._evict(min(max(n, 0), self._num_evictable))
        if self.offload is not None:
            self._flush_spill()
        return done

    def reset(self) -> None:
        """Forget every tree, restore the free list to ``0 .. n-1`` and zero the counters.

        Raises :class:`PrefixCacheError` (and changes nothing) while any block
        is held by a request.
        """
        self._ledger.check_idle()
        for node in self.nodes():
            node.alive = False
        self._reset_state()

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"RadixCache(num_blocks={self.num_blocks}, block_size={self.block_size}, "
            f"page_size={self.page_size}, policy={self.policy.name!r}, nodes={self._num_nodes}, "
            f"used={s.num_used}, evictable={s.num_evictable}, free={s.num_free}, "
            f"hit_rate={s.hit_rate:.1%})"
        )


__all__ = ["RadixCache"]

"""The radix cache's second level: evicted blocks to host memory, and back on a hit (a mixin of the cache).

With ``offload=`` an :class:`~minikv.prefix.offload.OffloadTier`, the tree
itself stays what it was (it holds only blocks in the pool, so no invariant
of :mod:`minikv.prefix.radix` changes); the tier holds what the tree evicted:

- **keys**: a block's key is the sha256 chain of :mod:`minikv.prefix.block_hashes`
  over its path's *full* blocks, salt and extra keys included (the key the
  hash cache would give it). Each node caches the key at its end
  (``offload_key``), so an eviction hashes only the evicted node's blocks;
- **spill**: when a leaf is removed or trimmed, its owned full blocks are
  queued, deepest first, and copied to the tier at the end of the
  ``allocate`` or ``evict`` that evicted them (a partial last block is
  dropped: a key covers whole blocks);
- **match**: where the tree's hit ends before the last-token cap, the walk
  goes on in the tier, one full block at a time, from the first block the
  tree does not hold whole (a tree hit ending mid-block gives way to the
  tier's full block). The tier blocks are checked out, fresh blocks
  allocated, the K/V copied back, and the blocks inserted into the tree
  as the request's own, exactly as if it had computed them. The walk stops
  when no more fresh blocks could be had; ``peek`` counts the same;
- **exclusive**: a full block the tree caches again is dropped from the tier.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from minikv.prefix.base import max_cached_blocks
from minikv.prefix.block_hashes import HASH_FUNCTIONS, ROOT_HASH, block_extra_keys, encode_block, iter_block_hashes
from minikv.prefix.offload import OffloadTier, offload_fields
from minikv.prefix.radix.node import Namespace, RadixNode

_SHA256 = HASH_FUNCTIONS["sha256"]


class RadixOffload:
    """Tier keys, spill and copy-back over the state a :class:`~minikv.prefix.radix.RadixCache` sets up."""

    block_size: int
    offload: OffloadTier | None
    num_allocatable: int
    _roots: dict[Namespace, RadixNode]
    _deepest: dict[int, RadixNode]
    _spill: list[tuple[bytes, int, None]]
    _offload_hit_tokens: int
    _path_tokens: Callable[[RadixNode, int], list[int]]  # from .locks
    _take: Callable[[int], list[int]]  # from .locks
    _insert_tokens: Callable[..., object]  # from .tree

    # ------------------------------------------------------------------ keys

    def _block_hashes(self, node: RadixNode, first: int) -> list[bytes]:
        """Keys of the full blocks of ``node``'s path from block range ``first`` to its end."""
        bs = self.block_size
        want = node.end // bs
        if first >= want:
            return []
        chain = [node]  # nodes whose key is not known yet, deepest first
        up = node.parent
        assert up is not None
        while not up.is_root and not _key_known(up, bs):
            chain.append(up)
            up = up.parent
            assert up is not None
        root = up
        while not root.is_root:
            root = root.parent
        assert root.namespace is not None
        salt, extra = _encodable(root.namespace)
        done, base = (0, ROOT_HASH) if up.is_root else up.offload_key
        assert first >= done, "an ancestor's key reaches past the node's first block"
        toks = self._path_tokens(node, done * bs)
        out, h = [], base
        for r in range(done, want):
            i = (r - done) * bs
            h = _SHA256(encode_block(h, toks[i : i + bs], block_extra_keys(r, salt, extra)))
            out.append(h)
        for n in chain:
            nb = n.end // bs
            n.offload_key = (nb, out[nb - done - 1] if nb > done else base)
        return out[first - done :]

    # ----------------------------------------------------------------- spill

    def _spill_blocks(self, node: RadixNode, first: int, blocks: list[int]) -> None:
        """Queue ``blocks`` (``node``'s, block ranges ``first`` on) for the tier: full ones only, deepest first."""
        if self.offload is None:
            return
        hashes = self._block_hashes(node, first)
        self._spill.extend((h, b, None) for h, b in reversed(list(zip(hashes, blocks))))

    def _flush_spill(self) -> None:
        """Copy what was evicted since the last flush into the tier (before the blocks are reused)."""
        if self._spill:
            spill, self._spill = self._spill, []
            assert self.offload is not None
            self.offload.store(spill)

    def _drop_from_tier(self, leaf: RadixNode) -> None:
        """``leaf`` was just cached: the tier forgets its owned full blocks (they are in the pool now)."""
        tier = self.offload
        if tier is None or not len(tier):
            return
        for h in self._block_hashes(leaf, leaf.start // self.block_size + leaf.shares_first_block):
            tier.discard(h)

    # ----------------------------------------------------------------- match

    def _tier_run(self, tokens: list[int], ns: Namespace, first: int, budget: int, memo: bool = False) -> list[bytes]:
        """Keys of the tier's blocks from block range ``first`` on, in prompt order, as many as ``budget`` allows.

        ``memo`` (``peek``): take the prompt's keys from a bounded memo, as a
        scheduler peeks at the same waiting prompts step after step; ``match``
        hashes lazily, only up to the first block the tier lacks.
        """
        tier = self.offload
        limit = max_cached_blocks(len(tokens), self.block_size)
        if tier is None or not len(tier) or first >= limit or budget < 1:
            return []
        run: list[bytes] = []
        if memo:
            hashes = iter(self._prompt_hashes(tokens, ns, limit))
        else:
            hashes = (h for h, _, _ in iter_block_hashes(tokens, self.block_size, *_encodable(ns), _SHA256, limit))
        for r, h in enumerate(hashes):
            if r < first:
                continue
            if h not in tier or len(run) == budget:
                break
            run.append(h)
        return run

    MEMO_TOKENS = 1 << 18
    """Prompt tokens whose block keys are remembered (a scheduler peeks every waiting prompt each step)."""

    def _prompt_hashes(self, tokens: list[int], ns: Namespace, limit: int) -> list[bytes]:
        """The keys of the first ``limit`` full blocks of ``tokens`` in tree ``ns``, from a bounded memo when there."""
        key = (ns, tuple(tokens[: limit * self.block_size]))
        memo = self.__dict__.setdefault("_key_memo", OrderedDict())
        hashes = memo.get(key)
        if hashes is not None:
            memo.move_to_end(key)
            return hashes
        salt, extra = _encodable(ns)
        hashes = [h for h, _, _ in iter_block_hashes(tokens, self.block_size, salt, extra, _SHA256, limit)]
        memo[key] = hashes
        self._memo_tokens = getattr(self, "_memo_tokens", 0) + len(key[1])
        while self._memo_tokens > self.MEMO_TOKENS:
            self._memo_tokens -= len(memo.popitem(last=False)[0][1])
        return hashes

    def _load_run(self, ns: Namespace, tokens: list[int], full: list[int], run: list[bytes]) -> list[int]:
        """Copy the tier's ``run`` back into fresh blocks and insert them after ``full`` (held) in the tree."""
        tier = self.offload
        assert tier is not None
        out = tier.checkout(run)
        try:
            fresh = self._take(len(run))
        except BaseException:
            tier.checkin(out)
            raise
        tier.load(out, fresh)
        ids = [*full, *fresh]
        self._insert_tokens(ns, tokens, len(ids) * self.block_size, ids)
        self._offload_hit_tokens += len(fresh) * self.block_size
        return fresh

    def _offload_fields(self) -> dict[str, int]:
        return offload_fields(self.offload, self._offload_hit_tokens)


def _encodable(ns: Namespace) -> Namespace:
    """The tree's ``(salt, extra_keys)`` in the types a block hash encodes (ints, str, bytes, tuples).

    The tree takes any hashable salt; one of another type (a float, a
    frozenset) enters the keys as its type name and ``repr``, so eviction
    never fails on it.
    """

    def enc(x: object) -> object:
        if x is None or isinstance(x, (int, str, bytes)):
            return x
        if isinstance(x, tuple):
            return tuple(enc(v) for v in x)
        return ("minikv/repr", type(x).__qualname__, repr(x))

    salt, extra = ns
    return enc(salt), tuple(enc(v) for v in extra)


def _key_known(node: RadixNode, block_size: int) -> bool:
    """``node.offload_key`` is set and still for its end (a trim moves the end and so invalidates it)."""
    key = node.offload_key
    return key is not None and key[0] == node.end // block_size


__all__ = ["RadixOffload"]

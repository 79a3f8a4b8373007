"""Chained block hashes, and a ref-counted LRU block pool that caches full blocks by hash.

Prefix caching the way vLLM v1 does it (vLLM's design document,
``docs/design/prefix_caching.md``):

- Each *full* block of a sequence gets a hash that covers its parent block's
  hash, its own token ids and extra keys (cache salt, adapter id, ...). Equal
  hashes therefore stand for equal *prefixes*, not merely equal blocks.
- Every block of the pool has a reference count. Blocks nobody references
  wait in one free queue, and that queue *is* the LRU order: released blocks
  join the tail, ``allocate`` takes from the head, and a cached block taken
  from the head loses its hash right then (that is eviction).
- A cached block waiting in the queue keeps its hash, so a later request can
  still hit it; the hit pulls it out of the queue (revival).

The bytes that get hashed are a fixed encoding (length-prefixed, little-endian
int64 token ids), never Python's per-process salted ``hash()``, so a prompt
gets the same hashes in every process and on every machine.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Union

import xxhash

from minikv.errors import BlockAllocatorError, InvalidRequestError, KVCacheFull
from minikv.prefix.base import (
    CacheStats,
    Match,
    PrefixCacheError,
    _check_sizes,
    as_block_ids,
    max_cached_blocks,
)

ExtraKey = Union[int, str, bytes, "tuple[ExtraKey, ...]"]
"""What may go into a block's extra keys: ints, strings, bytes, and tuples of them."""

HashFn = Callable[[bytes], bytes]
"""A hash function: the encoded block in, its digest out."""


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


HASH_FUNCTIONS: dict[str, HashFn] = {
    "sha256": _sha256,
    "xxh3_128": xxhash.xxh3_128_digest,
    "xxh64": xxhash.xxh64_digest,
}
"""Hash functions by name: ``sha256`` is the strong default, the xxhash ones are fast."""

TRUSTED_HASHES = frozenset({"sha256"})
"""Names whose hits are trusted without comparing token ids (see ``BlockHashCache.verify``)."""

ROOT_HASH: bytes = hashlib.sha256(b"minikv/prefix/root").digest()
"""The parent hash of every sequence's first block: a constant, the same in every process."""

SALT_KEY = "cache_salt"
"""The first block's extra keys start with ``(SALT_KEY, salt)`` when a salt is given."""

_U32 = struct.Struct("<I")


def resolve_hash_fn(hash_fn: str | HashFn) -> HashFn:
    """The function for a name in :data:`HASH_FUNCTIONS`, or ``hash_fn`` itself if callable."""
    if callable(hash_fn):
        return hash_fn
    try:
        return HASH_FUNCTIONS[hash_fn]
    except (KeyError, TypeError):
        choices = ", ".join(repr(k) for k in HASH_FUNCTIONS)
        raise InvalidRequestError(
            f"unknown hash function {hash_fn!r}; choose one of {choices}, or pass a callable "
            f"bytes -> bytes"
        ) from None


def _encode_key(key: ExtraKey, out: list[bytes]) -> None:
    """Append a type tag, a length and the payload, so distinct keys never encode alike."""
    if isinstance(key, int):
        raw = key.to_bytes((key.bit_length() + 8) // 8, "little", signed=True)
        out += (b"i", _U32.pack(len(raw)), raw)
    elif isinstance(key, str):
        raw = key.encode("utf-8")
        out += (b"s", _U32.pack(len(raw)), raw)
    elif isinstance(key, (bytes, bytearray)):
        out += (b"b", _U32.pack(len(key)), bytes(key))
    elif isinstance(key, tuple):
        out += (b"t", _U32.pack(len(key)))
        for k in key:
            _encode_key(k, out)
    else:
        raise InvalidRequestError(
            f"a cache salt or extra key must be an int, str, bytes or a tuple of them, "
            f"got {type(key).__name__}"
        )


def encode_block(
    parent_hash: bytes, token_ids: Sequence[int], extra_keys: Sequence[ExtraKey] = ()
) -> bytes:
    """The exact bytes a block hash is taken of.

    Layout: ``len(parent) | parent | num_tokens | tokens as <int64 ... | extra
    keys as one tagged tuple``. Every field is length-prefixed, so no two
    different (parent, tokens, extras) triples give the same bytes.
    """
    try:
        packed = struct.pack(f"<{len(token_ids)}q", *token_ids)
    except struct.error as e:
        raise InvalidRequestError(f"token ids must be integers in the int64 range ({e})") from None
    out = [_U32.pack(len(parent_hash)), bytes(parent_hash), _U32.pack(len(token_ids)), packed]
    _encode_key(tuple(extra_keys), out)
    return b"".join(out)


def hash_block(
    parent_hash: bytes,
    token_ids: Sequence[int],
    extra_keys: Sequence[ExtraKey] = (),
    hash_fn: str | HashFn = "sha256",
) -> bytes:
    """Hash of one block: covers its parent's hash, its token ids and its extra keys."""
    return resolve_hash_fn(hash_fn)(encode_block(parent_hash, token_ids, extra_keys))


def block_extra_keys(
    index: int, salt: str | None, extra_keys: Sequence[ExtraKey] = ()
) -> tuple[ExtraKey, ...]:
    """Extra keys of block ``index``: ``extra_keys`` everywhere, plus the salt on block 0.

    The salt only needs to enter the first block: the chain carries it into
    every later hash.
    """
    if index == 0 and salt is not None:
        return ((SALT_KEY, salt), *extra_keys)
    return tuple(extra_keys)


def _as_tokens(token_ids: Sequence[int]) -> list[int]:
    try:
        return [operator.index(t) for t in token_ids]
    except TypeError as e:
        raise InvalidRequestError(f"token ids must be integers: {e}") from None


def _iter_blocks(
    tokens: list[int],
    block_size: int,
    salt: str | None,
    extra_keys: Sequence[ExtraKey],
    fn: HashFn,
    num_blocks: int,
) -> Iterator[tuple[bytes, tuple[int, ...], tuple[ExtraKey, ...]]]:
    """(hash, tokens, extra keys) of the first ``num_blocks`` full blocks, lazily."""
    parent = ROOT_HASH
    for i in range(num_blocks):
        toks = tuple(tokens[i * block_size : (i + 1) * block_size])
        extra = block_extra_keys(i, salt, extra_keys)
        parent = fn(encode_block(parent, toks, extra))
        yield parent, toks, extra


def chain_block_hashes(
    token_ids: Sequence[int],
    block_size: int,
    salt: str | None = None,
    extra_keys: Sequence[ExtraKey] = (),
    hash_fn: str | HashFn = "sha256",
) -> list[bytes]:
    """Hash every *full* block of ``token_ids``, each hash covering its parent's.

    Block i's hash is ``H(parent_hash_i, tokens of block i, extra keys of block i)``
    with ``parent_hash_0 = ROOT_HASH``; the salt enters block 0's extra keys.
    A trailing partial block gets no hash: it cannot be shared yet.

    >>> len(chain_block_hashes(list(range(40)), block_size=16))
    2
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    tokens = _as_tokens(token_ids)
    fn = resolve_hash_fn(hash_fn)
    blocks = _iter_blocks(tokens, block_size, salt, extra_keys, fn, len(tokens) // block_size)
    return [h for h, _, _ in blocks]


@dataclass
class _Entry:
    """What the cache knows about one cached block.

    ``uid`` is unique per caching event and never reused; ``parent_uid`` is
    the uid of the cached block holding this block's prefix (0: none, first
    block). Comparing uids instead of parent hashes is what makes verification
    safe when two *different* prefixes share a hash. The price, under
    ``verify`` only: a cached child whose parent entry was evicted and cached
    again (new uid) misses until its own sequence inserts again (re-link).
    """

    block_id: int
    block_hash: bytes
    tokens: tuple[int, ...]
    extra_keys: tuple[ExtraKey, ...]
    parent_uid: int
    uid: int

    def holds(
        self, parent_uid: int, tokens: tuple[int, ...], extra_keys: tuple[ExtraKey, ...]
    ) -> bool:
        """True when this block's K/V is exactly that block after that cached prefix."""
        return (
            self.parent_uid == parent_uid
            and self.tokens == tokens
            and self.extra_keys == extra_keys
        )


class BlockHashCache:
    """A :class:`~minikv.prefix.PrefixCache` over chained block hashes (vLLM v1 style).

    Owns blocks ``0 .. num_blocks - 1``. Each block is *used* (ref > 0),
    *evictable* (ref 0, still cached) or *free* (ref 0, no hash); the last two
    share one LRU free queue (an ``OrderedDict``: O(1) removal from the middle
    when a hit revives a block).

    ``hash_fn``: ``"sha256"`` (default), ``"xxh3_128"``, ``"xxh64"`` or any
    ``bytes -> bytes`` callable. ``verify`` (default: on unless the hash is
    sha256) makes every hit also compare the block's token ids, extra keys and
    parent block with what the cache stored, so a hash collision costs a miss,
    never wrong K/V. A detected collision counts in ``stats().collisions``.

    ``match`` and ``insert`` also take ``extra_keys``, mixed into every block's
    hash (e.g. ``(("lora", 3),)``); requests share blocks only with equal keys.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        hash_fn: str | HashFn = "sha256",
        verify: bool | None = None,
    ) -> None:
        _check_sizes(num_blocks, block_size)
        self.num_blocks = int(num_blocks)
        self.block_size = int(block_size)
        self._hash = resolve_hash_fn(hash_fn)
        self.hash_fn_name: str = (
            hash_fn if isinstance(hash_fn, str) else getattr(hash_fn, "__name__", "custom")
        )
        self.verify = (hash_fn not in TRUSTED_HASHES) if verify is None else bool(verify)
        self._ref = [0] * self.num_blocks
        self._by_hash: dict[bytes, _Entry] = {}
        self._by_block: dict[int, _Entry] = {}
        self._uids = itertools.count(1)
        self._reset_pool_and_counters()

    def _reset_pool_and_counters(self) -> None:
        self._free_queue: OrderedDict[int, None] = OrderedDict.fromkeys(range(self.num_blocks))
        self._num_evictable = 0
        self._requests = 0
        self._query_tokens = 0
        self._hit_tokens = 0
        self._evictions = 0
        self._collisions = 0

    # ----------------------------------------------------------------- queries

    @property
    def num_allocatable(self) -> int:
        return len(self._free_queue)

    def ref_count(self, block_id: int) -> int:
        return self._ref[block_id]

    def is_cached(self, block_id: int) -> bool:
        return block_id in self._by_block

    def block_hash(self, block_id: int) -> bytes | None:
        """The hash a block is cached under, or None."""
        entry = self._by_block.get(block_id)
        return None if entry is None else entry.block_hash

    def free_queue(self) -> list[int]:
        """Unreferenced blocks, head (next to be reused) first. O(n): for tests and teaching."""
        return list(self._free_queue)

    def stats(self) -> CacheStats:
        used = self.num_blocks - len(self._free_queue)
        return CacheStats(
            num_blocks=self.num_blocks,
            block_size=self.block_size,
            num_used=used,
            num_evictable=self._num_evictable,
            num_free=len(self._free_queue) - self._num_evictable,
            num_cached=len(self._by_block),
            requests=self._requests,
            query_tokens=self._query_tokens,
            hit_tokens=self._hit_tokens,
            evictions=self._evictions,
            collisions=self._collisions,
        )

    # -------------------------------------------------------------- operations

    def match(
        self,
        token_ids: Sequence[int],
        salt: str | None = None,
        *,
        extra_keys: Sequence[ExtraKey] = (),
    ) -> Match:
        """Longest cached prefix in full blocks (last-token rule applied); takes a ref on each hit.

        Walks the hash chain from the first block and stops at the first miss.
        A hit on an evictable block revives it (it leaves the free queue).
        """
        tokens = _as_tokens(token_ids)
        limit = max_cached_blocks(len(tokens), self.block_size)
        hits: list[int] = []
        parent_uid = 0
        blocks = _iter_blocks(tokens, self.block_size, salt, extra_keys, self._hash, limit)
        for h, toks, extra in blocks:
            entry = self._by_hash.get(h)
            if entry is None:
                break
            if self.verify and not entry.holds(parent_uid, toks, extra):
                self._collisions += 1
                break
            hits.append(entry.block_id)
            parent_uid = entry.uid
        for b in hits:
            if self._ref[b] == 0:
                del self._free_queue[b]
                self._num_evictable -= 1
            self._ref[b] += 1
        self._requests += 1
        self._query_tokens += len(tokens)
        self._hit_tokens += len(hits) * self.block_size
        return Match(tuple(hits), len(hits) * self.block_size)

    def allocate(self, n: int) -> list[int]:
        """``n`` blocks from the head of the free queue, ref 1 each; cached ones lose their hash.

        This is strict LRU over *all* unreferenced blocks, as in vLLM: a cached
        block at the head is evicted even if a never-cached block waits behind it.
        All-or-nothing: raises :class:`KVCacheFull` and changes nothing when short.
        """
        if n < 0:
            raise ValueError(f"cannot allocate a negative number of blocks ({n})")
        if n > len(self._free_queue):
            used = self.num_blocks - len(self._free_queue)
            raise KVCacheFull(
                f"the KV pool has {len(self._free_queue)} free or evictable blocks of "
                f"{self.block_size} tokens but {n} are needed ({used} of {self.num_blocks} "
                f"blocks are held by running requests); raise num_blocks or kv_cache_memory, "
                f"or shorten the prompt"
            )
        out = []
        for _ in range(n):
            b, _ = self._free_queue.popitem(last=False)
            if b in self._by_block:
                self._forget(b)
                self._num_evictable -= 1
                self._evictions += 1
            self._ref[b] = 1
            out.append(b)
        return out

    def insert(
        self,
        token_ids: Sequence[int],
        block_ids: Sequence[int],
        salt: str | None = None,
        *,
        extra_keys: Sequence[ExtraKey] = (),
    ) -> int:
        """Cache the full blocks of a sequence; returns how many blocks became newly cached.

        ``token_ids``: the tokens whose K/V are written; ``block_ids``: the
        sequence's block table (held by the caller). Call it again as blocks
        fill: blocks already cached are skipped without rehashing. A block
        whose hash another block already caches is a duplicate: it stays
        uncached and is freed normally on release. Under ``verify``, a hash
        held by *different* content (a collision) stops caching there.
        """
        tokens = _as_tokens(token_ids)
        ids = as_block_ids(block_ids)
        bs = self.block_size
        num_full = len(tokens) // bs
        if num_full > len(ids):
            raise ValueError(
                f"{len(tokens)} tokens fill {num_full} blocks of {bs}, but the block table "
                f"has only {len(ids)} blocks"
            )
        for b in ids[:num_full]:
            if not 0 <= b < self.num_blocks or self._ref[b] == 0:
                raise BlockAllocatorError(
                    f"block {b} is not held by anyone; insert only blocks that match() or "
                    f"allocate() gave the sequence and that it has not released"
                )
        newly = 0
        parent, parent_uid = ROOT_HASH, 0
        for i in range(num_full):
            b = ids[i]
            toks = tuple(tokens[i * bs : (i + 1) * bs])
            extra = block_extra_keys(i, salt, extra_keys)
            own = self._by_block.get(b)
            if own is not None:  # cached earlier by this sequence, or a hit
                if own.tokens != toks or own.extra_keys != extra:
                    raise ValueError(
                        f"block {b} is cached for other tokens or keys than block {i} of this "
                        f"sequence; pass the sequence's own tokens, block table and salt"
                    )
                own.parent_uid = parent_uid  # re-link, in case its old parent was evicted
                parent, parent_uid = own.block_hash, own.uid
                continue
            h = self._hash(encode_block(parent, toks, extra))
            other = self._by_hash.get(h)
            if other is not None:
                if self.verify and not other.holds(parent_uid, toks, extra):
                    self._collisions += 1
                    break
                parent, parent_uid = h, other.uid  # duplicate: b stays uncached
                continue
            entry = _Entry(b, h, toks, extra, parent_uid, next(self._uids))
            self._by_hash[h] = entry
            self._by_block[b] = entry
            newly += 1
            parent, parent_uid = h, entry.uid
        return newly

    def release(self, block_ids: Sequence[int]) -> None:
        """Drop one ref on each block, walking the list *tail first*.

        Blocks reaching ref 0 join the tail of the free queue, so a finished
        sequence's last blocks (longest prefixes, least likely to be shared)
        are evicted before its first ones. Cached blocks keep their hash there.
        Validates everything first: an unknown, unheld or repeated id raises
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
        for b in reversed(ids):
            self._ref[b] -= 1
            if self._ref[b] == 0:
                self._free_queue[b] = None
                if b in self._by_block:
                    self._num_evictable += 1

    def evict(self, n: int) -> int:
        """Forget the hashes of up to ``n`` evictable blocks, least recently used first.

        The blocks stay where they are in the free queue, now as plain free blocks.
        """
        cached_lru_first = (b for b in self._free_queue if b in self._by_block)
        victims = list(itertools.islice(cached_lru_first, max(n, 0)))
        for b in victims:
            self._forget(b)
        self._num_evictable -= len(victims)
        self._evictions += len(victims)
        return len(victims)

    def reset(self) -> None:
        """Forget every cached block, restore the free queue to ``0 .. n-1`` and zero the counters.

        Raises :class:`PrefixCacheError` (and changes nothing) while any block
        is in use: running requests would otherwise hold blocks the cache no
        longer accounts for. Call it when the engine is idle.
        """
        used = self.num_blocks - len(self._free_queue)
        if used:
            raise PrefixCacheError(
                f"cannot reset the prefix cache while {used} blocks are in use; finish or "
                f"abort the running requests first"
            )
        self._by_hash.clear()
        self._by_block.clear()
        self._reset_pool_and_counters()

    def _forget(self, block_id: int) -> None:
        entry = self._by_block.pop(block_id)
        del self._by_hash[entry.block_hash]

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"BlockHashCache(num_blocks={self.num_blocks}, block_size={self.block_size}, "
            f"hash_fn={self.hash_fn_name!r}, used={s.num_used}, evictable={s.num_evictable}, "
            f"free={s.num_free}, hit_rate={s.hit_rate:.1%})"
        )

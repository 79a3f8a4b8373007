"""Chapter 03: prefix caching with block hashes (see chapters/03_prefix_hashing.ipynb).

Exercises 3.1-3.3: name every full block of a prompt by a hash that covers
its whole prefix, find the longest cached prefix of a new prompt, and keep
the pool's blocks in a ref-counted LRU free queue so that cached blocks
survive until the pool needs the room. The pool plugs into the engine:
``LLM(model, prefix_cache=make_pool)``, ``make_pool(num_blocks, block_size)``
returning a ``BlockPool``. Check your work with
``minikv grade --chapter 3``, or ``minikv.grade.check("3.1")`` in the notebook.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

from minikv.errors import KVCacheFull
from minikv.prefix import CacheStats, Match, PrefixCacheError
from minikv.prefix.hashing import ROOT_HASH, encode_block


def chain_block_hashes(token_ids: Sequence[int], block_size: int, salt: str | None = None) -> list[bytes]:
    """Exercise 3.1: chain block hashes.

    Cut ``token_ids`` into blocks of ``block_size`` tokens and return one
    32-byte hash per *full* block; a trailing partial block gets no hash (it
    cannot be shared yet: its next tokens are not known).

    Block ``i``'s hash covers everything before it, through its parent::

        hash_i = sha256(encode_block(parent_i, tokens of block i, extra_keys_i)).digest()

    with ``parent_0 = ROOT_HASH`` (a constant) and ``parent_i = hash_{i-1}``.
    ``encode_block`` (from ``minikv.prefix.hashing``) turns the three parts
    into bytes with every field length-prefixed; never use Python's
    ``hash()``, which is salted differently in every process.

    ``extra_keys_0`` is ``(("cache_salt", salt),)`` when a ``salt`` is given,
    and every other block's extra keys are ``()``: the chain carries the salt
    from block 0 into every later hash.

    >>> len(chain_block_hashes(list(range(40)), block_size=16))   # 2 full blocks + 8 tokens
    2
    >>> a, b = chain_block_hashes([1, 2, 3, 4], 2), chain_block_hashes([9, 2, 3, 4], 2)
    >>> a[1] != b[1]   # same tokens in block 1, different parent
    True
    """
    ### BEGIN SOLUTION
    hashes: list[bytes] = []
    parent = ROOT_HASH
    for i in range(len(token_ids) // block_size):
        block = list(token_ids[i * block_size : (i + 1) * block_size])
        extra = (("cache_salt", salt),) if i == 0 and salt is not None else ()
        parent = hashlib.sha256(encode_block(parent, block, extra)).digest()
        hashes.append(parent)
    return hashes
    ### END SOLUTION


def longest_cache_hit(cached: dict[bytes, int], token_ids: Sequence[int], block_size: int,
                      salt: str | None = None) -> list[int]:
    """Exercise 3.2: longest cache hit.

    ``cached`` maps a block hash (as ``chain_block_hashes`` computes it) to
    the id of the block that holds that block's K/V. Return the ids of the
    blocks that hold the longest cached prefix of ``token_ids``, in order:
    walk the prompt's block hashes from the first and stop at the first one
    that is not cached (a later block can only be used after its prefix).

    **The last-token rule.** The model must run on at least the prompt's last
    token, because its logits give the first output token. So at most
    ``len(token_ids) - 1`` tokens may come from the cache, rounded down to
    whole blocks: a fully cached 48-token prompt in blocks of 16 hits 2
    blocks (32 tokens), a 49-token one hits 3.

    >>> hashes = chain_block_hashes(list(range(48)), 16)
    >>> cached = {hashes[0]: 7, hashes[1]: 3, hashes[2]: 5}
    >>> longest_cache_hit(cached, list(range(48)), 16), longest_cache_hit(cached, list(range(49)), 16)
    ([7, 3], [7, 3, 5])
    """
    ### BEGIN SOLUTION
    usable = max(0, (len(token_ids) - 1) // block_size)  # blocks that may hit: the last token is computed
    hits: list[int] = []
    for h in chain_block_hashes(list(token_ids[: usable * block_size]), block_size, salt):
        if h not in cached:
            break
        hits.append(cached[h])
    return hits
    ### END SOLUTION


class BlockPool:
    """Exercise 3.3: ref-counted LRU block pool.

    Owns the KV pool's blocks ``0 .. num_blocks - 1`` and caches full blocks
    by hash, the way vLLM v1 does. Each block is

    * **used**: ``ref_counts[b] > 0``, held by running requests;
    * **evictable**: ref 0 but still cached: its hash is in ``cached``;
    * **free**: ref 0 and no hash.

    ``__init__`` sets up these attributes (the methods written for you at
    the bottom read them, so keep the names):

    * ``ref_counts``: a list, the number of references on each block;
    * ``free_blocks``: an ``OrderedDict`` (block id -> ``None``) of every
      unreferenced block, evictable or free. Its order *is* the LRU order: the
      head (first key) is reused first, released blocks join the tail
      (``d[b] = None``), and ``del d[b]`` takes one out of the middle in O(1);
    * ``cached``: block hash -> block id, and ``hash_of``: block id -> block
      hash, for the cached blocks (both kept in step);
    * ``requests``, ``query_tokens``, ``hit_tokens``, ``evictions``: counters.

    The methods are those of minikv's ``PrefixCache``, so the engine can use
    the pool (``LLM(model, prefix_cache=lambda n, bs: BlockPool(n, bs))``):

    * ``match(token_ids, salt)``: the longest cache hit (3.2) as a
      ``Match(block_ids, num_cached_tokens)``. Take one reference on each hit
      block; a hit block with ref 0 leaves ``free_blocks`` (it is revived:
      used again, so no longer evictable). Count the query: ``requests += 1``,
      ``query_tokens += len(token_ids)``, ``hit_tokens += num_cached_tokens``.
    * ``allocate(n)``: take ``n`` blocks from the head of ``free_blocks``,
      ref 1 each. A cached block taken there loses its hash (that is
      eviction: ``evictions += 1``). If fewer than ``n`` wait, raise
      ``KVCacheFull`` and change nothing.
    * ``insert(token_ids, block_ids, salt)``: the K/V of ``token_ids`` is
      written in the blocks ``block_ids`` (a sequence's block table); cache
      every full block not cached yet (both ``cached`` and ``hash_of``).
      Skip a block whose hash another block already caches (a duplicate: it
      stays uncached). Return how many blocks became cached.
    * ``release(block_ids)``: drop one reference on each block, walking the
      list **from the last block to the first**; a block reaching ref 0 joins
      the tail of ``free_blocks`` (keeping its hash). So a finished
      request's last blocks, the least likely to be shared, are reused first.
    * ``evict(n)``: forget the hashes of up to ``n`` evictable blocks, in
      ``free_blocks`` order (LRU first), never a block in use; they stay in
      ``free_blocks`` as free blocks. Return how many were forgotten and add
      them to ``evictions``.

    >>> pool = BlockPool(num_blocks=4, block_size=2)
    >>> table = pool.allocate(2); pool.insert([1, 2, 3, 4], table)
    2
    >>> pool.release(table); pool.free_queue()   # tail first: block 1 before block 0
    [2, 3, 1, 0]
    >>> pool.match([1, 2, 3, 4, 5]).block_ids, pool.free_queue()   # both revived
    ((0, 1), [2, 3])
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        """An empty pool: every block free, in the order ``0 .. num_blocks - 1``; every counter 0."""
        self.num_blocks = int(num_blocks)
        self.block_size = int(block_size)
        ### BEGIN SOLUTION
        self.ref_counts = [0] * self.num_blocks  # references per block
        self.free_blocks: OrderedDict[int, None] = OrderedDict.fromkeys(range(self.num_blocks))  # head = LRU
        self.cached: dict[bytes, int] = {}  # block hash -> block id
        self.hash_of: dict[int, bytes] = {}  # block id -> block hash, for cached blocks only
        self.requests = self.query_tokens = self.hit_tokens = self.evictions = 0
        ### END SOLUTION

    def match(self, token_ids: Sequence[int], salt: str | None = None) -> Match:
        """Longest cached prefix in full blocks (last-token rule); one reference taken on each hit block."""
        ### BEGIN SOLUTION
        hits = longest_cache_hit(self.cached, token_ids, self.block_size, salt)
        for b in hits:
            if self.ref_counts[b] == 0:
                del self.free_blocks[b]  # revived: evictable -> used
            self.ref_counts[b] += 1
        self.requests += 1
        self.query_tokens += len(token_ids)
        self.hit_tokens += len(hits) * self.block_size
        return Match(tuple(hits), len(hits) * self.block_size)
        ### END SOLUTION

    def allocate(self, n: int) -> list[int]:
        """``n`` blocks from the head of the free queue, ref 1 each; ``KVCacheFull`` (changing nothing) if short."""
        ### BEGIN SOLUTION
        if n > len(self.free_blocks):
            raise KVCacheFull(f"{n} blocks are needed but only {len(self.free_blocks)} are free or evictable")
        out = []
        for _ in range(n):
            b, _ = self.free_blocks.popitem(last=False)  # the least recently used
            if b in self.hash_of:  # a cached block: evict it
                del self.cached[self.hash_of.pop(b)]
                self.evictions += 1
            self.ref_counts[b] = 1
            out.append(b)
        return out
        ### END SOLUTION

    def insert(self, token_ids: Sequence[int], block_ids: Sequence[int], salt: str | None = None) -> int:
        """Cache the full blocks of a sequence whose K/V is written; returns how many became cached."""
        ### BEGIN SOLUTION
        newly = 0
        for h, b in zip(chain_block_hashes(token_ids, self.block_size, salt), block_ids):
            if b in self.hash_of or h in self.cached:  # cached already, here or in a duplicate block
                continue
            self.cached[h] = b
            self.hash_of[b] = h
            newly += 1
        return newly
        ### END SOLUTION

    def release(self, block_ids: Sequence[int]) -> None:
        """Drop one reference on each block, last block first; ref 0 joins the free queue's tail."""
        ### BEGIN SOLUTION
        for b in reversed(block_ids):
            self.ref_counts[b] -= 1
            if self.ref_counts[b] == 0:
                self.free_blocks[b] = None  # the tail: most recently used
        ### END SOLUTION

    def evict(self, n: int) -> int:
        """Forget up to ``n`` evictable blocks' hashes, least recently used first; returns how many."""
        ### BEGIN SOLUTION
        victims = [b for b in self.free_blocks if b in self.hash_of][: max(n, 0)]
        for b in victims:
            del self.cached[self.hash_of.pop(b)]
        self.evictions += len(victims)
        return len(victims)
        ### END SOLUTION

    # ---- written for you: views of the structures above (the engine and the grader use them) ----

    @property
    def num_allocatable(self) -> int:
        """Blocks ``allocate`` can hand out now: free plus evictable."""
        return len(self.free_blocks)

    def free_queue(self) -> list[int]:
        """Unreferenced blocks, head (next to be reused) first."""
        return list(self.free_blocks)

    def ref_count(self, block_id: int) -> int:
        return self.ref_counts[block_id]

    def is_cached(self, block_id: int) -> bool:
        return block_id in self.hash_of

    def stats(self) -> CacheStats:
        """Counters and the pool's block counts, as minikv's caches report them."""
        evictable = sum(1 for b in self.free_blocks if b in self.hash_of)
        return CacheStats(
            num_blocks=self.num_blocks, block_size=self.block_size,
            num_used=self.num_blocks - len(self.free_blocks), num_evictable=evictable,
            num_free=len(self.free_blocks) - evictable, num_cached=len(self.hash_of),
            requests=self.requests, query_tokens=self.query_tokens, hit_tokens=self.hit_tokens,
            evictions=self.evictions,
        )

    def reset(self) -> None:
        """Forget every cached block and zero the counters (only while no block is in use)."""
        used = self.num_blocks - len(self.free_blocks)
        if used:
            raise PrefixCacheError(f"cannot reset the prefix cache while {used} blocks are in use")
        self.__init__(self.num_blocks, self.block_size)  # type: ignore[misc]

    def __repr__(self) -> str:
        s = self.stats()
        return (f"BlockPool(num_blocks={self.num_blocks}, block_size={self.block_size}, used={s.num_used}, "
                f"evictable={s.num_evictable}, free={s.num_free})")

"""Prefix caching: reuse the K/V of a prompt's cached prefix across requests.

Every cache here implements :class:`PrefixCache` and owns all blocks of the
KV pool, so an engine's block manager uses it in place of a plain
``BlockAllocator``: ``match`` -> ``allocate`` the rest -> run -> ``insert``
full blocks -> ``release`` on finish. Pick one with :func:`make_prefix_cache`.

Rooms: :mod:`.base` (the protocol, ``Match``, ``CacheStats``, ``NoPrefixCache``),
:mod:`.ledger` (reference counts, the free queue, release validation and the
``KVCacheFull`` messages every cache shares), :mod:`.block_hashes` (the
chained block hashes), :mod:`.hashing` (``BlockHashCache``; its
policy-ordered eviction and miss reports in :mod:`.hash_policy`),
:mod:`.radix` (``RadixCache``, a package by job), :mod:`.policies` (the
eviction policies both caches take as ``policy=``; the adaptive one in
:mod:`.dueling`), :mod:`.ghost` (the ghost list of evicted blocks and the
bucket rules of ``explain_miss``), :mod:`.report` (``MissReport``) and
:mod:`.offload` (``OffloadTier``: the second level in host memory that both
caches take as ``offload=``; their sides of it in :mod:`.hash_offload` and
:mod:`.radix.offload`).
"""

from __future__ import annotations

from collections.abc import Callable

from minikv.errors import InvalidRequestError
from minikv.prefix.base import (
    CacheStats,
    Match,
    NoPrefixCache,
    PrefixCache,
    PrefixCacheError,
    max_cached_blocks,
)
from minikv.prefix.hashing import (
    HASH_FUNCTIONS,
    ROOT_HASH,
    BlockHashCache,
    chain_block_hashes,
    encode_block,
    hash_block,
)
from minikv.prefix.ledger import BlockLedger
from minikv.prefix.offload import OffloadTier
from minikv.prefix.radix import RadixCache

PREFIX_CACHE_KINDS: dict[str, Callable[..., PrefixCache]] = {
    "none": NoPrefixCache,
    "hash": BlockHashCache,
    "radix": RadixCache,
}
"""Constructors by kind name; each is called as ``(num_blocks, block_size, **kw)``."""


def make_prefix_cache(kind: str, num_blocks: int, block_size: int, **kw: object) -> PrefixCache:
    """A prefix cache of the named kind owning ``num_blocks`` blocks of ``block_size`` tokens.

    ``kw`` goes to the constructor (e.g. ``hash_fn="xxh3_128"`` for ``"hash"``).

    >>> make_prefix_cache("hash", num_blocks=8, block_size=16).stats().num_free
    8
    """
    try:
        factory = PREFIX_CACHE_KINDS[kind]
    except (KeyError, TypeError):
        choices = ", ".join(repr(k) for k in PREFIX_CACHE_KINDS)
        raise InvalidRequestError(f"unknown prefix cache {kind!r}; choose one of {choices}") from None
    return factory(num_blocks, block_size, **kw)


__all__ = [
    "HASH_FUNCTIONS",
    "PREFIX_CACHE_KINDS",
    "ROOT_HASH",
    "BlockHashCache",
    "BlockLedger",
    "CacheStats",
    "Match",
    "NoPrefixCache",
    "OffloadTier",
    "PrefixCache",
    "PrefixCacheError",
    "RadixCache",
    "chain_block_hashes",
    "encode_block",
    "hash_block",
    "make_prefix_cache",
    "max_cached_blocks",
]

"""KV storage: the paged pool's tensors, block tables and slot mapping, the contiguous caches, a block allocator.

- :class:`KVPool` (``pool``): the paged layout's K/V tensors, cut into blocks;
  tensors only, plus ``copy_block(s)`` for copy-on-write. Which block is
  used, evictable or free is the prefix cache's ledger (:mod:`minikv.prefix`).
- :class:`BlockTable`, :func:`slot_mapping` (``block_table``): where a
  sequence's tokens live in the pool.
- :class:`PaddedKVCache` (``padded``): the batched contiguous baseline, one
  padded row per sequence; :class:`~minikv.kv.contiguous.ContiguousKVCache`:
  chapter 01's one-sequence cache.
- :class:`BlockAllocator` (``allocator``): a plain free list of block ids
  (chapter 02 builds one; ``NoPrefixCache`` hands blocks out through one).
"""

from minikv.kv.allocator import BlockAllocator
from minikv.kv.block_table import BlockTable, cdiv, make_block_table_tensor, slot_mapping
from minikv.kv.padded import PaddedKVCache
from minikv.kv.pool import KVPool, bytes_per_token

__all__ = [
    "BlockAllocator",
    "BlockTable",
    "KVPool",
    "PaddedKVCache",
    "bytes_per_token",
    "cdiv",
    "make_block_table_tensor",
    "slot_mapping",
]

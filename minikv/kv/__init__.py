"""Paged KV cache: block allocator, KV pool, block tables and slot mapping."""

from minikv.kv.allocator import BlockAllocator
from minikv.kv.block_table import BlockTable, cdiv, make_block_table_tensor, slot_mapping
from minikv.kv.pool import KVPool, bytes_per_token

__all__ = [
    "BlockAllocator",
    "BlockTable",
    "KVPool",
    "bytes_per_token",
    "cdiv",
    "make_block_table_tensor",
    "slot_mapping",
]

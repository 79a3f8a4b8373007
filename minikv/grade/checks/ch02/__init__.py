"""Chapter 02 (paged KV): exercises 2.1 block allocator, 2.2 slot mapping, 2.3 block table growth, 2.4 paged decode attention.

References: :class:`minikv.kv.allocator.BlockAllocator`, :func:`minikv.kv.block_table.slot_mapping`,
:class:`minikv.kv.block_table.BlockTable`, :func:`minikv.attention.torch_ref.paged_decode_attention`.
One module per job: :mod:`.alloc` (2.1, differential allocate/free traces), :mod:`.tables` (2.2, 2.3),
:mod:`.paged` (2.4 and its engine check).
"""

from minikv.grade.checks.ch02 import alloc, paged, tables

__all__ = ["alloc", "paged", "tables"]

"""KVPool sizing and layout, BlockTable growth, slot mapping, block-table tensors."""

from __future__ import annotations

import pytest
import torch

from minikv.errors import KVCacheFull
from minikv.kv import (
    BlockAllocator,
    BlockTable,
    KVPool,
    bytes_per_token,
    make_block_table_tensor,
    slot_mapping,
)

# ---------------------------------------------------------------- KVPool


def test_bytes_per_token_formula() -> None:
    # SmolLM2-135M: 30 layers, 3 kv heads, head_dim 64, bf16 -> 2*30*3*64*2 bytes
    assert bytes_per_token(30, 3, 64, torch.bfloat16) == 23_040
    assert bytes_per_token(2, 4, 16, torch.float32) == 2 * 2 * 4 * 16 * 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_pool_sized_from_memory_budget(dtype: torch.dtype) -> None:
    layers, heads, dim, bs = 3, 2, 8, 16
    per_block = 2 * layers * bs * heads * dim * dtype.itemsize
    budget = 10 * per_block + per_block - 1  # just short of 11 blocks
    pool = KVPool(layers, heads, dim, bs, memory_bytes=budget, dtype=dtype)
    assert pool.num_blocks == 10
    assert pool.bytes_per_block == per_block
    assert pool.bytes_per_token == per_block // bs
    assert pool.capacity_tokens == 160
    assert pool.memory_bytes == 10 * per_block <= budget
    assert pool.kv.numel() * pool.kv.element_size() == pool.memory_bytes
    assert not hasattr(pool, "allocator"), "the pool holds tensors only; the prefix cache owns the blocks"


@pytest.mark.parametrize("num_tokens", [0, 1, 3, 5])
def test_copy_block_copies_the_leading_slots_of_every_layer(num_tokens: int) -> None:
    pool = KVPool(num_layers=2, num_kv_heads=3, head_dim=4, block_size=5, num_blocks=4)
    pool.kv.copy_(torch.randn(pool.kv.shape, generator=torch.Generator().manual_seed(num_tokens)))
    before = pool.kv.clone()
    pool.copy_block(1, 3, num_tokens)
    want = before.clone()
    want[:, :, 3, :num_tokens] = before[:, :, 1, :num_tokens]
    assert torch.equal(pool.kv, want)  # K and V, every layer; the rest of block 3 and every other block untouched
    pool.copy_blocks([(0, 2, 2), (2, 1, 5)])  # in order: block 1 gets block 2 after block 2 got block 0's first slots
    want[:, :, 2, :2] = want[:, :, 0, :2]
    want[:, :, 1] = want[:, :, 2]
    assert torch.equal(pool.kv, want)


def test_copy_block_refuses_bad_ids_and_counts() -> None:
    pool = KVPool(num_layers=1, num_kv_heads=1, head_dim=2, block_size=4, num_blocks=3)
    with pytest.raises(IndexError, match="outside the pool's blocks 0..2"):
        pool.copy_block(0, 3, 1)
    with pytest.raises(ValueError, match="num_tokens must be in 0..4"):
        pool.copy_block(0, 1, 5)


def test_pool_layout_and_views() -> None:
    pool = KVPool(num_layers=2, num_kv_heads=3, head_dim=4, block_size=5, num_blocks=7)
    assert pool.capacity_tokens == 35
    for layer in range(2):
        for cache in (pool.k_cache(layer), pool.v_cache(layer)):
            assert cache.shape == (7, 5, 3, 4) and cache.dtype == torch.float32
            assert cache.is_contiguous()
            assert torch.count_nonzero(cache) == 0
    # the four caches are distinct views of one allocation
    pool.k_cache(1)[2, 3] = 1.0
    assert pool.kv[0, 1, 2, 3].eq(1).all()
    assert torch.count_nonzero(pool.k_cache(0)) == 0 and torch.count_nonzero(pool.v_cache(1)) == 0
    # slot = block * block_size + offset indexes the flat view
    flat = pool.k_cache(1).view(-1, 3, 4)
    assert flat[2 * 5 + 3].eq(1).all() and torch.count_nonzero(flat) == 12


def test_zero_block_budget_raises_kv_cache_full() -> None:
    per_block = 2 * 1 * 16 * 2 * 8 * 4
    with pytest.raises(KVCacheFull, match=f"at least {per_block}"):
        KVPool(1, 2, 8, 16, memory_bytes=per_block - 1)
    with pytest.raises(KVCacheFull):
        KVPool(1, 2, 8, 16, num_blocks=0)
    assert KVPool(1, 2, 8, 16, memory_bytes=per_block).num_blocks == 1


def test_exactly_one_of_num_blocks_or_memory() -> None:
    with pytest.raises(ValueError):
        KVPool(1, 1, 8, 16)
    with pytest.raises(ValueError):
        KVPool(1, 1, 8, 16, num_blocks=4, memory_bytes=1 << 20)


# ------------------------------------------------------------ BlockTable


@pytest.mark.parametrize("block_size", [1, 16, 32])
def test_block_table_grows_across_block_boundaries(block_size: int) -> None:
    alloc = BlockAllocator(64)
    alloc.allocate(64)
    alloc.free(list(range(63, -1, -1)))  # hand blocks out in descending order: 63, 62, ...
    t = BlockTable(block_size)
    # one token, up to the boundary, across it, then a big chunk
    chunks = [1, block_size - 1, 1, 2 * block_size + 1, 0, block_size + 3]
    all_slots: list[int] = []
    for n in chunks:
        expected_new = -(-(t.num_tokens + n) // block_size) - len(t.blocks)
        assert t.blocks_needed(n) == expected_new
        free_before = alloc.num_free
        slots = t.append_tokens(n, alloc)
        assert free_before - alloc.num_free == expected_new
        assert len(slots) == n
        all_slots += slots
        assert len(t.blocks) == -(-t.num_tokens // block_size)
    assert t.num_tokens == sum(chunks)
    assert t.blocks == list(range(63, 63 - len(t.blocks), -1))
    expected = [t.blocks[p // block_size] * block_size + p % block_size for p in range(t.num_tokens)]
    assert all_slots == expected == [t.slot(p) for p in range(t.num_tokens)]
    assert slot_mapping(t.blocks, range(t.num_tokens), block_size) == expected
    t.free(alloc)
    assert alloc.num_free == 64 and t.blocks == [] and t.num_tokens == 0


def test_slot_values_by_hand() -> None:
    # blocks [7, 2, 5] of 4 tokens: position 0 -> 28, 3 -> 31, 4 -> 8, 9 -> 21
    assert slot_mapping([7, 2, 5], [0, 3, 4, 9, 11], 4) == [28, 31, 8, 21, 23]
    assert slot_mapping([3], [0], 1) == [3]
    t = BlockTable(4, blocks=[7, 2, 5], num_tokens=10)
    assert [t.slot(p) for p in (0, 3, 4, 9)] == [28, 31, 8, 21]
    with pytest.raises(IndexError):
        t.slot(10)
    with pytest.raises(IndexError):
        slot_mapping([7, 2, 5], [12], 4)
    with pytest.raises(IndexError):
        slot_mapping([7, 2, 5], [-1], 4)


def test_block_table_from_cached_prefix_fills_last_block_first() -> None:
    alloc = BlockAllocator(8)
    prefix = alloc.allocate(2)  # e.g. a prefix-cache hit of 6 tokens in 2 blocks of 4
    t = BlockTable(4, blocks=prefix, num_tokens=6)
    assert t.capacity == 8 and t.blocks_needed(2) == 0 and t.blocks_needed(3) == 1
    assert t.append_tokens(2, alloc) == [prefix[1] * 4 + 2, prefix[1] * 4 + 3]
    assert alloc.num_free == 6
    with pytest.raises(ValueError):
        BlockTable(4, blocks=[0], num_tokens=5)


def test_make_block_table_tensor() -> None:
    t = make_block_table_tensor([[3, 1], [], [4, 0, 2]])
    assert t.dtype == torch.long
    assert t.tolist() == [[3, 1, -1], [-1, -1, -1], [4, 0, 2]]
    t0 = make_block_table_tensor([[3, 1], [5]], pad=0, max_blocks=4)
    assert t0.tolist() == [[3, 1, 0, 0], [5, 0, 0, 0]]
    assert make_block_table_tensor([]).shape == (0, 0)
    with pytest.raises(ValueError):
        make_block_table_tensor([[1, 2, 3]], max_blocks=2)

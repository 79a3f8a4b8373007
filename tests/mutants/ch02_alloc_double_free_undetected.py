"""2.1 bug: free checks that an id is in range but not that it is in use, so a double free
puts the same block on the free list twice (and it will be handed to two sequences)."""

from minikv.errors import BlockAllocatorError, KVCacheFull

TARGET = "2.1"
EXPECT = "not in use (double free?)"


class BlockAllocator:
    def __init__(self, num_blocks):
        self.num_blocks = num_blocks
        self.free_ids = list(range(num_blocks))

    @property
    def num_free(self):
        return len(self.free_ids)

    def allocate(self, n):
        if n > len(self.free_ids):
            raise KVCacheFull(f"needed {n} blocks")
        ids, self.free_ids = self.free_ids[:n], self.free_ids[n:]
        return ids

    def free(self, block_ids):
        ids = list(block_ids)
        for b in ids:
            if not 0 <= b < self.num_blocks:
                raise BlockAllocatorError(f"block {b} is not in the pool")
        self.free_ids += ids

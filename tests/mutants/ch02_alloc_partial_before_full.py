"""2.1 bug: allocate takes blocks one by one and raises KVCacheFull only when the free list runs dry,
losing the blocks it already took."""

from minikv.errors import BlockAllocatorError, KVCacheFull

TARGET = "2.1"
EXPECT = "a failed allocate must hand out nothing"


class BlockAllocator:
    def __init__(self, num_blocks):
        self.num_blocks = num_blocks
        self.free_ids = list(range(num_blocks))
        self.used = [False] * num_blocks

    @property
    def num_free(self):
        return len(self.free_ids)

    def allocate(self, n):
        ids = []
        for _ in range(n):
            if not self.free_ids:
                raise KVCacheFull(f"needed {n} blocks")
            ids.append(self.free_ids.pop(0))
        for b in ids:
            self.used[b] = True
        return ids

    def free(self, block_ids):
        ids = list(block_ids)
        for i, b in enumerate(ids):
            if not 0 <= b < self.num_blocks or not self.used[b] or b in ids[:i]:
                raise BlockAllocatorError(f"bad block {b}")
        for b in ids:
            self.used[b] = False
            self.free_ids.append(b)

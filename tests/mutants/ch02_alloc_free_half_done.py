"""2.1 bug: free validates each id as it goes, so the ids before a bad one are already freed when it raises."""

from minikv.errors import BlockAllocatorError, KVCacheFull

TARGET = "2.1"
EXPECT = "a failed free must free nothing"


class BlockAllocator:
    def __init__(self, num_blocks):
        self.num_blocks = num_blocks
        self.free_ids = list(range(num_blocks))
        self.used = [False] * num_blocks

    @property
    def num_free(self):
        return len(self.free_ids)

    def allocate(self, n):
        if n > len(self.free_ids):
            raise KVCacheFull(f"needed {n} blocks")
        ids = [self.free_ids.pop() for _ in range(n)]
        for b in ids:
            self.used[b] = True
        return ids

    def free(self, block_ids):
        for b in block_ids:
            if not 0 <= b < self.num_blocks or not self.used[b]:
                raise BlockAllocatorError(f"bad block {b}")
            self.used[b] = False
            self.free_ids.append(b)

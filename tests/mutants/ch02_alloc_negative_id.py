"""2.1 bug: free looks ids up without a range check, so block -1 reads (and frees) the last block."""

from minikv.errors import BlockAllocatorError, KVCacheFull

TARGET = "2.1"
EXPECT = "outside the pool"


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
        ids, self.free_ids = self.free_ids[:n], self.free_ids[n:]
        for b in ids:
            self.used[b] = True
        return ids

    def free(self, block_ids):
        ids = list(block_ids)
        try:
            for i, b in enumerate(ids):
                if not self.used[b] or b in ids[:i]:
                    raise BlockAllocatorError(f"block {b} is already free")
        except IndexError:
            raise BlockAllocatorError(f"block {b} is not in the pool") from None
        for b in ids:
            self.used[b] = False
            self.free_ids.append(b)

"""3.3 bug: allocate reuses a cached block without forgetting its hash, so a later hit reads overwritten K/V."""

from minikv.errors import KVCacheFull
from minikv.grade import learner_module

TARGET = "3.3"
EXPECT = "should have lost its hash"

_solution = learner_module("ch03_prefix_hashing", "solutions")


class BlockPool(_solution.BlockPool):
    def allocate(self, n):
        if n > len(self.free_blocks):
            raise KVCacheFull(f"{n} blocks needed, {len(self.free_blocks)} free")
        out = []
        for _ in range(n):
            b, _ = self.free_blocks.popitem(last=False)
            self.ref_counts[b] = 1
            out.append(b)
        return out

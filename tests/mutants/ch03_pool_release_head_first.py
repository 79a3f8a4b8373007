"""3.3 bug: releases a table from its first block, so shared prefix blocks are reused before the tail."""

from minikv.grade import learner_module

TARGET = "3.3"
EXPECT = "released blocks join the tail, the table walked from its last block"

_solution = learner_module("ch03_prefix_hashing", "solutions")


class BlockPool(_solution.BlockPool):
    def release(self, block_ids):
        for b in block_ids:
            self.ref_counts[b] -= 1
            if self.ref_counts[b] == 0:
                self.free_blocks[b] = None

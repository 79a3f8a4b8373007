"""3.3 bug: evict picks cached blocks in insertion order, including blocks running requests still use."""

from minikv.grade import learner_module

TARGET = "3.3"
EXPECT = "lost its hash while in use"

_solution = learner_module("ch03_prefix_hashing", "solutions")


class BlockPool(_solution.BlockPool):
    def evict(self, n):
        victims = list(self.hash_of)[: max(n, 0)]
        for b in victims:
            del self.cached[self.hash_of.pop(b)]
        self.evictions += len(victims)
        return len(victims)

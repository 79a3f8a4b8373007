"""3.3 bug: a hit on an evictable block takes a reference but leaves the block in the free queue."""

from minikv.grade import learner_module
from minikv.prefix import Match

TARGET = "3.3"
EXPECT = "must have left the free queue"

_solution = learner_module("ch03_prefix_hashing", "solutions")


class BlockPool(_solution.BlockPool):
    def match(self, token_ids, salt=None):
        hits = _solution.longest_cache_hit(self.cached, token_ids, self.block_size, salt)
        for b in hits:
            self.ref_counts[b] += 1
        self.requests += 1
        self.query_tokens += len(token_ids)
        self.hit_tokens += len(hits) * self.block_size
        return Match(tuple(hits), len(hits) * self.block_size)

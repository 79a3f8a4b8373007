"""Chapter 04 (a radix-tree prefix cache): 4.1 match with split, 4.2 insert, 4.3 lock and unlock, 4.4 LRU leaf eviction.

Reference: :class:`minikv.prefix.RadixCache` at ``block_size=1, page_size=1`` (a node's ``block_ids`` are the
learner's ``values``), serving the learner's tree's request streams (:mod:`.tree_streams`), compared after every
step; hand-made cases (:mod:`.exercises`) run reference functions on a twin of the learner's tree
(:mod:`.trees`). 4.4 also serves ``RadixCache(num_blocks, block_size)``'s streams and ``LLM("tiny-llama")``
with the file's ``TreePrefixCache`` (:mod:`.prefix_cache`). Where the learner's other pieces are not right
minikv's are used (named in the PASS message), so each exercise's grade depends on its own code alone.
"""

from minikv.grade.checks.ch04 import exercises, prefix_cache, tree_streams, trees

__all__ = ["exercises", "prefix_cache", "tree_streams", "trees"]

"""Chapter 04 (a radix-tree prefix cache): 4.1 match with split, 4.2 insert, 4.3 lock and unlock, 4.4 LRU leaf eviction.

References: :class:`minikv.prefix.RadixCache` at ``block_size=1, page_size=1`` (one block per token, so
a node's ``block_ids`` are the learner's ``values``), driven through the same request streams as the
learner's tree and compared after every step (edges, values, locked nodes, access order, what evictions
free); hand-made cases compare with reference functions run on a twin of the learner's tree. 4.4 also
runs the learner's pieces behind the file's ``TreePrefixCache`` against ``RadixCache(num_blocks,
block_size)`` and in ``LLM("tiny-llama", prefix_cache=<factory>)``. Each check uses the learner's other
pieces where they are right and minikv's where they are not (named in the PASS message), so each
exercise's grade depends on its own code alone.

One module per job: :mod:`.trees` (minikv's pieces, trees as data and their diffs, twins),
:mod:`.tree_streams` (the differential request stream), :mod:`.exercises` (4.1-4.4 on the tree),
:mod:`.prefix_cache` (4.4 as a block-level prefix cache and in the engine).
"""

from minikv.grade.checks.ch04 import exercises, prefix_cache, tree_streams, trees

__all__ = ["exercises", "prefix_cache", "tree_streams", "trees"]

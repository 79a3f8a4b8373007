"""Chapter 03 (prefix caching with block hashes): 3.1 chain block hashes, 3.2 longest cache hit, 3.3 ref-counted LRU block pool.

References: :func:`minikv.prefix.chain_block_hashes` (byte for byte), :meth:`minikv.prefix.BlockHashCache.match`
and the whole :class:`minikv.prefix.BlockHashCache` (hypothesis-drawn request streams, and the worked example of
vLLM's prefix caching design document); 3.3's final check serves ``LLM("tiny-llama", prefix_cache=<factory>)``
with the learner's pool, compared with ``prefix_cache="hash"``. 3.2 and 3.3 call the learner's earlier pieces
by name; where one is not right, minikv's takes its place, so each exercise's grade depends on its own code.
"""

from minikv.grade.checks.ch03 import hashes, pool

__all__ = ["hashes", "pool"]

"""Chapter 08 (security and a second cache level): 8.1 score the timing attack on held-out trials,
8.2 salted block hashes with the public blocks shared, 8.3 a CPU tier's store and copy-back.

References: :mod:`minikv.security.auc` (``fit_threshold``, ``balanced_accuracy``, ``roc_auc``), the hash chain
of :mod:`minikv.prefix.hashing` (``chain_block_hashes`` for the first block's salt), and
:class:`minikv.prefix.offload.OffloadTier`; hand-made cases that each isolate one rule, then hypothesis-drawn
ones. 8.3's final check serves ``LLM("tiny-llama", prefix_cache="hash", cpu_offload_blocks=48,
cpu_offload_cls=HostTier)``: the learner's tier in place of minikv's.
"""

from minikv.grade.checks.ch08 import attack, salt, tier

__all__ = ["attack", "salt", "tier"]

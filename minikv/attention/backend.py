"""The attention backend interface: how a model layer hands q/k/v to the KV cache.

The model knows nothing about where K and V live. Every attention layer calls
``step.attend(layer, q, k, v)`` on an object the engine built for this forward
pass; that object stores the new K/V (contiguous per-sequence cache, paged
pool, ...) and returns the attention output for the new tokens. Swapping the
object swaps the KV layout and kernel without touching the model.

Tokens of all sequences in a step are flattened into one axis ("varlen"
layout, as in vLLM): ``q [T, num_heads, head_dim]`` holds sequence 0's new
tokens, then sequence 1's, and so on.
"""

from __future__ import annotations

from typing import Protocol

import torch


class AttentionStep(Protocol):
    """One forward pass's view of the KV cache."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store ``k, v [T, Hkv, D]`` for the new tokens, return attention output ``[T, Hq, D]``."""
        ...

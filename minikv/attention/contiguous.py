"""The contiguous backend: each sequence in the step has its own :class:`ContiguousKVCache`."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from minikv.attention.reference import causal_attention

DecodeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


class ContiguousStep:
    """One forward pass over sequences ``caches[i]`` with ``q_lens[i]`` new tokens each.

    ``decode_fn`` (q ``[Hq, D]``, keys, values ``[Hkv, L, D]``, scale) -> ``[Hq, D]``
    replaces the fused kernel for single-token steps; chapter 01 plugs a
    learner's function in here.
    """

    def __init__(self, caches: Sequence, q_lens: Sequence[int], scale: float, decode_fn: DecodeFn | None = None) -> None:
        self.caches, self.q_lens, self.scale, self.decode_fn = caches, list(q_lens), scale, decode_fn

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if len(self.caches) == 1:
            return self._one(self.caches[0], layer, q, k, v)
        outs, start = [], 0
        for cache, n in zip(self.caches, self.q_lens):
            outs.append(self._one(cache, layer, q[start:start + n], k[start:start + n], v[start:start + n]))
            start += n
        return torch.cat(outs)

    def _one(self, cache, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        keys, values = cache.append(layer, k, v)
        if q.shape[0] == 1 and self.decode_fn is not None:
            return self.decode_fn(q[0], keys, values, self.scale)[None]
        return causal_attention(q, keys, values, self.scale)

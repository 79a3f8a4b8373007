"""Pick the next token of each sequence from its logits."""

from __future__ import annotations

import torch

from minikv.sampling import SamplingParams


def sample_one(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """``logits [vocab]`` -> a token id: argmax when greedy, else temperature / top-k / top-p sampling."""
    if params.greedy:
        return int(torch.argmax(logits))
    logits = logits.float() / params.temperature
    if params.top_k > 0 and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # probability mass strictly above each token
        sorted_probs = sorted_probs.masked_fill(before >= params.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def sample(logits: torch.Tensor, seqs) -> list[int]:
    """``logits [B, vocab]``, one row per sequence -> B token ids."""
    if all(s.params.greedy for s in seqs):
        return torch.argmax(logits, dim=-1).tolist()
    return [sample_one(row, s.params, s.generator) for row, s in zip(logits, seqs)]

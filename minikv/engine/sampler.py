"""Pick the next token of each sequence from its logits."""

from __future__ import annotations

import torch

from minikv.sampling import SamplingParams


def sample_one(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """``logits [vocab]`` -> a token id: argmax when greedy, else temperature / top-k / top-p sampling.

    Any temperature > 0 and top_p in (0, 1] give a valid distribution: the logits are shifted so their
    maximum is 0 before dividing by a temperature of at least float32's smallest normal number (a tiny one
    sends the others to -inf, never the top one to inf or nan),
    and top-p always keeps the most likely token (a top_p below float32's smallest number is 0 there).
    """
    if params.greedy:
        return int(torch.argmax(logits))
    logits = logits.float()
    temperature = max(params.temperature, torch.finfo(torch.float32).tiny)  # 1e-300 would be 0 in float32
    logits = (logits - logits.max()) / temperature
    if params.top_k > 0 and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # probability mass strictly above each token
        cut = before >= params.top_p
        cut[..., 0] = False  # the most likely token always stays
        sorted_probs = sorted_probs.masked_fill(cut, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def sample(logits: torch.Tensor, seqs) -> list[int]:
    """``logits [B, vocab]``, one row per sequence -> B token ids."""
    if all(s.params.greedy for s in seqs):
        return torch.argmax(logits, dim=-1).tolist()
    return [sample_one(row, s.params, s.generator) for row, s in zip(logits, seqs)]

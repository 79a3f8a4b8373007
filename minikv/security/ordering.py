"""The ordering leak of cache-aware scheduling: under LPM, the request that hits is served first.

Longest-prefix-match scheduling (``policy="lpm"``, SGLang's) admits the
waiting request with the most cached tokens first. That order is visible
to whoever sent the requests, with no clock needed: PromptPeek (NDSS 2025)
sends a batch of candidate requests (mixed with dummies) and reads which
one comes back first.

:func:`ordering_leak` measures it offline on an :class:`~minikv.LLMEngine`
built with ``max_num_seqs=1`` (one request runs at a time, so every
admission is a choice among all waiting requests): the victim's prompt is
cached; the attacker queues ``candidates`` probes at once, the victim's
prefix among decoys, in random order; the probe's *rank* is its place in
the order first tokens come back (0: first). Under FCFS the rank is
uniform over ``0 .. candidates - 1`` (mean ``(candidates - 1) / 2``); under
LPM the hit is always 0. Salts make LPM rank by each request's own salt,
so the victim's blocks count for nothing and the order is FCFS again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from minikv.sampling import SamplingParams
from minikv.security.attack import random_tokens


@dataclass
class OrderingResult:
    """Where the victim-matching probe came back, per trial (0: first of ``candidates``)."""

    candidates: int
    ranks: list[int] = field(default_factory=list)

    @property
    def first_rate(self) -> float:
        """How often it came back first; chance is ``1 / candidates``."""
        return sum(r == 0 for r in self.ranks) / len(self.ranks) if self.ranks else float("nan")

    @property
    def mean_rank(self) -> float:
        return sum(self.ranks) / len(self.ranks) if self.ranks else float("nan")


def ordering_leak(
    engine: Any,
    rng: random.Random,
    *,
    trials: int,
    prefix_tokens: int,
    vocab: int,
    candidates: int = 4,
    victim_salt: str | None = None,
    attacker_salt: str | None = None,
) -> OrderingResult:
    """Run ``trials`` rounds on ``engine`` (an idle ``LLMEngine``); see the module docstring."""
    one = SamplingParams(max_tokens=1, temperature=0.0)
    victim = SamplingParams(max_tokens=1, temperature=0.0, cache_salt=victim_salt)
    probe = SamplingParams(max_tokens=1, temperature=0.0, cache_salt=attacker_salt)
    result = OrderingResult(candidates)
    ids = iter(range(10**9))

    def run_all() -> list[Any]:
        order = []
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.new_token_ids or out.finished:
                    if out.request_id not in order:
                        order.append(out.request_id)
        return order

    engine.add_request(("warm", next(ids)), {"prompt_token_ids": random_tokens(rng, 8, vocab)}, one)
    run_all()
    for _ in range(trials):
        secret = random_tokens(rng, prefix_tokens, vocab)
        engine.add_request(("victim", next(ids)), {"prompt_token_ids": secret + random_tokens(rng, 4, vocab)}, victim)
        run_all()
        docs = [secret] + [random_tokens(rng, prefix_tokens, vocab) for _ in range(candidates - 1)]
        order = list(range(candidates))
        rng.shuffle(order)
        names = {}
        for k in order:
            rid = ("probe", next(ids))
            names[rid] = k
            engine.add_request(rid, {"prompt_token_ids": docs[k] + random_tokens(rng, 1, vocab)}, probe)
        came_back = [names[r] for r in run_all() if r in names]
        result.ranks.append(came_back.index(0))
    return result


__all__ = ["OrderingResult", "ordering_leak"]

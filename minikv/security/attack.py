"""The attack: did the victim send this prefix? Probe each candidate, call the fastest one the hit.

Scenario (one *trial*): the attacker knows ``candidates`` possible prefixes
of ``prefix_tokens`` tokens each (confidential documents, system prompts);
the victim sent one of them, followed by its own question. The attacker
sends each candidate followed by ``suffix_tokens`` fresh tokens, in random
order, and reads each TTFT: the one the victim sent is found in the cache
and only the suffix is computed. The attacker names the fastest probe.

Measured over many trials: the identification **accuracy** (chance is
``1 / candidates``), the **ROC AUC** of "probe of the sent prefix" against
"probe of a decoy" with score ``-TTFT`` (:func:`~minikv.security.auc.roc_auc`),
and a **threshold** classifier's balanced accuracy: a cut learnt on the
first half of the trials, scored on the second half.

Two shapes of trial:

- ``shared_secret=False`` (default): each trial draws fresh candidates and
  the victim sends one of them; a miss costs the victim's prefill too.
- ``shared_secret=True``: the victim sends one secret once; every trial is
  a *new attacker tenant* probing it against one fresh decoy. Under a salt
  this matters: an attacker's own probe caches the secret under the
  attacker's salt, so a second probe by the same tenant would hit its own
  copy; a fresh salt per trial (``f"{attacker_salt}-{i}"``) keeps every
  probe a first look. Cheaper: one victim prefill for all trials.

Candidate prefixes are random token ids in ``[vocab // 8, vocab)``, drawn
from ``rng``: they share nothing with each other or with earlier trials, so
the only thing a probe can hit is what the victim sent.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from minikv.errors import InvalidRequestError
from minikv.security.auc import balanced_accuracy, fit_threshold, roc_auc
from minikv.security.probes import Prober


def random_tokens(rng: random.Random, n: int, vocab: int) -> list[int]:
    """``n`` token ids drawn uniformly from ``[vocab // 8, vocab)`` (clear of the low special ids)."""
    return [rng.randrange(vocab // 8, vocab) for _ in range(n)]


@dataclass
class AttackResult:
    """The probes of one setting: TTFTs of the sent prefix (hits) and of decoys (misses), and the calls made."""

    prefix_tokens: int
    trials: int = 0
    correct: int = 0  # trials where the fastest probe was the prefix the victim sent
    hit_ttfts: list[float] = field(default_factory=list)
    miss_ttfts: list[float] = field(default_factory=list)
    hit_cached: list[int | None] = field(default_factory=list)  # what the system reported (never used to decide)
    miss_cached: list[int | None] = field(default_factory=list)
    trial_of_hit: list[int] = field(default_factory=list)
    trial_of_miss: list[int] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.trials if self.trials else float("nan")

    @property
    def auc(self) -> float:
        """ROC AUC of the sent prefix's probes against the decoys', scored by ``-TTFT``."""
        return roc_auc([-t for t in self.hit_ttfts], [-t for t in self.miss_ttfts])

    def threshold_accuracy(self) -> float:
        """Balanced accuracy of a TTFT cut fit on the first half of the trials, scored on the rest."""
        half = self.trials // 2
        if half < 1 or self.trials - half < 1:
            return float("nan")

        def split(ttfts: list[float], trial_of: list[int], train: bool) -> list[float]:
            return [t for t, i in zip(ttfts, trial_of) if (i < half) == train]

        cut = fit_threshold(split(self.hit_ttfts, self.trial_of_hit, True),
                            split(self.miss_ttfts, self.trial_of_miss, True))
        return balanced_accuracy(cut, split(self.hit_ttfts, self.trial_of_hit, False),
                                 split(self.miss_ttfts, self.trial_of_miss, False))

    def mean_ms(self, which: str) -> float:
        values = self.hit_ttfts if which == "hit" else self.miss_ttfts
        return 1e3 * sum(values) / len(values) if values else float("nan")


def identify_prefix(
    prober: Prober,
    rng: random.Random,
    *,
    prefix_tokens: int,
    trials: int,
    vocab: int,
    candidates: int = 2,
    suffix_tokens: int = 1,
    victim_suffix_tokens: int = 8,
    victim_salt: str | None = None,
    attacker_salt: str | None = None,
    shared_secret: bool = False,
    shared_prefix: Sequence[int] = (),
) -> AttackResult:
    """Run ``trials`` trials of the identification attack (see the module docstring); returns every probe.

    ``shared_prefix``: tokens every prompt starts with (a public system
    prompt, say) before the candidate; the attack is on what follows it.
    ``victim_salt`` / ``attacker_salt``: each side's ``cache_salt``.
    """
    if prefix_tokens < 1 or trials < 1 or candidates < 2 or suffix_tokens < 1:
        raise InvalidRequestError(
            f"identify_prefix needs prefix_tokens >= 1, trials >= 1, candidates >= 2 and suffix_tokens >= 1 "
            f"(a probe must end past its candidate so the whole candidate can hit); got {prefix_tokens}, "
            f"{trials}, {candidates}, {suffix_tokens}")
    head = list(shared_prefix)
    result = AttackResult(prefix_tokens)
    prober.send(random_tokens(rng, prefix_tokens + suffix_tokens, vocab))  # warm-up, not counted
    secret = random_tokens(rng, prefix_tokens, vocab)
    if shared_secret:
        prober.send(head + secret + random_tokens(rng, victim_suffix_tokens, vocab), victim_salt)
    for trial in range(trials):
        if shared_secret:
            docs = [secret] + [random_tokens(rng, prefix_tokens, vocab) for _ in range(candidates - 1)]
            sent = 0
            salt = attacker_salt if attacker_salt is None else f"{attacker_salt}-{trial}"
        else:
            docs = [random_tokens(rng, prefix_tokens, vocab) for _ in range(candidates)]
            sent = rng.randrange(candidates)
            prober.send(head + docs[sent] + random_tokens(rng, victim_suffix_tokens, vocab), victim_salt)
            salt = attacker_salt
        order = list(range(candidates))
        rng.shuffle(order)
        ttft: dict[int, float] = {}
        for k in order:
            probe = prober.send(head + docs[k] + random_tokens(rng, suffix_tokens, vocab), salt)
            ttft[k] = probe.ttft
            if k == sent:
                result.hit_ttfts.append(probe.ttft)
                result.hit_cached.append(probe.cached_tokens)
                result.trial_of_hit.append(trial)
            else:
                result.miss_ttfts.append(probe.ttft)
                result.miss_cached.append(probe.cached_tokens)
                result.trial_of_miss.append(trial)
        result.trials += 1
        result.correct += min(ttft, key=ttft.__getitem__) == sent
    return result


__all__ = ["AttackResult", "identify_prefix", "random_tokens"]

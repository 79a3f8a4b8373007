"""The timing attack on minikv itself (SmolLM2): a cached 512-token secret is found from TTFT alone; a salt hides it.

Setting: the victim sends a 512-token secret followed by its question; each
trial, a new attacker tenant probes the secret and one fresh 512-token decoy
(each followed by one token, in random order) and reads their TTFTs. A hit
computes 1 token, a miss 513: on this CPU about 70 ms against 700 ms.

- no salt: 10 trials (10 hit probes, 10 miss probes); AUC >= 0.95;
- per-tenant salts: 20 trials; a hit cannot happen, so the AUC is chance.
  It must stay below ``0.5 + 2.5 * se`` where ``se = sqrt((n1 + n2 + 1) /
  (12 n1 n2))`` is the AUC's standard error under no leak: 0.731 for
  20 against 20 (a false alarm about 0.6% of the time), under 0.75.

Fixed seed (the prompts); the timings are the machine's. About 52 prefills
of 513 tokens: under a minute on 2 CPU cores.
"""

from __future__ import annotations

import random

import pytest

from minikv.security.attack import identify_prefix
from minikv.security.auc import chance_band
from minikv.security.probes import EngineProber

pytestmark = pytest.mark.slow

SECRET_TOKENS = 512
CLEAR_TRIALS = 10
SALTED_TRIALS = 20


@pytest.fixture(scope="module")
def prober():
    from minikv import LLM

    return EngineProber(LLM("smollm2-135m", prefix_cache="hash", device="cpu"))


def test_unsalted_cache_leaks_the_secret(prober):
    r = identify_prefix(prober, random.Random(13), prefix_tokens=SECRET_TOKENS, trials=CLEAR_TRIALS,
                        vocab=prober.vocab_size, shared_secret=True)
    assert r.hit_cached == [SECRET_TOKENS] * CLEAR_TRIALS and set(r.miss_cached) == {0}
    assert r.auc >= 0.95, (r.auc, r.hit_ttfts, r.miss_ttfts)
    assert r.mean_ms("miss") > 3 * r.mean_ms("hit")


def test_salted_cache_leaks_nothing(prober):
    r = identify_prefix(prober, random.Random(14), prefix_tokens=SECRET_TOKENS, trials=SALTED_TRIALS,
                        vocab=prober.vocab_size, shared_secret=True, victim_salt="victim", attacker_salt="attacker")
    assert set(r.hit_cached) == {0} and set(r.miss_cached) == {0}  # the salt: no cross-tenant hit at all
    band = chance_band(len(r.hit_ttfts), len(r.miss_ttfts), z=2.5)
    assert band < 0.75
    assert r.auc < band, (r.auc, band, r.hit_ttfts, r.miss_ttfts)

"""Secret recovery and the LPM ordering leak on the real caches, with the reported cached tokens as the clock.

``CachedTokensClock`` wraps an engine prober and reports, as the "TTFT", the
number of prompt tokens the engine had to compute (prompt length minus
``num_cached_tokens``): a noiseless clock. So these tests check the attack
logic and the caches' granularity exactly; the timing itself is measured
by the SmolLM2 test and ``minikv bench leak``.
"""

from __future__ import annotations

import random

import pytest

from minikv import LLM
from minikv.engine.llm_engine import LLMEngine
from minikv.security.ordering import ordering_leak
from minikv.security.probes import EngineProber, Probe
from minikv.security.recovery import recover_block, recover_tokens

VOCAB = 259
ALPHABET = list(range(10, 20))  # below vocab // 8: no fresh padding token is ever a candidate


class CachedTokensClock:
    def __init__(self, llm):
        self.inner = EngineProber(llm)

    def send(self, token_ids, salt=None):
        p = self.inner.send(token_ids, salt)
        return Probe(float(len(token_ids) - p.cached_tokens), p.cached_tokens)


def clock(kind, options=None):
    return CachedTokensClock(LLM("tiny-llama", device="cpu", prefix_cache=kind, prefix_cache_options=options))


def secret_and_head(seed):
    rng = random.Random(seed)
    return [rng.choice(ALPHABET) for _ in range(5)], [rng.randrange(60, VOCAB) for _ in range(14)]


def test_radix_page1_gives_the_secret_token_by_token():
    secret, head = secret_and_head(1)
    r = recover_tokens(clock("radix", {"page_size": 1}), random.Random(0), head=head, secret=secret,
                       alphabet=ALPHABET, vocab=VOCAB)
    assert r.guess == secret
    assert r.probes == len(ALPHABET) * len(secret)  # no position needed a retry
    assert r.auc == 1.0


def test_salt_or_block_granularity_stop_the_token_by_token_attacker():
    secret, head = secret_and_head(2)
    salted = recover_tokens(clock("radix", {"page_size": 1}), random.Random(0), head=head, secret=secret,
                            alphabet=ALPHABET, vocab=VOCAB, victim_salt="v", attacker_salt="a")
    assert salted.probes == len(ALPHABET) * len(secret)  # no hit anywhere: no retries
    assert all(len(set(p.values())) == 1 for p in salted.ttfts)  # every candidate costs the same
    blocks = recover_tokens(clock("hash"), random.Random(0), head=head, secret=secret, alphabet=ALPHABET, vocab=VOCAB)
    for i, probes in enumerate(blocks.ttfts):
        if (len(head) + i + 1) % 16:  # the candidate does not complete a block: nothing to tell them apart
            assert len(set(probes.values())) == 1, i
    assert blocks.guess != secret


def test_block_hashes_give_a_block_to_whoever_guesses_it_whole():
    secret, head = secret_and_head(3)
    r = recover_block(clock("hash"), random.Random(0), head=head, secret=secret[:2], alphabet=ALPHABET,
                      vocab=VOCAB, block_size=16)
    assert r.guess == secret[:2] and r.probes == len(ALPHABET) ** 2
    wrong = {t for combo, t in r.ttfts[0].items() if list(combo) != secret[:2]}
    assert wrong == {17.0} and r.ttfts[0][tuple(secret[:2])] == 1.0  # a whole block computed, or one token
    salted = recover_block(clock("hash"), random.Random(0), head=head, secret=secret[:2], alphabet=ALPHABET,
                           vocab=VOCAB, block_size=16, victim_salt="v", attacker_salt="a")
    assert set(salted.ttfts[0].values()) == {17.0}


@pytest.mark.parametrize("policy, salted, leaks", [("lpm", False, True), ("lpm", True, False), ("fcfs", False, False)])
def test_lpm_serves_the_hit_first(policy, salted, leaks):
    engine = LLMEngine("tiny-llama", prefix_cache="radix", policy=policy, max_num_seqs=1, device="cpu")
    r = ordering_leak(engine, random.Random(5), trials=12, prefix_tokens=32, vocab=VOCAB, candidates=4,
                      victim_salt="v" if salted else None, attacker_salt="a" if salted else None)
    if leaks:
        assert r.ranks == [0] * 12
    else:  # the queue's own (shuffled) order: the same seed gives the same ranks as FCFS
        fcfs = ordering_leak(LLMEngine("tiny-llama", prefix_cache="radix", max_num_seqs=1, device="cpu"),
                             random.Random(5), trials=12, prefix_tokens=32, vocab=VOCAB, candidates=4)
        assert r.ranks == fcfs.ranks and r.first_rate < 1.0

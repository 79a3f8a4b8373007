"""PublicPrefixCache in the engine: the published system prompt is shared across salts, nothing else is."""

from __future__ import annotations

import random

import pytest

from minikv import LLM, SamplingParams
from minikv.security.public_prefix import public_prefix_cache


@pytest.mark.parametrize("kind, options", [("hash", None), ("radix", {"page_size": 1})])
def test_engine_shares_only_the_published_prefix(kind, options):
    rng = random.Random(3)
    system = [rng.randrange(3, 259) for _ in range(40)]  # 2.5 blocks of 16
    doc_a = [rng.randrange(3, 259) for _ in range(32)]
    llm = LLM("tiny-llama", device="cpu", prefix_cache=public_prefix_cache(kind, [system]),
              prefix_cache_options=options)
    plain = LLM("tiny-llama", device="cpu")

    def run(ids, salt, engine=llm):
        out = engine.generate({"prompt_token_ids": ids}, SamplingParams(max_tokens=4, temperature=0.0, cache_salt=salt))
        return out[0]

    a = run(system + doc_a + [5], "tenant-a")
    assert a.num_cached_tokens == 0
    b = run(system + doc_a + [6], "tenant-b")  # b sends a's private document: only the public part hits
    public = 40 if kind == "radix" else 32
    assert b.num_cached_tokens == public
    again = run(system + doc_a + [7], "tenant-a")  # a itself hits its own document
    assert again.num_cached_tokens == (72 if kind == "radix" else 64)
    anyone = run(system + [9, 9, 9], None)
    assert anyone.num_cached_tokens == public
    for out, ids in [(b, system + doc_a + [6]), (again, system + doc_a + [7]), (anyone, system + [9, 9, 9])]:
        assert out.token_ids == run(ids, None, plain).token_ids  # a hit on keyed blocks gives the same tokens
    assert llm.cache_stats().num_used == 0

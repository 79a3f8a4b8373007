"""Property: an exception at a random point of random ``generate`` calls leaves nothing allocated.

For each prefix cache (none, hash, radix at ``page_size=block_size``, radix
at ``page_size=1``) Hypothesis draws a block size, a pool size, a few
``generate`` calls of prompts that share prefixes with random ``max_tokens``,
and one fault: the k-th call of the cache's ``match`` / ``allocate`` /
``insert`` / ``release``, the pool's ``copy_block``, the model's forward or
the sampler raises. Afterwards every block is free or evictable, every
reference and lock count is zero (``pool_checks``), and the next ``generate``
gives the tokens of a fresh ``LLM``; ``reset_prefix_cache`` works.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minikv.engine.model_runner as model_runner
from minikv import LLM, SamplingParams
from minikv.kv.block_table import cdiv
from pool_checks import assert_nothing_allocated

NAME = "tiny-llama"
CACHES = {"none": ("none", None), "hash": ("hash", None), "radix": ("radix", "block"), "radix-p1": ("radix", 1)}
FINAL_TOKENS = 3  # max_tokens of the generate that follows the faults
TARGETS = ["match", "allocate", "insert", "release", "copy_block", "forward", "sample"]


class Injected(Exception):
    """The fault a test injects."""


def make_llm(cache: str, block_size: int, num_blocks: int) -> LLM:
    kind, page = CACHES[cache]
    opts = {} if page is None else {"page_size": block_size if page == "block" else page}
    return LLM(NAME, device="cpu", prefix_cache=kind, prefix_cache_options=opts, block_size=block_size,
               num_blocks=num_blocks)


@contextlib.contextmanager
def fault(llm: LLM, target: str, k: int) -> Iterator[list[int]]:
    """While open, the k-th call (from 0) of ``target`` raises :class:`Injected`; yields the call counter."""
    owner = {"copy_block": llm.kv_pool, "forward": llm.model, "sample": model_runner}.get(target, llm.cache)
    real, calls = getattr(owner, target), [0]

    def flaky(*args, **kwargs):
        calls[0] += 1
        if calls[0] == k + 1:
            raise Injected(f"{target} #{k}")
        return real(*args, **kwargs)

    with mock.patch.object(owner, target, flaky):
        yield calls


@st.composite
def scenarios(draw):
    block_size = draw(st.sampled_from([1, 2, 4, 8]))
    base = draw(st.lists(st.integers(1, 250), min_size=0, max_size=20))
    prompt = st.builds(lambda cut, tail: base[:cut] + tail, st.integers(0, len(base)),
                       st.lists(st.integers(1, 250), min_size=1, max_size=6))
    request = st.tuples(prompt, st.integers(1, 5))  # (token ids, max_tokens)
    calls = draw(st.lists(st.lists(request, min_size=1, max_size=4), min_size=1, max_size=3))
    need = max(cdiv(len(p) + max(n, FINAL_TOKENS), block_size) for call in calls for p, n in call)
    num_blocks = draw(st.integers(need, 3 * need))  # small pools force waves and evictions
    target = draw(st.sampled_from(TARGETS))
    k = draw(st.integers(0, 8))
    return block_size, num_blocks, calls, target, k


def run_calls(llm: LLM, calls) -> None:
    for call in calls:
        prompts = [{"prompt_token_ids": p} for p, _ in call]
        params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for _, n in call]
        try:
            llm.generate(prompts, params)
        except Injected:
            pass


@pytest.mark.parametrize("cache", CACHES)
@settings(max_examples=10, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_a_fault_anywhere_leaves_nothing_allocated(cache: str, scenario) -> None:
    block_size, num_blocks, calls, target, k = scenario
    llm = make_llm(cache, block_size, num_blocks)
    with fault(llm, target, k):
        run_calls(llm, calls)
    assert_nothing_allocated(llm, f"after a fault in {target} #{k}")
    prompts = [{"prompt_token_ids": p} for call in calls for p, _ in call][:4]
    params = SamplingParams(max_tokens=FINAL_TOKENS, temperature=0.0, ignore_eos=True)
    want = [o.token_ids for o in make_llm(cache, block_size, num_blocks).generate(prompts, params)]
    assert [o.token_ids for o in llm.generate(prompts, params)] == want, "differs from a fresh LLM after the fault"
    assert_nothing_allocated(llm)
    llm.reset_prefix_cache()
    assert_nothing_allocated(llm, "after reset_prefix_cache")

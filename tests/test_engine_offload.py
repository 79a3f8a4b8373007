"""The engine with a CPU offload tier: the same greedy tokens as without it and with no cache, more hits, no leak.

The workload is the one the tier is for: several chats take turns (round
robin) in a KV pool that holds about one of them, so without the tier each
conversation's history is evicted before it comes back.
"""

from __future__ import annotations

import random

import pytest
import torch

from minikv import LLM, LLMEngine, SamplingParams
from minikv.errors import InvalidRequestError
from minikv.kv import KVPool
from minikv.prefix import OffloadTier
from pool_checks import assert_nothing_allocated

GREEDY = SamplingParams(max_tokens=4, temperature=0.0)
CACHES = [("hash", {}), ("radix", {}), ("radix", {"page_size": 1})]
POOL = dict(block_size=4, num_blocks=24)  # 96 token slots: about one conversation's history


def chat_rounds(llm: LLM, conversations: int = 4, turns: int = 3, together: bool = False, seed: int = 0):
    """Round-robin chats; each turn is the history, the model's last reply and a new user message.

    ``together``: each round is one ``generate`` call (the requests run in one
    batch, preempting each other in the small pool); else one call per request.
    Returns every output's generated tokens, in order.
    """
    rng = random.Random(seed)
    history = [[rng.randrange(3, 250) for _ in range(6)] for _ in range(conversations)]
    got: list[list[int]] = []
    outs = []
    for _ in range(turns):
        for h in history:
            h += [rng.randrange(3, 250) for _ in range(rng.randrange(5, 9))]
        prompts = [{"prompt_token_ids": list(h)} for h in history]
        outs = llm.generate(prompts, GREEDY) if together else [llm.generate([p], GREEDY)[0] for p in prompts]
        for h, o in zip(history, outs):
            got.append(list(o.token_ids))
            h += o.token_ids
    return got


@pytest.mark.parametrize("together,sched", [(False, {}), (True, {}),
                                             (True, {"policy": "lpm", "max_num_batched_tokens": 16})])
@pytest.mark.parametrize("kind,opts", CACHES)
def test_tier_gives_the_same_tokens_and_more_hits(kind: str, opts: dict, together: bool, sched: dict) -> None:
    """``sched``: also under longest-prefix-match order (which peeks through the tier) and small prefill chunks."""
    plain = LLM("tiny-llama", device="cpu", **POOL)
    want = chat_rounds(plain, together=together)
    cached = LLM("tiny-llama", device="cpu", prefix_cache=kind, prefix_cache_options=opts, **POOL, **sched)
    assert chat_rounds(cached, together=together) == want
    tiered = LLM("tiny-llama", device="cpu", prefix_cache=kind, prefix_cache_options=opts,
                 cpu_offload_blocks=64, **POOL, **sched)
    assert chat_rounds(tiered, together=together) == want
    base, stats = cached.cache_stats(), tiered.cache_stats()
    assert stats.offload_hit_tokens > 0, f"the tier was never hit: {stats}"
    assert stats.hit_tokens > base.hit_tokens, (base, stats)
    assert stats.pool_hit_tokens + stats.offload_hit_tokens == stats.hit_tokens
    assert_nothing_allocated(tiered, "after the chats")
    tier = tiered.offload_tier
    tier.check_invariants()
    assert tier.num_checked_out == 0
    assert stats.offload_num_cached == len(tier) <= tier.num_blocks == stats.offload_num_blocks == 64


def test_a_tiny_tier_still_gives_the_same_tokens() -> None:
    """A tier of 2 blocks drops most of what it gets; what it keeps must still be the right K/V."""
    want = chat_rounds(LLM("tiny-llama", device="cpu", **POOL), together=True)
    llm = LLM("tiny-llama", device="cpu", prefix_cache="hash", cpu_offload_blocks=2, **POOL)
    assert chat_rounds(llm, together=True) == want
    assert llm.offload_tier.stats().dropped > 0
    assert_nothing_allocated(llm, "after the chats")


def test_cpu_offload_gb_sizes_the_tier_in_blocks_of_this_pool() -> None:
    llm = LLM("tiny-llama", device="cpu", prefix_cache="radix", cpu_offload_gb=0.001, **POOL)
    per_block = llm.kv_pool.bytes_per_block
    assert llm.offload_tier.num_blocks == int(0.001 * (1 << 30)) // per_block
    assert llm.offload_tier.host.shape[1:] == llm.kv_pool.kv[:, :, 0].shape


def test_reset_forgets_the_tier_too() -> None:
    llm = LLM("tiny-llama", device="cpu", prefix_cache="hash", cpu_offload_blocks=64, **POOL)
    chat_rounds(llm)
    assert len(llm.offload_tier) > 0
    llm.reset_prefix_cache()
    assert len(llm.offload_tier) == 0 and llm.offload_tier.stats().stored == 0
    assert llm.cache_stats().offload_hit_tokens == 0


def test_llm_engine_takes_the_option() -> None:
    engine = LLMEngine("tiny-llama", device="cpu", prefix_cache="radix", cpu_offload_blocks=8, **POOL)
    assert engine.offload_tier is not None and engine.offload_tier.num_blocks == 8
    engine.add_request("a", {"prompt_token_ids": list(range(3, 40))}, GREEDY)
    while engine.has_unfinished_requests():
        engine.step()
    assert engine.get_stats().cache.offload_num_blocks == 8


@pytest.mark.parametrize("kw,match", [
    (dict(cpu_offload_blocks=0), "cpu_offload_blocks must be"),
    (dict(cpu_offload_blocks=2.5), "cpu_offload_blocks must be"),
    (dict(cpu_offload_blocks=True), "cpu_offload_blocks must be"),
    (dict(cpu_offload_gb=-1), "cpu_offload_gb must be a positive number"),
    (dict(cpu_offload_gb="4"), "cpu_offload_gb must be a positive number"),
    (dict(cpu_offload_gb=float("inf")), "cpu_offload_gb must be a positive number"),
    (dict(cpu_offload_blocks=4, cpu_offload_gb=1), "not both"),
    (dict(cpu_offload_blocks=4, prefix_cache="none"), "prefix_cache='hash' or 'radix'"),
    (dict(cpu_offload_blocks=4, prefix_cache=lambda n, b: None), "prefix_cache='hash' or 'radix'"),
    (dict(prefix_cache_options={"offload": object()}), "give cpu_offload_blocks or cpu_offload_gb"),
    (dict(cpu_offload_gb=1e-9), "holds no KV block"),
])
def test_bad_offload_options_say_what_to_give(kw: dict, match: str) -> None:
    kw = {"prefix_cache": "hash", **kw}
    with pytest.raises(InvalidRequestError, match=match):
        LLM("tiny-llama", device="cpu", **POOL, **kw)


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@GPU
def test_on_cuda_the_host_tier_is_pinned_and_copies_round_trip() -> None:
    pool = KVPool(2, 2, 8, block_size=4, num_blocks=8, dtype=torch.bfloat16, device="cuda")
    pool.kv.copy_(torch.randn_like(pool.kv))
    want = pool.kv[:, :, [5, 2, 7]].clone()
    tier = OffloadTier(pool, 4)
    assert tier.host.is_pinned() and tier.host.device.type == "cpu"
    tier.store([("a", 5, None), ("b", 2, None), ("c", 7, None)])
    pool.kv.zero_()  # the default stream overwrites the blocks: it waits for the copies out first
    tier.load(tier.checkout(["a", "b", "c"]), [0, 1, 3])
    assert torch.equal(pool.kv[:, :, [0, 1, 3]], want)


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("kind", ["hash", "radix"])
def test_on_cuda_the_tier_gives_the_same_tokens(kind: str) -> None:
    on = dict(device="cuda", dtype=torch.float32, attention="torch", **POOL)
    want = chat_rounds(LLM("tiny-llama", **on), together=True)
    tiered = LLM("tiny-llama", prefix_cache=kind, cpu_offload_blocks=64, **on)
    assert chat_rounds(tiered, together=True) == want
    assert tiered.cache_stats().offload_hit_tokens > 0
    assert_nothing_allocated(tiered, "after the chats")

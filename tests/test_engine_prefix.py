"""The engine with prefix caching: same tokens as without, the right number of cached tokens."""

from __future__ import annotations

import pytest

from conftest import load_llm
from minikv import LLM, SamplingParams
from minikv.errors import InvalidRequestError
from minikv.prefix import BlockHashCache

GREEDY = SamplingParams(max_tokens=10, temperature=0.0)
CACHES = [("hash", {}), ("hash", {"hash_fn": "xxh3_128"}), ("radix", {}), ("radix", {"page_size": 1}),
          ("radix", {"page_size": 1, "policy": "lfu"})]


def shared_prefix_prompts(llm: LLM, prefix_len: int, n: int = 4) -> tuple[list[dict], list[int]]:
    """``n`` prompts: one shared ``prefix_len``-token prefix + a distinct suffix each (suffixes share no first token)."""
    prefix = [(7 * i + 3) % 250 for i in range(prefix_len)]
    prompts = [{"prompt_token_ids": prefix + [260 + i, 5, 6, 7 + i]} for i in range(n)]
    return prompts, prefix


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2"])
@pytest.mark.parametrize("kind,opts", CACHES)
@pytest.mark.parametrize("block_size", [1, 16, 32])
def test_same_tokens_and_block_aligned_hits(name: str, kind: str, opts: dict, block_size: int) -> None:
    ref_llm = load_llm(name)
    prompts, prefix = shared_prefix_prompts(ref_llm, 45)
    want = [o.token_ids for o in ref_llm.generate(prompts, GREEDY)]
    llm = LLM(name, prefix_cache=kind, prefix_cache_options=opts, block_size=block_size)
    page = opts.get("page_size", block_size)
    first = llm.generate(prompts, GREEDY)
    second = llm.generate(prompts, GREEDY)
    assert [o.token_ids for o in first] == want and [o.token_ids for o in second] == want
    shared = len(prefix) // page * page if page == block_size else len(prefix)
    # in one call the first prompt computes the shared prefix, the others hit it
    assert [o.num_cached_tokens for o in first] == [0] + [shared] * 3
    # a second call finds each whole prompt cached, capped so its last token is computed
    full = len(prefix) + 4 - 1
    assert all(o.num_cached_tokens == (full if page == 1 else full // block_size * block_size) for o in second)
    stats = llm.cache_stats()
    assert stats.num_used == 0, "every block is released after generate"
    assert stats.hit_tokens == sum(o.num_cached_tokens for o in first + second)


@pytest.mark.parametrize("kind,opts", [("hash", {}), ("radix", {}), ("radix", {"page_size": 1})])
def test_long_shared_prefix_cached_tokens(kind: str, opts: dict) -> None:
    """A 1000-token shared prefix: 1000 cached at page size 1, block-aligned (992) at page = block size 16."""
    name = "tiny-llama:max_pos=2048"
    llm = LLM(name, prefix_cache=kind, prefix_cache_options=opts, block_size=16)
    prompts, prefix = shared_prefix_prompts(llm, 1000, n=3)
    outs = llm.generate(prompts, SamplingParams(max_tokens=4, temperature=0.0))
    want = 1000 if opts.get("page_size") == 1 else 992
    assert [o.num_cached_tokens for o in outs] == [0, want, want]
    assert [o.token_ids for o in outs] == [o.token_ids for o in load_llm(name).generate(prompts, SamplingParams(max_tokens=4, temperature=0.0))]


@pytest.mark.parametrize("kind", ["hash", "radix"])
def test_salts_never_share(kind: str) -> None:
    llm = LLM("tiny-llama", prefix_cache=kind, block_size=4)
    prompts, _ = shared_prefix_prompts(llm, 40, n=2)
    a = SamplingParams(max_tokens=3, temperature=0.0, cache_salt="alice")
    b = SamplingParams(max_tokens=3, temperature=0.0, cache_salt="bob")
    llm.generate(prompts[0], a)
    assert llm.generate(prompts[1], b)[0].num_cached_tokens == 0
    assert llm.generate(prompts[1], a)[0].num_cached_tokens == 40


def test_multi_turn_reuses_the_previous_answer() -> None:
    llm = LLM("tiny-llama", prefix_cache="hash", block_size=4)
    turn1 = list(range(30, 70))
    out = llm.generate({"prompt_token_ids": turn1}, SamplingParams(max_tokens=9, temperature=0.0, ignore_eos=True))[0]
    turn2 = turn1 + out.token_ids + [5, 6, 7]
    hit = llm.generate({"prompt_token_ids": turn2}, GREEDY)[0].num_cached_tokens
    computed = len(turn1) + len(out.token_ids) - 1  # the last sampled token was never fed to the model
    assert hit == computed // 4 * 4


@pytest.mark.parametrize("kind,opts", [("hash", {}), ("radix", {"page_size": 1}), ("radix", {"policy": "lfu"})])
def test_eviction_under_a_small_pool_keeps_tokens_right(kind: str, opts: dict) -> None:
    ref = load_llm("tiny-llama")
    prompts = [{"prompt_token_ids": [(i * 13 + j) % 200 for j in range(30)] + [i]} for i in range(3)] * 3
    want = [o.token_ids for o in ref.generate(prompts, GREEDY)]
    llm = LLM("tiny-llama", prefix_cache=kind, prefix_cache_options=opts, block_size=4, num_blocks=24)
    got = []
    for p in prompts:  # one at a time: each needs 11 of the 24 blocks, so older prefixes get evicted
        got += [o.token_ids for o in llm.generate(p, GREEDY)]
    stats = llm.cache_stats()
    assert got == want
    assert stats.evictions > 0 and stats.num_used == 0


def test_reset_and_learner_factory() -> None:
    llm = LLM("tiny-llama", prefix_cache=lambda n, bs: BlockHashCache(n, bs), block_size=8)
    prompts, _ = shared_prefix_prompts(llm, 24, n=2)
    llm.generate(prompts, GREEDY)
    assert llm.cache_stats().hit_tokens == 24
    llm.reset_prefix_cache()
    assert llm.cache_stats().hit_tokens == 0
    assert llm.generate(prompts[0], GREEDY)[0].num_cached_tokens == 0


def test_bad_prefix_cache_settings() -> None:
    with pytest.raises(InvalidRequestError, match="'hash'"):
        LLM("tiny-llama", prefix_cache="lru")
    with pytest.raises(InvalidRequestError, match="paged"):
        LLM("tiny-llama", prefix_cache="hash", kv_layout="contiguous")
    with pytest.raises(InvalidRequestError, match="blocks"):
        LLM("tiny-llama", prefix_cache=BlockHashCache(3, 16))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hash", "radix"])
def test_smollm2_shared_system_prompt(smollm2, kind: str) -> None:
    system = "You are a concise assistant for a cooking website. Answer in one sentence. " * 3
    questions = ["How long do I boil an egg?", "What is a roux?", "Can I freeze bread?"]
    prompts = [system + q for q in questions]
    sp = SamplingParams(max_tokens=16, temperature=0.0)
    want = [o.token_ids for o in smollm2.generate(prompts, sp)]
    llm = LLM("smollm2-135m", prefix_cache=kind, device="cpu")
    outs = llm.generate(prompts, sp)
    assert [o.token_ids for o in outs] == want
    shared = len(__import__("os").path.commonprefix([llm.encode(p) for p in prompts]))
    assert outs[0].num_cached_tokens == 0
    assert all(o.num_cached_tokens == shared // 16 * 16 for o in outs[1:])

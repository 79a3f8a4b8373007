"""Bad input raises a minikv error that says what to change, leaving nothing allocated; sampling is seeded.

The CLI turns the same errors into one ``error: ...`` line on stderr and a non-zero status.
"""

from __future__ import annotations

import collections

import pytest
import torch

from conftest import load_llm
from pool_checks import assert_nothing_allocated
from minikv import LLM, MinikvError, SamplingParams
from minikv.cli import main
from minikv.engine.sampler import sample_one
from minikv.errors import InvalidRequestError, KVCacheFull, ModelNotFoundError

TINY = "tiny-llama"


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ({"prompt_token_ids": []}, "no tokens"),
        ({"prompt_token_ids": [5, 320]}, "outside the vocabulary (0..319)"),
        ({"prompt_token_ids": [-1]}, "outside the vocabulary"),
        ({"prompt_token_ids": [5] * 1024}, "context is 1024"),
        (42, "must be a string"),
        ({"prompt_token_ids": [1, "2"]}, "list of ints"),
    ],
)
def test_bad_prompt_raises_before_any_work(prompt, words: str) -> None:
    llm = load_llm(TINY)
    good = {"prompt_token_ids": [1, 2, 3]}
    with pytest.raises(InvalidRequestError) as err:
        llm.generate([good, prompt], SamplingParams(max_tokens=4))  # the good one must not run either
    assert words in str(err.value)
    assert_nothing_allocated(llm)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(max_tokens=0), "max_tokens must be at least 1"),
        (dict(max_tokens=-3), "max_tokens must be at least 1"),
        (dict(temperature=-0.1), "temperature must be >= 0"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_k=0), "top_k"),
    ],
)
def test_bad_sampling_params(kwargs: dict, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        SamplingParams(**kwargs)


def test_sampling_params_count_must_match_prompts() -> None:
    with pytest.raises(InvalidRequestError, match="2 SamplingParams for 3 prompts"):
        load_llm(TINY).generate(["a", "b", "c"], [SamplingParams(), SamplingParams()])


def test_unknown_model() -> None:
    with pytest.raises(ModelNotFoundError, match="unknown model 'no-such-model'.*tiny-llama"):
        LLM("no-such-model")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(kv_layout="ring"), "kv_layout='ring' is unknown"),
        (dict(block_size=0), "block_size must be a positive int"),
        (dict(num_blocks=4, kv_cache_memory=1 << 20), "not both"),
        (dict(kv_layout="contiguous", num_blocks=4), "num_blocks sizes the paged pool"),
        (dict(kv_layout="paged", decode_attention=lambda q, k, v, s: q), "contiguous layout"),
        (dict(kv_layout="contiguous", paged_decode_attention=lambda *a: a[0]), "plugs into the paged layout"),
        (dict(decode_attention=lambda *a: a[0], paged_decode_attention=lambda *a: a[0]), "one or the other"),
        (dict(prefix_cache="lru"), "prefix_cache='lru'"),
    ],
)
def test_bad_engine_settings(kwargs: dict, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        LLM(TINY, device="cpu", **kwargs)


def test_pool_too_small_for_one_request_says_what_to_change() -> None:
    llm = LLM(TINY, device="cpu", block_size=16, num_blocks=3)  # 48 tokens
    fits = {"prompt_token_ids": list(range(10))}
    too_long = {"prompt_token_ids": list(range(40))}
    with pytest.raises(KVCacheFull) as err:
        llm.generate([fits, too_long], SamplingParams(max_tokens=20))
    msg = str(err.value)
    for words in ("prompt 1", "needs 60 KV-cache tokens", "40 prompt", "20 new", "holds 48 tokens (3 blocks)",
                  "kv_cache_memory", "num_blocks", "max_tokens"):
        assert words in msg, f"{words!r} missing from: {msg}"
    assert_nothing_allocated(llm)
    assert len(llm.generate(fits, SamplingParams(max_tokens=20))[0].token_ids) > 0  # and the pool still works
    assert_nothing_allocated(llm)


def test_memory_budget_below_one_block_or_row() -> None:
    with pytest.raises(KVCacheFull, match="holds no block"):
        LLM(TINY, device="cpu", kv_cache_memory=100)
    llm = LLM(TINY, device="cpu", kv_layout="contiguous", kv_cache_memory=10 * load_llm(TINY).kv_bytes_per_token)
    with pytest.raises(KVCacheFull, match="row of 24 tokens.*raise kv_cache_memory"):
        llm.generate({"prompt_token_ids": [1] * 8}, SamplingParams(max_tokens=16))


def test_every_error_is_a_minikv_error() -> None:
    for cls in (InvalidRequestError, KVCacheFull, ModelNotFoundError):
        assert issubclass(cls, MinikvError)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["generate", "", "--model", TINY], "the prompt is empty"),
        (["generate", "hi", "--model", "no-such-model"], "unknown model"),
        (["generate", "hi", "--model", TINY, "--max-tokens", "0"], "max_tokens must be at least 1"),
        (["generate", "hi", "--model", TINY, "--temperature", "-1"], "temperature must be >= 0"),
    ],
)
def test_cli_prints_one_error_line(capsys, argv: list[str], words: str) -> None:
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


# ---- sampling ----------------------------------------------------------------------------------------

def sampled(llm: LLM, prompts: list[str], **kwargs) -> list[list[int]]:
    params = SamplingParams(max_tokens=24, temperature=1.0, ignore_eos=True, **kwargs)
    return [list(o.token_ids) for o in llm.generate(prompts, params)]


def test_seeded_sampling_is_reproducible_and_seeds_differ() -> None:
    llm = load_llm(TINY)
    a = sampled(llm, ["hello"], seed=1)[0]
    assert sampled(llm, ["hello"], seed=1)[0] == a
    assert sampled(llm, ["hello"], seed=2)[0] != a
    # a seeded request gets the same tokens whatever else is in its batch
    assert sampled(llm, ["other", "hello", "a longer prompt here"], seed=1)[1] == a
    assert LLM(TINY, device="cpu", seed=5).generate("hello", SamplingParams(max_tokens=24, ignore_eos=True))[0].token_ids \
        == LLM(TINY, device="cpu", seed=5).generate("hello", SamplingParams(max_tokens=24, ignore_eos=True))[0].token_ids


def test_top_k_1_and_tiny_top_p_are_greedy() -> None:
    llm = load_llm(TINY)
    greedy = [list(o.token_ids) for o in llm.generate(["hello", "abc"], SamplingParams(max_tokens=24, temperature=0.0,
                                                                                        ignore_eos=True))]
    assert sampled(llm, ["hello", "abc"], top_k=1, seed=3) == greedy
    assert sampled(llm, ["hello", "abc"], top_p=1e-6, seed=3) == greedy


def test_top_k_and_top_p_restrict_the_choices() -> None:
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -1.0])  # probs ~ .42 .25 .15 .09 .06 .02
    gen = torch.Generator().manual_seed(0)

    def draws(**kw) -> collections.Counter:
        params = SamplingParams(temperature=1.0, **kw)
        return collections.Counter(sample_one(logits, params, gen) for _ in range(400))

    assert set(draws()) == set(range(6))  # unrestricted: everything shows up
    assert set(draws(top_k=3)) == {0, 1, 2}
    assert set(draws(top_p=0.6)) == {0, 1}  # .42 < .6 <= .42 + .25
    assert set(draws(top_k=3, top_p=0.3)) == {0}


@pytest.mark.parametrize("kwargs", [dict(top_p=1e-300), dict(top_p=1e-46), dict(temperature=1e-38),
                                    dict(temperature=1e-300, top_k=5)])
def test_extreme_but_valid_sampling_values_are_greedy(kwargs: dict) -> None:
    # top_p below float32's smallest number rounds to 0 there, and logits / 1e-38 overflow to inf: both used to
    # give torch.multinomial an invalid distribution and fail the whole step
    logits = torch.tensor([0.5, 3.0, -2.0, 2.9, 1.0]) * 10
    gen = torch.Generator().manual_seed(0)
    assert {sample_one(logits, SamplingParams(**kwargs), gen) for _ in range(20)} == {1}


def test_extreme_sampling_values_run_through_the_engine() -> None:
    llm = load_llm(TINY)
    greedy = [list(o.token_ids) for o in llm.generate(["hello", "abc"], SamplingParams(max_tokens=8, temperature=0.0,
                                                                                        ignore_eos=True))]
    for kwargs in (dict(top_p=1e-300), dict(temperature=1e-40)):
        params = SamplingParams(**{"max_tokens": 8, "ignore_eos": True, "seed": 3, **kwargs})
        assert [list(o.token_ids) for o in llm.generate(["hello", "abc"], params)] == greedy, kwargs
    assert_nothing_allocated(llm)

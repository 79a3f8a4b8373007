"""Every bad input is an InvalidRequestError naming the fix, raised before any work.

``LLM(...)`` options are checked by ``EngineConfig`` before the model is even
resolved (the ``no_model`` fixture makes loading fail loudly); prompts and
sampling parameters are checked before the model runs or a block is taken.
"""

from __future__ import annotations

import pytest
import torch

import minikv.engine.parts as llm_module  # where the model is resolved and loaded
from conftest import load_llm
from minikv import LLM, SamplingParams
from minikv.cli import main
from minikv.engine.config import EngineConfig
from minikv.errors import InvalidRequestError
from minikv.prefix import BlockHashCache

TINY = "tiny-llama"
GOOD = {"prompt_token_ids": [1, 2, 3]}


@pytest.fixture
def no_model(monkeypatch):
    """Resolving or loading a model fails the test: the options must be refused first."""
    def boom(*args, **kwargs):
        raise AssertionError("the model was resolved or loaded before the options were checked")

    monkeypatch.setattr(llm_module, "resolve", boom)
    monkeypatch.setattr(llm_module, "load_causal_lm", boom)


@pytest.fixture
def no_forward(monkeypatch):
    """The shared tiny LLM, whose model must not run: a bad request is refused before any work."""
    llm = load_llm(TINY)

    def boom(*args, **kwargs):
        raise AssertionError("the model ran before the request was checked")

    monkeypatch.setattr(llm.model, "forward", boom)
    yield llm
    assert llm.cache.stats().num_free == llm.cache.stats().num_blocks, "a block stayed allocated"


def greedy(n: int = 4) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)


# ---- prompts -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ({"prompt_token_ids": [True, 2]}, r"prompt_token_ids must be a list of ints \(token ids\), but item 0 is True \(bool\)"),
        ({"prompt_token_ids": [1, 2.0]}, r"item 1 is 2\.0 \(float\)"),
        ({"prompt_token_ids": 7}, r"list of ints .*got 7 \(int\)"),
        ({"prompt_token_ids": torch.tensor([1.0, 2.0])}, r"torch\.float32 tensor; token ids are integers"),
        ({"prompt_token_ids": torch.tensor([True])}, r"torch\.bool tensor"),
        ({"prompt_token_ids": torch.tensor([[1, 2]])}, r"must be 1-D \(one prompt\), got shape \[1, 2\]"),
        ({"prompt": "hi", "max_tokens": 3}, r"prompt 1 has unknown key\(s\) 'max_tokens'; a prompt dict takes 'prompt'"),
        ({"prompt_ids": [1]}, r"unknown key\(s\) 'prompt_ids'"),
        ({}, r"prompt 1 is an empty dict"),
        ({"prompt": 5}, r"'prompt' must be a string, got 5 \(int\)"),
        ({"prompt": None}, r"no 'prompt_token_ids'; give the text or the token ids"),
        ({"prompt": "  "}, r"prompt 1 is empty"),
        (42, r"prompt 1 must be a string or a dict .*got 42 \(int\)"),
        (None, r"prompt 1 must be a string or a dict .*got None"),
        (b"hi", r"prompt 1 is bytes .*decode it"),
        ([1, 2], r"prompt 1 must be a string or a dict .*got \[1, 2\] \(list\)"),
    ],
)
def test_bad_prompt_in_a_batch_is_refused_before_any_work(no_forward, prompt, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        no_forward.generate([GOOD, prompt], greedy())


@pytest.mark.parametrize(
    ("prompts", "words"),
    [
        (42, r"prompts must be a string, .* or a list of them; got 42 \(int\)"),
        (None, r"prompts must be .*got None"),
        (b"hi", r"prompts must be text, got bytes b'hi'; decode them first"),
        ([1, 2, 3], r"prompts is a list of ints; token ids go in a dict"),
        (torch.tensor([1, 2]), r"token ids go in a dict: generate\(\{'prompt_token_ids': ids\}\)"),
        (["hello", 3], r"prompt 1 must be a string or a dict"),
        (["hello", b"x"], r"prompt 1 is bytes"),
    ],
)
def test_bad_prompts_argument(no_forward, prompts, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        no_forward.generate(prompts, greedy())


def test_text_dict_and_int_tensor_prompts_are_accepted() -> None:
    """``{"prompt": text}`` is encoded like the string (vLLM's TextPrompt); a 1-D int tensor like its list."""
    llm = load_llm(TINY)
    ids = llm.encode("hello world")
    want = llm.generate("hello world", greedy(6))[0].token_ids
    assert llm.generate({"prompt": "hello world"}, greedy(6))[0].token_ids == want
    assert llm.generate({"prompt_token_ids": torch.tensor(ids)}, greedy(6))[0].token_ids == want
    out = llm.generate({"prompt_token_ids": tuple(ids), "prompt": "label"}, greedy(6))[0]
    assert out.token_ids == want and out.prompt == "label"


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"max_tokens": 4}, r"sampling_params must be SamplingParams, got a dict; write SamplingParams\(\*\*your_dict\)"),
        ([SamplingParams()], r"got 1 SamplingParams for 2 prompts; give one for all, or one per prompt"),
        ([SamplingParams(), {"max_tokens": 4}], r"sampling_params\[1\] must be SamplingParams, got \{'max_tokens': 4\}"),
        ([SamplingParams(), None], r"sampling_params\[1\] must be SamplingParams, got None"),
        ("greedy", r"sampling_params must be SamplingParams or a list of them .*got 'greedy' \(str\)"),
    ],
)
def test_bad_sampling_params_argument(no_forward, params, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        no_forward.generate([GOOD, GOOD], params)


@pytest.mark.parametrize(("kwargs", "words"), [(dict(chat="yes"), r"chat must be True or False, got 'yes'"),
                                                (dict(use_tqdm=1), r"use_tqdm must be True or False, got 1 \(int\)")])
def test_generate_flags_must_be_bools(no_forward, kwargs: dict, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        no_forward.generate("hello", greedy(), **kwargs)


# ---- SamplingParams ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(top_k=2.5), r"top_k must be an int, got 2\.5 \(float\); give -1 \(all tokens\) or an int >= 1"),
        (dict(top_k=True), r"top_k must be an int, got True \(bool\)"),
        (dict(temperature=float("nan")), r"temperature must be a finite number \(got nan\); use 0 for greedy"),
        (dict(temperature=float("inf")), r"temperature must be a finite number \(got inf\)"),
        (dict(temperature=-0.5), r"temperature must be >= 0; use 0 for greedy decoding \(got -0\.5\)"),
        (dict(temperature="0.7"), r"temperature must be a number, got '0\.7' \(str\)"),
        (dict(top_p=float("nan")), r"top_p must be a number in \(0, 1\]; 1 keeps every token \(got nan\)"),
        (dict(top_p=1.5), r"top_p must be a number in \(0, 1\]; .*\(got 1\.5\)"),
        (dict(top_p=0), r"top_p must be a number in \(0, 1\]"),
        (dict(top_p=True), r"top_p must be a number in \(0, 1\]; .*\(got True\)"),
        (dict(stop_token_ids=5), r"stop_token_ids must be a list of ints \(token ids\), got 5 \(int\); e\.g\. stop_token_ids=\[2\]"),
        (dict(stop_token_ids=[2, True]), r"stop_token_ids .* item 1 is True \(bool\)"),
        (dict(stop_token_ids=[-1]), r"stop_token_ids: token ids are >= 0, but item 0 is -1"),
        (dict(seed="x"), r"seed must be an int, got 'x' \(str\); give an int from 0 to 2\*\*64 - 1, or None"),
        (dict(seed=True), r"seed must be an int, got True \(bool\)"),
        (dict(seed=-1), r"seed=-1 is out of range"),
        (dict(max_tokens=True), r"max_tokens must be an int, got True \(bool\); give how many tokens to generate"),
        (dict(max_tokens=2.0), r"max_tokens must be an int, got 2\.0 \(float\)"),
        (dict(max_tokens=0), r"max_tokens must be at least 1 \(got 0\)"),
        (dict(ignore_eos="yes"), r"ignore_eos must be True or False, got 'yes' \(str\)"),
        (dict(cache_salt=42), r"cache_salt must be a string or None, got 42 \(int\)"),
        (dict(cache_salt=b"user"), r"cache_salt must be a string or None, got b'user' \(bytes\)"),
    ],
)
def test_bad_sampling_params_fields(kwargs: dict, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        SamplingParams(**kwargs)


def test_sampling_params_are_normalised() -> None:
    import numpy as np

    sp = SamplingParams(max_tokens=np.int64(3), temperature=1, stop_token_ids=(7, np.int32(8)), seed=2**64 - 1)
    assert (type(sp.max_tokens), type(sp.temperature), sp.stop_token_ids) == (int, float, [7, 8])


# ---- LLM options: refused before the model is resolved or loaded ---------------------------------

class NoSizes:
    """A cache object with the methods but without num_blocks / block_size."""

    def match(self, token_ids, salt=None): ...
    def allocate(self, n): ...
    def insert(self, token_ids, block_ids, salt=None): ...
    def release(self, block_ids): ...
    def stats(self): ...
    def reset(self): ...

    @property
    def num_allocatable(self) -> int:
        raise AssertionError("the check must not call the cache's properties")


class OnlyMatch:
    num_blocks, block_size = 8, 16

    def match(self, token_ids, salt=None): ...


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(seed=True), r"seed must be an int, got True \(bool\); .*or None \(a nondeterministic seed\)"),
        (dict(seed="1"), r"seed must be an int, got '1' \(str\)"),
        (dict(seed=2**64), r"seed=18446744073709551616 is out of range"),
        (dict(prefix_cache="hash", prefix_cache_options={"nope": 1}),
         r"prefix_cache_options: 'nope' is not an option of the 'hash' prefix cache; its options are: ghost_size, hash_fn, policy, verify"),
        (dict(prefix_cache="radix", prefix_cache_options={"nope": 1}),
         r"'nope' is not an option of the 'radix' prefix cache; its options are: ghost_size, page_size, partial_copy, policy"),
        (dict(prefix_cache="radix", prefix_cache_options={"page_size": 3}), r"page_size must divide block_size=16"),
        (dict(prefix_cache="hash", prefix_cache_options={"hash_fn": "md5"}), r"unknown hash function 'md5'"),
        (dict(prefix_cache_options={"hash_fn": "sha256"}), r"\['hash_fn'\] given with prefix_cache='none', which takes none"),
        (dict(prefix_cache="hash", prefix_cache_options=["hash_fn"]),
         r"prefix_cache_options must be a dict of constructor keywords, got \['hash_fn'\] \(list\)"),
        (dict(prefix_cache=BlockHashCache(8, 16), prefix_cache_options={"verify": True}),
         r"prefix_cache is an object already built; pass its class or a factory"),
        (dict(prefix_cache=BlockHashCache, prefix_cache_options={"nope": 1}),
         r"'nope' is not an option of the prefix_cache factory 'BlockHashCache'; its options are: ghost_size, hash_fn, policy, verify"),
        (dict(prefix_cache=3), r"prefix_cache=3 is unknown; choose from \('none', 'hash', 'radix'\)"),
        (dict(prefix_cache="lru"), r"prefix_cache='lru' is unknown"),
        (dict(prefix_cache=NoSizes()), r"lacks 'num_blocks', 'block_size'; it must implement minikv\.prefix\.PrefixCache"),
        (dict(prefix_cache=OnlyMatch()), r"lacks 'allocate', 'insert', 'release', 'stats', 'reset', 'num_allocatable'"),
        (dict(prefix_cache=lambda: BlockHashCache(8, 16)), r"cannot be called as factory\(num_blocks, block_size"),
        (dict(prefix_cache="hash", kv_layout="contiguous"), r"prefix caching needs the paged KV layout"),
        (dict(block_size=True), r"block_size must be an int, got True \(bool\)"),
        (dict(block_size=0), r"block_size must be a positive int \(got 0\)"),
        (dict(block_size=-4), r"block_size must be a positive int \(got -4\)"),
        (dict(block_size=16.0), r"block_size must be an int, got 16\.0 \(float\)"),
        (dict(num_blocks=True), r"num_blocks must be an int, got True \(bool\)"),
        (dict(num_blocks=0), r"num_blocks must be a positive int"),
        (dict(kv_cache_memory=True), r"kv_cache_memory must be an int, got True \(bool\)"),
        (dict(kv_cache_memory=1.5e6), r"kv_cache_memory must be an int, got 1500000\.0 \(float\)"),
        (dict(max_model_len=0), r"max_model_len must be at least 2 .*\(got 0\); give None for the model's context"),
        (dict(max_model_len=-5), r"max_model_len must be at least 2 .*\(got -5\)"),
        (dict(max_model_len=True), r"max_model_len must be an int, got True \(bool\)"),
        (dict(max_model_len=512.0), r"max_model_len must be an int, got 512\.0 \(float\)"),
        (dict(dtype="float99"), r"dtype='float99' is not supported; choose 'float32', 'float16', 'bfloat16'"),
        (dict(dtype="int8"), r"dtype='int8' is not supported"),
        (dict(dtype=torch.int8), r"dtype=torch\.int8 is not supported"),
        (dict(dtype=32), r"dtype=32 is not supported"),
        (dict(device="tpu"), r"device='tpu' is unknown; this machine has 'cpu'"),
        (dict(device="mps"), r"device='mps': minikv runs on CPU or CUDA only"),
        (dict(device=0), r"device must be a string or torch\.device, got 0 \(int\)"),
        (dict(kv_layout="x"), r"kv_layout='x' is unknown; choose from \('paged', 'contiguous'\)"),
        (dict(kv_layout=3), r"kv_layout=3 is unknown"),
        (dict(kv_cache_cls=5), r"kv_cache_cls must be a class or function, got 5 \(int\)"),
        (dict(paged_decode_attention="torch"), r"paged_decode_attention must be a class or function"),
    ],
)
def test_bad_llm_option_is_refused_before_the_model_loads(no_model, kwargs: dict, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        LLM(TINY, **kwargs)


def test_cuda_devices_that_are_not_there(no_model, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(InvalidRequestError, match=r"device='cuda' but CUDA is not available .*use device='cpu'"):
        LLM(TINY, device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(InvalidRequestError, match=r"device='cuda:7' but only 2 CUDA device\(s\) are visible; "
                                                  r"this machine has 'cpu', 'cuda' or 'cuda:0'\.\.'cuda:1'"):
        LLM(TINY, device="cuda:7")
    assert EngineConfig(device="cuda:1").device == torch.device("cuda:1")


def test_engine_config_normalises() -> None:
    cfg = EngineConfig(device="cpu", dtype="bfloat16", prefix_cache="radix", block_size=8,
                       prefix_cache_options={"page_size": 1})
    assert (cfg.device, cfg.dtype, cfg.kv_layout, cfg.prefix_cache_options) == (
        torch.device("cpu"), torch.bfloat16, "paged", {"page_size": 1})
    assert EngineConfig(device="cpu", dtype=torch.float16).dtype is torch.float16
    assert EngineConfig(device="cpu").dtype is torch.float32
    assert EngineConfig(decode_attention=lambda *a: a[0]).kv_layout == "contiguous"
    assert EngineConfig(max_model_len=10**6).context_len(1024) == 1024


# ---- LLM options that need the model --------------------------------------------------------------

def test_seed_none_is_nondeterministic_but_works() -> None:
    llm = LLM(TINY, device="cpu", seed=None)
    assert len(llm.generate("hello", SamplingParams(max_tokens=5, ignore_eos=True))[0].token_ids) == 5


def test_max_model_len_above_the_model_is_clamped_and_bf16_runs_on_cpu() -> None:
    llm = LLM(TINY, device="cpu", dtype="bfloat16", max_model_len=10**6)
    assert llm.max_model_len == llm.config.max_position_embeddings == 1024
    assert llm.dtype is torch.bfloat16 and llm.kv_pool.kv.dtype is torch.bfloat16
    assert len(llm.generate("hello", greedy(3))[0].token_ids) == 3


def test_factory_errors_name_the_factory() -> None:
    def raises_type_error(num_blocks: int, block_size: int):
        return BlockHashCache(num_blocks, block_size, "sha256", True, "lru", None, "extra")  # a bug in its body

    with pytest.raises(InvalidRequestError, match=r"the prefix_cache factory raised TypeError when called as "
                                                  r"factory\(\d+, 16, \*\*\{\}\): .*takes"):
        LLM(TINY, device="cpu", prefix_cache=raises_type_error)
    with pytest.raises(InvalidRequestError, match=r"lacks 'num_blocks', 'block_size'"):
        LLM(TINY, device="cpu", prefix_cache=lambda n, bs: NoSizes())
    with pytest.raises(InvalidRequestError, match=r"build it with \(num_blocks=\d+, block_size=16\)"):
        LLM(TINY, device="cpu", prefix_cache=lambda n, bs: BlockHashCache(n + 1, bs))


# ---- the CLI -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["generate", "hi", "--model", TINY, "--device", "tpu"], "device='tpu' is unknown"),
        (["generate", "hi", "--model", TINY, "--temperature", "nan"], "temperature must be a finite number"),
    ],
)
def test_cli_bad_option_is_one_error_line_and_status_2(capsys, no_model, argv: list[str], words: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

"""The online engine (chapter 05): identical greedy tokens however requests arrive and are scheduled.

Reference: the same prompts through ``LLM(..., scheduler="waves")``, the
closed-batch engine of chapters 01-04 (itself checked against transformers
in test_engine_paged.py). Every run below must give the same tokens, for
each prefix cache: all requests at once; one arriving per step; chunked
prefill with chunks of 1, 7, 16 and 64 tokens; a pool small enough that
requests are preempted (and the test checks that they were).
"""

from __future__ import annotations

import functools
import random

import pytest

from minikv import LLM, LLMEngine, SamplingParams
from minikv.engine.parts import EngineParts
from minikv.errors import InvalidRequestError, KVCacheFull
from pool_checks import assert_cache_empty

NAME = "tiny-llama"
CACHES = ["none", "hash", "radix"]


def shared_prompts(seed: int = 0, n: int = 5, shared: int = 40, vocab: int = 200) -> list[dict]:
    """``n`` prompts: a common prefix of ``shared`` tokens, then 3..20 of their own."""
    rng = random.Random(seed)
    head = [rng.randrange(3, vocab) for _ in range(shared)]
    return [{"prompt_token_ids": head + [rng.randrange(3, vocab) for _ in range(rng.randrange(3, 21))]}
            for _ in range(n)]


def params_for(n: int, seed: int = 1, most: int = 12) -> list[SamplingParams]:
    rng = random.Random(seed)
    return [SamplingParams(max_tokens=rng.randrange(2, most + 1), temperature=0.0, ignore_eos=True)
            for _ in range(n)]


@functools.lru_cache(maxsize=None)
def parts(cache: str, num_blocks: int | None = None, block_size: int = 16, name: str = NAME) -> EngineParts:
    """One model + pool + cache per configuration, shared by the engines of the tests (reset before each)."""
    return EngineParts(name, device="cpu", prefix_cache=cache, num_blocks=num_blocks, block_size=block_size)


def engine(cache: str, num_blocks: int | None = None, block_size: int = 16, name: str = NAME, **opts) -> LLMEngine:
    p = parts(cache, num_blocks, block_size, name)
    p.cache.reset()
    return LLMEngine(parts=p, **opts)


@functools.lru_cache(maxsize=None)
def reference(name: str = NAME, shared: int = 40, most: int = 12) -> list[list[int]]:
    prompts, params = shared_prompts(shared=shared), params_for(5, most=most)
    return [o.token_ids for o in LLM(name, device="cpu", scheduler="waves").generate(prompts, params)]


def drive(eng: LLMEngine, prompts: list[dict], params: list[SamplingParams], per_step: int | None = None,
          budget: int | None = None) -> list[list[int]]:
    """Add the requests (``per_step`` of them before each step, or all first); step to the end; tokens in order.

    Checks on the way: outputs stream each token once, and no step computes more than ``budget`` tokens.
    """
    pending = list(enumerate(zip(prompts, params)))
    streamed: dict[int, list[int]] = {}
    final: dict[int, list[int]] = {}
    while pending or eng.has_unfinished_requests():
        take = len(pending) if per_step is None else per_step
        for i, (prompt, sp) in pending[:take]:
            eng.add_request(i, prompt, sp)
        pending = pending[take:]
        for out in eng.step():
            streamed.setdefault(out.request_id, []).extend(out.new_token_ids)
            assert streamed[out.request_id] == out.token_ids
            if out.finished:
                final[out.request_id] = out.token_ids
        if budget is not None:
            assert eng.last_step.num_batched_tokens <= budget
    assert not eng.has_unfinished_requests()
    assert_cache_empty(eng.cache, "after the engine drained")
    assert not eng.block_manager.holders
    return [final[i] for i in range(len(prompts))]


@pytest.mark.parametrize("cache", CACHES)
def test_all_at_once_and_one_per_step(cache: str) -> None:
    prompts, params = shared_prompts(), params_for(5)
    assert drive(engine(cache), prompts, params) == reference()
    assert drive(engine(cache), prompts, params, per_step=1) == reference()


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("chunk", [1, 7, 16, 64])
def test_chunked_prefill(cache: str, chunk: int) -> None:
    prompts, params = shared_prompts(), params_for(5)
    eng = engine(cache, long_prefill_token_threshold=chunk)
    assert drive(eng, prompts, params, per_step=2) == reference()
    assert max(eng.last_step.scheduled.values(), default=0) <= chunk
    budget = max(chunk, 8)  # a small budget: the chunks and decodes share it
    assert drive(engine(cache, max_num_batched_tokens=budget), prompts, params, budget=budget) == reference()


def long_outputs() -> tuple[list[dict], list[SamplingParams], int]:
    """Short prompts, long outputs: all are admitted, then their decodes outgrow a pool sized for the largest."""
    prompts, params = shared_prompts(shared=8), params_for(5, most=40)
    need = max(-(-(len(p["prompt_token_ids"]) + sp.max_tokens) // 4) for p, sp in zip(prompts, params))
    return prompts, params, need


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-llama:heads=6,kv_heads=2,head_dim=20,hidden=72,tie=1",
                                  "tiny-llama:heads=5,kv_heads=5,head_dim=16,hidden=80"])
def test_other_checkpoints(name: str) -> None:
    """Qwen2 (q/k/v biases), GQA with an odd head dim and tied embeddings, MHA: the same tokens as waves."""
    prompts, params = shared_prompts(), params_for(5)
    assert drive(engine("radix", name=name, long_prefill_token_threshold=7), prompts, params, per_step=2) \
        == reference(name)
    prompts, params, need = long_outputs()
    eng = engine("hash", num_blocks=need, block_size=4, name=name)
    assert drive(eng, prompts, params) == reference(name, shared=8, most=40)
    assert eng.get_stats().num_preemptions > 0


@pytest.mark.parametrize("cache", CACHES)
def test_preemption_by_recompute(cache: str) -> None:
    prompts, params, need = long_outputs()
    eng = engine(cache, num_blocks=need, block_size=4)
    assert drive(eng, prompts, params) == reference(shared=8, most=40)
    stats = eng.get_stats()
    assert stats.num_preemptions > 0, "the pool should have been too small for the batch"
    assert stats.num_running == stats.num_waiting == 0


@pytest.mark.parametrize("cache", ["hash", "radix"])
def test_preempted_requests_hit_their_own_blocks(cache: str) -> None:
    prompts, params, need = long_outputs()
    eng = engine(cache, num_blocks=need + 2, block_size=4)
    assert drive(eng, prompts, params) == reference(shared=8, most=40)
    stats = eng.get_stats()
    assert stats.num_preemptions > 0
    assert stats.cache.hit_tokens > 0


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("policy", ["fcfs", "lpm", "dfs-weight"])
def test_every_policy(cache: str, policy: str) -> None:
    prompts, params = shared_prompts(), params_for(5)
    assert drive(engine(cache, policy=policy), prompts, params) == reference()
    assert drive(engine(cache, policy=policy, max_num_batched_tokens=16), prompts, params, per_step=2) == reference()
    prompts, params, need = long_outputs()
    eng = engine(cache, num_blocks=need, block_size=4, policy=policy)
    assert drive(eng, prompts, params) == reference(shared=8, most=40)
    assert eng.get_stats().num_preemptions > 0


def test_waves_baseline_is_reachable_and_equal() -> None:
    eng = engine("radix", scheduler="waves")
    assert drive(eng, shared_prompts(), params_for(5), per_step=2) == reference()


def test_stats_and_step_info() -> None:
    eng = engine("radix")
    prompts, params = shared_prompts(), params_for(5)
    for i, (p, sp) in enumerate(zip(prompts, params)):
        eng.add_request(f"r{i}", p, sp)
    assert eng.get_stats().num_waiting == 5
    eng.step()
    info = eng.last_step
    assert info.num_batched_tokens == sum(info.scheduled.values()) > 0
    assert set(info.scheduled) <= {f"r{i}" for i in range(5)}
    stats = eng.get_stats()
    assert stats.num_running == len(info.scheduled) and 0 < stats.kv_usage <= 1
    while eng.has_unfinished_requests():
        eng.step()
    stats = eng.get_stats()
    assert stats.num_prompt_tokens == sum(len(p["prompt_token_ids"]) for p in prompts)
    assert stats.num_generation_tokens == sum(sp.max_tokens for sp in params)
    assert stats.cache.hit_tokens > 0 and stats.steps > 0


def test_abort_frees_blocks_and_reports_once() -> None:
    eng = engine("radix", num_blocks=40, block_size=4)
    prompts, params = shared_prompts(), params_for(5)
    for i, (p, sp) in enumerate(zip(prompts, params)):
        eng.add_request(i, p, sp)
    eng.step()
    eng.abort_request(0)  # running
    eng.abort_request(4)  # maybe still waiting
    eng.abort_request("no such id")  # ignored, as vLLM does
    outs = eng.step()
    aborted = {o.request_id for o in outs if o.finish_reason == "abort"}
    assert aborted == {0, 4} and all(o.finished for o in outs if o.request_id in aborted)
    eng.abort_request(0)  # already gone: ignored
    while eng.has_unfinished_requests():
        assert all(o.request_id not in (0, 4) for o in eng.step())
    assert_cache_empty(eng.cache)


def test_bad_requests_are_refused_with_nothing_allocated() -> None:
    eng = engine("hash", num_blocks=8, block_size=4)
    good = {"prompt_token_ids": [5, 6, 7]}
    eng.add_request("a", good, SamplingParams(max_tokens=2))
    with pytest.raises(InvalidRequestError, match="already running"):
        eng.add_request("a", good, SamplingParams(max_tokens=2))
    with pytest.raises(KVCacheFull, match="raise num_blocks"):
        eng.add_request("big", {"prompt_token_ids": [5] * 30}, SamplingParams(max_tokens=8))
    with pytest.raises(InvalidRequestError, match="SamplingParams"):
        eng.add_request("b", good, {"max_tokens": 2})
    with pytest.raises(InvalidRequestError, match="hashable"):
        eng.add_request(["x"], good, SamplingParams())
    while eng.has_unfinished_requests():
        eng.step()
    assert_cache_empty(eng.cache)
    with pytest.raises(InvalidRequestError, match="max_num_batched_tokens"):
        LLMEngine(parts=parts("hash", 8, 4), max_num_batched_tokens=0)
    no_chunks = LLMEngine(parts=parts("hash", 8, 4), max_num_batched_tokens=4, enable_chunked_prefill=False)
    with pytest.raises(InvalidRequestError, match="enable_chunked_prefill"):
        no_chunks.add_request("c", good, SamplingParams(max_tokens=4))
    with pytest.raises(InvalidRequestError, match="scheduler must be"):
        LLMEngine(parts=parts("hash", 8, 4), scheduler="round-robin")
    with pytest.raises(InvalidRequestError, match="unknown scheduling policy 'shortest'"):
        LLMEngine(parts=parts("hash", 8, 4), policy="shortest")


def test_generate_refuses_a_params_list_of_the_wrong_length() -> None:
    llm = LLM(NAME, device="cpu")
    with pytest.raises(InvalidRequestError, match="3 SamplingParams for 2 prompts"):
        llm.generate(["a", "b"], [SamplingParams()] * 3)
    assert_cache_empty(llm.cache)


def test_a_plugged_schedule_fn_gives_the_same_tokens_and_is_checked() -> None:
    from minikv.engine.step_plan import fill_budget

    calls = []

    def mine(*args):
        calls.append(args[2])
        return fill_budget(*args)

    assert drive(engine("radix", schedule_fn=mine, max_num_batched_tokens=24), shared_prompts(), params_for(5)) \
        == reference()
    assert calls and set(calls) == {24}

    def greedy(running, waiting, budget, *rest):
        return {v.request_id: v.num_tokens - v.num_computed_tokens for v in [*running, *waiting]}

    eng = engine("radix", schedule_fn=greedy, max_num_batched_tokens=24)
    eng.add_request(0, shared_prompts()[0], SamplingParams(max_tokens=2))
    with pytest.raises(InvalidRequestError, match="over the step's budget"):
        eng.step()
    assert_cache_empty(eng.cache, "after a bad plan")
    assert not eng.has_unfinished_requests()


def test_smollm2_matches_the_waves_engine(smollm2) -> None:
    text = ("You are a helpful assistant. Answer briefly and precisely. " * 6).strip()
    prompts = [f"{text} Question {i}: what is {i} plus {i}?" for i in range(4)]
    params = [SamplingParams(max_tokens=6 + i, temperature=0.0, ignore_eos=True) for i in range(4)]
    want = [o.token_ids for o in LLM("smollm2-135m", device="cpu", scheduler="waves").generate(prompts, params)]
    got = LLM("smollm2-135m", device="cpu", prefix_cache="radix", long_prefill_token_threshold=16).generate(
        prompts, params)
    assert [o.token_ids for o in got] == want
    need = max(-(-(len(o.prompt_token_ids) + sp.max_tokens) // 16) for o, sp in zip(got, params))
    small = LLM("smollm2-135m", device="cpu", prefix_cache="hash", num_blocks=need + 2)
    assert [o.token_ids for o in small.generate(prompts, params)] == want
    assert small.llm_engine.get_stats().num_preemptions > 0


def test_triton_backend_with_chunks_and_mixed_steps() -> None:
    """Prefill chunks beside decodes in one varlen forward, through the Triton kernels (the interpreter on CPU)."""
    p = EngineParts(NAME, device="cpu", dtype="float32", prefix_cache="radix", attention="triton")
    eng = LLMEngine(parts=p, long_prefill_token_threshold=7)
    assert drive(eng, shared_prompts(), params_for(5), per_step=1) == reference()


def test_one_thread_steps_while_others_add_and_abort() -> None:
    """The server's shape: an engine loop in a background thread; requests added and aborted from others."""
    import threading

    eng = engine("radix", num_blocks=40, block_size=4, max_num_batched_tokens=32)
    prompts, params = shared_prompts(n=5), params_for(5)
    want = reference()
    finished: dict[object, object] = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                if not eng.has_unfinished_requests():
                    stop.wait(0.001)
                    continue
                for out in eng.step():
                    if out.finished:
                        finished[out.request_id] = out
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    def client(k: int) -> None:
        for i in range(5):
            eng.add_request((k, i), prompts[i], params[i])
        eng.abort_request((k, 4))

    stepper = threading.Thread(target=loop)
    stepper.start()
    clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    deadline = 600
    while eng.has_unfinished_requests() and deadline:
        stop.wait(0.05)
        deadline -= 1
    stop.set()
    stepper.join()
    assert not errors, errors
    assert set(finished) == {(k, i) for k in range(4) for i in range(5)}
    for (k, i), out in finished.items():
        if out.finish_reason != "abort":
            assert out.token_ids == want[i], (k, i)
    assert all(finished[(k, i)].finish_reason != "abort" for k in range(4) for i in range(4))
    assert_cache_empty(eng.cache, "after the threads")

"""A script written for vLLM's offline API runs on minikv by changing its import: the common calls keep vLLM's
names and meanings (LLM, SamplingParams, RequestOutput.outputs[0], LLM.chat, LLMEngine's request loop)."""

from __future__ import annotations

import pytest

from minikv import LLM, LLMEngine, SamplingParams
from minikv.errors import InvalidRequestError

MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def llm():
    return LLM(model=MODEL, enable_prefix_caching=True, block_size=16, seed=0, max_model_len=512)


def test_quickstart_script(llm):
    prompts = ["Hello, my name is", "The president of the United States is", "The capital of France is"]
    sampling_params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=8, seed=0)
    outputs = llm.generate(prompts, sampling_params)
    assert [o.prompt for o in outputs] == prompts
    for output in outputs:
        choice = output.outputs[0]
        assert choice.index == 0 and choice.text == output.text and choice.token_ids == output.token_ids
        assert choice.finish_reason in ("stop", "length") and choice.finished()
        assert len(choice.token_ids) <= 8
        assert output.prompt_token_ids == llm.get_tokenizer().encode(output.prompt)
        assert output.finished and output.num_cached_tokens >= 0
    assert llm.prefix_cache == "hash"  # enable_prefix_caching=True is vLLM's block hashing


def test_sampling_params_names_and_meanings(llm):
    greedy = SamplingParams(temperature=0, max_tokens=12)
    free = llm.generate("Once upon a time", greedy)[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 12
    first = free.token_ids[0]
    out = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[first]))[0]
    assert out.token_ids == [first] and out.finish_reason == "stop"
    stop = free.text[4:6]
    out = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=12, stop=[stop]))[0]
    assert out.outputs[0].text == free.text[:free.text.index(stop)] and out.outputs[0].stop_reason == stop
    a = llm.generate("Once upon a time", SamplingParams(temperature=1.0, top_k=5, seed=7, max_tokens=6))[0]
    b = llm.generate("Once upon a time", SamplingParams(temperature=1.0, top_k=5, seed=7, max_tokens=6))[0]
    assert a.token_ids == b.token_ids  # a seed makes sampling repeatable
    long = llm.generate("x", SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))[0]
    assert len(long.token_ids) == 5


def test_chat_with_a_conversation(llm):
    conversation = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello"}]
    outputs = llm.chat(conversation, SamplingParams(temperature=0, max_tokens=6))
    assert isinstance(outputs, list) and len(outputs) == 1
    tok = llm.get_tokenizer()
    ids = tok.encode(tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)
    assert outputs[0].prompt_token_ids == ids
    two = llm.chat([conversation, conversation[1:]], SamplingParams(temperature=0, max_tokens=6))
    assert len(two) == 2 and two[0].token_ids == outputs[0].token_ids
    with pytest.raises(InvalidRequestError, match="conversation"):
        llm.chat([{"role": "user"}])


def test_engine_request_loop():
    engine = LLMEngine(MODEL, prefix_cache="hash")
    params = SamplingParams(temperature=0, max_tokens=4)
    for i, prompt in enumerate(["a b c", "d e f", "g h i"]):
        engine.add_request(str(i), prompt, params)
    engine.abort_request(["1"])
    finished = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = out.finish_reason
    assert finished == {"0": "length", "1": "abort", "2": "length"}


def test_enable_prefix_caching_switch():
    assert LLM(MODEL, enable_prefix_caching=False).prefix_cache == "none"
    assert LLM(MODEL, enable_prefix_caching=True, prefix_cache="radix").prefix_cache == "radix"
    with pytest.raises(InvalidRequestError, match="contradicts"):
        LLM(MODEL, enable_prefix_caching=False, prefix_cache="radix")
    with pytest.raises(InvalidRequestError, match="enable_prefix_caching"):
        LLM(MODEL, enable_prefix_caching="yes")

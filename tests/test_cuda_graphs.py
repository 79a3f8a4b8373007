"""Decode steps through DecodeGraphs' static buffers: on CPU with capture off (the same buffers, padding and
step object, run eagerly under the Triton interpreter); the capture itself runs only on a CUDA GPU."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed")

from minikv import LLM, SamplingParams  # noqa: E402
from minikv.engine.config import EngineConfig  # noqa: E402
from minikv.engine.cuda_graphs import DecodeGraphs  # noqa: E402
from minikv.errors import InvalidRequestError  # noqa: E402

PROMPTS = [{"prompt_token_ids": list(range(30, 30 + n))} for n in (5, 17, 33)]


def graphs_of(llm: LLM, sizes=(1, 2, 4, 8), capture: bool = False) -> DecodeGraphs:
    p = llm.llm_engine.parts
    return DecodeGraphs(p.model, p.kv_pool, p.scale, p.max_model_len, batch_sizes=sizes, capture=capture)


def test_decode_through_the_static_buffers_gives_the_eager_tokens():
    params = SamplingParams(max_tokens=6, temperature=0)
    want = [o.token_ids for o in LLM("tiny-llama", attention="triton").generate(PROMPTS, params)]
    llm = LLM("tiny-llama", attention="triton")
    graphs = llm.llm_engine.runner.graphs = graphs_of(llm)
    got = [o.token_ids for o in llm.generate(PROMPTS, params)]
    assert got == want
    assert graphs.replays >= 4  # the decode steps went through the buffers (3 rows padded to the size 4)


def test_padding_rows_write_nothing():
    llm = LLM("tiny-llama", attention="triton", num_blocks=16)
    pool = llm.llm_engine.parts.kv_pool
    pool.kv.copy_(torch.randn(pool.kv.shape, generator=torch.Generator().manual_seed(0)))
    before = pool.kv.clone()
    graphs = graphs_of(llm)
    slots = torch.tensor([3, 20, 37])  # blocks 0, 1, 2 (block size 16)
    logits = graphs.run(torch.tensor([5, 6, 7]), torch.tensor([3, 4, 5]), slots, [[0], [1], [2]], [4, 5, 6])
    assert logits.shape == (3, llm.config.vocab_size) and torch.isfinite(logits).all()
    changed = (pool.kv != before).flatten(4).any(-1)  # [2, layers, blocks, block_size]: touched slots
    touched = {int(b) * 16 + int(o) for b, o in changed.any(0).any(0).nonzero().tolist()}
    assert touched == {3, 20, 37}  # the fourth (padding) row wrote nothing


def test_what_runs_eagerly():
    llm = LLM("tiny-llama", attention="triton")
    graphs = graphs_of(llm, sizes=(1, 2))
    assert graphs.can_run([0, 1, 2], [[0], [1]])
    assert not graphs.can_run([0, 1, 5], [[0], [1]])  # a prefill chunk in the step
    assert not graphs.can_run([0, 1, 2, 3], [[0], [1], [2]])  # more rows than the largest graph
    assert not graphs.can_run([0, 1], [list(range(graphs.max_blocks + 1))])  # a table wider than the buffer
    assert graphs.size_for(2) == 2 and graphs.size_for(3) is None


def test_enforce_eager_option():
    assert not EngineConfig(model="tiny-llama", attention="triton").cuda_graphs  # CPU: never
    assert LLM("tiny-llama", attention="triton").llm_engine.runner.graphs is None
    with pytest.raises(InvalidRequestError, match="enforce_eager"):
        EngineConfig(model="tiny-llama", enforce_eager="no")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_captured_graphs_give_the_eager_tokens_on_gpu():
    params = SamplingParams(max_tokens=8, temperature=0)
    eager = LLM("tiny-llama", device="cuda", attention="triton", enforce_eager=True)
    want = [o.token_ids for o in eager.generate(PROMPTS, params)]
    llm = LLM("tiny-llama", device="cuda", attention="triton")
    graphs = llm.llm_engine.runner.graphs
    assert graphs is not None and graphs.capture
    assert [o.token_ids for o in llm.generate(PROMPTS, params)] == want
    assert graphs.graphs and graphs.replays >= 7

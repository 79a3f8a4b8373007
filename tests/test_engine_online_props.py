"""A Hypothesis state machine over the online engine: random arrivals, aborts, pool sizes, chunk sizes, policies.

Each example builds an engine with a drawn prefix cache (and eviction
policy), block size, pool size, token budget, chunk cap and scheduling
policy, then interleaves
``add_request`` (prompts sharing prefixes, random ``max_tokens``), ``abort_request``
(of live, finished or unknown ids) and ``step``. Invariants, checked after every step:

- no step computes more tokens than its budget, nor more than a request is behind;
- a sequence holds blocks exactly while it is running, and the cache's
  ledger adds up (used + evictable + free == all);
- whenever nothing is running, every block is free or evictable and every
  reference and lock count is zero;
- at the end every request has finished or was aborted, each reported once
  as finished, its streamed tokens equal to its final ones.
"""

from __future__ import annotations

import functools

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from minikv import LLMEngine, SamplingParams
from minikv.engine.parts import EngineParts
from pool_checks import assert_cache_empty

NAME = "tiny-llama"
POLICIES = ["fcfs", "lpm", "dfs-weight"]
HEAD = [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]


@functools.lru_cache(maxsize=None)
def parts(cache: str, block_size: int, num_blocks: int, evict: str) -> EngineParts:
    options = {} if cache == "none" else {"policy": evict}
    return EngineParts(NAME, device="cpu", prefix_cache=cache, prefix_cache_options=options, block_size=block_size,
                       num_blocks=num_blocks)


class OnlineEngine(RuleBasedStateMachine):
    @initialize(cache=st.sampled_from(["none", "hash", "radix"]), block_size=st.sampled_from([1, 2, 4]),
                extra=st.integers(0, 12), budget=st.integers(1, 40), chunk=st.sampled_from([0, 1, 3, 8]),
                policy=st.sampled_from(POLICIES), evict=st.sampled_from(["lru", "slru", "duel"]))
    def build(self, cache, block_size, extra, budget, chunk, policy, evict) -> None:
        self.max_len = 24  # prompt (<= 16) + max_tokens (<= 8)
        num_blocks = -(-self.max_len // block_size) + extra
        p = parts(cache, block_size, num_blocks, evict)
        p.cache.reset()
        self.budget = budget
        self.engine = LLMEngine(parts=p, max_num_batched_tokens=budget, long_prefill_token_threshold=chunk,
                                policy=policy)
        self.next_id = 0
        self.live: set[int] = set()
        self.done: dict[int, str] = {}
        self.streamed: dict[int, list[int]] = {}

    @rule(head=st.integers(0, len(HEAD)), own=st.lists(st.integers(20, 90), min_size=1, max_size=4),
          max_tokens=st.integers(1, 8))
    def add(self, head, own, max_tokens) -> None:
        prompt = {"prompt_token_ids": HEAD[:head] + own}
        self.engine.add_request(self.next_id, prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0,
                                                                    ignore_eos=True))
        self.live.add(self.next_id)
        self.next_id += 1

    @precondition(lambda self: self.next_id > 0)
    @rule(data=st.data())
    def abort(self, data) -> None:
        rid = data.draw(st.integers(0, self.next_id))  # next_id itself is unknown: ignored
        self.engine.abort_request(rid)

    @rule()
    def step(self) -> None:
        eng = self.engine
        behind = {s.external_id: len(s) - s.num_computed_tokens
                  for s in [*eng.scheduler.running, *eng.scheduler.waiting, *eng._inbox]}
        outs = eng.step()
        info = eng.last_step
        assert info.num_batched_tokens <= self.budget
        for rid, n in info.scheduled.items():
            assert 1 <= n <= behind.get(rid, n), (rid, n, behind)
        for out in outs:
            assert out.request_id not in self.done, f"request {out.request_id} reported after it finished"
            self.streamed.setdefault(out.request_id, []).extend(out.new_token_ids)
            assert self.streamed[out.request_id] == out.token_ids
            if out.finished:
                self.done[out.request_id] = out.finish_reason
                self.live.discard(out.request_id)

    @invariant()
    def blocks_add_up(self) -> None:
        if not hasattr(self, "engine"):
            return
        eng = self.engine
        running = {s.request_id for s in eng.scheduler.running}
        assert set(eng.block_manager.holders) == running
        stats = eng.cache.stats()
        assert stats.num_used + stats.num_evictable + stats.num_free == stats.num_blocks
        if not running:
            assert_cache_empty(eng.cache, "with nothing running")

    def teardown(self) -> None:
        if not hasattr(self, "engine"):
            return
        for _ in range(500):
            if not self.engine.has_unfinished_requests():
                break
            self.step()
        assert not self.engine.has_unfinished_requests(), "the engine did not drain in 500 steps"
        assert set(self.done) == set(range(self.next_id)), "every request finishes or is aborted"
        assert_cache_empty(self.engine.cache, "after the engine drained")


OnlineEngine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
TestOnlineEngine = OnlineEngine.TestCase

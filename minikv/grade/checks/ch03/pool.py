"""Exercise 3.3, the ref-counted LRU block pool: the learner's pool and minikv's BlockHashCache driven by the
same operations (hand-made cases, the worked example of vLLM's prefix caching design document, random
request streams), then the pool serving ``LLM("tiny-llama", prefix_cache=<factory>)``."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

from minikv.errors import KVCacheFull
from minikv.grade.checks.ch03.hashes import MODULE, PREFIXES, SALTS, borrow
from minikv.grade.compare import CheckFailed, call, forall, short
from minikv.grade.engine import Plug, Workload, engine_check
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.grade.streams import Mix, request_stream
from minikv.grade.trace import Trace
from minikv.prefix import BlockHashCache

ex33 = register(Exercise(
    "3.3", "ref-counted LRU block pool", MODULE, ("BlockPool",),
    hint="match: a hit block whose ref is 0 leaves free_blocks, then ref += 1; allocate pops from the head "
         "(free_blocks.popitem(last=False)) and drops a popped block's hash; release walks reversed(block_ids) "
         "and puts ref-0 blocks at the tail; evict only looks at blocks in free_blocks",
))


class _Trace(Trace):
    """Runs the same operations on the learner's pool and on minikv's BlockHashCache, comparing after each."""

    def __init__(self, cls: Any, num_blocks: int, block_size: int, label: str = "") -> None:
        super().__init__(f"BlockPool(num_blocks={num_blocks}, block_size={block_size})", label)
        self.mine = call(cls, num_blocks, block_size, context=self.desc)
        self.ref = BlockHashCache(num_blocks, block_size)
        self.n = num_blocks

    def _call(self, name: str, *args: Any) -> Any:
        return self.method(self.mine, name, *args)

    def compare(self, held_cached_before: set[int] | None = None) -> None:
        mine, ref = self.mine, self.ref
        refs = [call(mine.ref_count, b, context="ref_count") for b in range(self.n)]
        want_refs = [ref.ref_count(b) for b in range(self.n)]
        cached = {b for b in range(self.n) if call(mine.is_cached, b, context="is_cached")}
        if held_cached_before:
            lost = sorted(b for b in held_cached_before if b not in cached and want_refs[b] > 0)
            if lost:
                self.fail(f"block {lost[0]} lost its hash while in use (ref {want_refs[lost[0]]}): "
                           "only blocks waiting in the free queue may be evicted")
        for b in range(self.n):
            self.expect(refs[b], want_refs[b], f"block {b}'s ref count")
        want_cached = {b for b in range(self.n) if ref.is_cached(b)}
        if cached != want_cached:
            extra, missing = sorted(cached - want_cached), sorted(want_cached - cached)
            text = "the cached blocks are " + str(sorted(cached)) + f", expected {sorted(want_cached)}"
            if extra:
                text += f" (block {extra[0]} should have lost its hash)"
            elif missing:
                text += f" (block {missing[0]} should still be cached)"
            self.fail(text)
        queue = list(call(mine.free_queue, context="free_queue()"))
        want = ref.free_queue()
        if queue != want:
            why = ""
            if sorted(queue) == sorted(want):
                why = " (same blocks, another order: released blocks join the tail, the table walked from its last block)"
            elif set(queue) > set(want):
                why = f" (block {sorted(set(queue) - set(want))[0]} is in use and must have left the free queue)"
            self.fail(f"the free queue is {queue}, expected {want}{why}")
        s, w = call(mine.stats, context="stats()"), ref.stats()
        for name in ("requests", "query_tokens", "hit_tokens", "evictions", "num_used", "num_evictable", "num_cached"):
            self.expect(getattr(s, name), getattr(w, name), f"stats().{name}")

    def held_cached(self) -> set[int]:
        return {b for b in range(self.n) if self.ref.ref_count(b) > 0 and self.ref.is_cached(b)}

    # operations -----------------------------------------------------------------------------------
    def match(self, tokens: list[int], salt: str | None = None, what: str = "") -> tuple[int, ...]:
        self.step(f"match({what or short(tokens)}{', salt=' + repr(salt) if salt else ''})")
        got = self._call("match", list(tokens), salt)
        want = self.ref.match(tokens, salt)
        ids = getattr(got, "block_ids", None)
        if ids is None:
            self.fail(f"match returned {type(got).__name__}, expected a Match(block_ids, num_cached_tokens)")
        if tuple(ids) != want.block_ids or getattr(got, "num_cached_tokens", None) != want.num_cached_tokens:
            self.fail(f"match returned blocks {tuple(ids)} ({getattr(got, 'num_cached_tokens', None)} tokens), "
                       f"expected {want.block_ids} ({want.num_cached_tokens} tokens)")
        self.compare()
        return want.block_ids

    def allocate(self, n: int) -> list[int] | None:
        self.step(f"allocate({n})")
        held, avail = self.held_cached(), self.ref.num_allocatable
        pair = self.mirror(lambda: self.ref.allocate(n), lambda: self.mine.allocate(n), KVCacheFull,
                           lambda: f"{avail} blocks are free or evictable")
        if pair is not None and list(pair[1]) != pair[0]:
            self.fail(f"allocate returned {list(pair[1])}, expected {pair[0]} (the head of the free queue, in order)")
        try:
            self.compare(held)
        except CheckFailed as exc:
            if pair is not None:
                raise
            raise CheckFailed(f"allocate raised KVCacheFull but changed the pool (it must change nothing): {exc}") from None
        return None if pair is None else pair[0]

    def insert(self, tokens: list[int], table: list[int], salt: str | None = None, what: str = "") -> None:
        self.step(f"insert({what or short(tokens)}, {table}{', salt=' + repr(salt) if salt else ''})")
        got = self._call("insert", list(tokens), list(table), salt)
        want = self.ref.insert(tokens, table, salt)
        if got != want:
            self.fail(f"insert returned {got!r}, expected {want} (blocks newly cached)")
        self.compare()

    def release(self, table: list[int], what: str = "") -> None:
        self.step(f"release({what or table})")
        self._call("release", list(table))
        self.ref.release(table)
        self.compare()

    def evict(self, n: int) -> None:
        self.step(f"evict({n})")
        held = self.held_cached()
        got = self._call("evict", n)
        want = self.ref.evict(n)
        if got != want:
            self.fail(f"evict returned {got!r}, expected {want} (evictable blocks forgotten)")
        self.compare(held)


@ex33.check("allocate takes the head of the free queue; KVCacheFull changes nothing")
def _allocate(learner: Learner) -> str:
    note = borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    t = _Trace(learner.get("BlockPool"), 6, 4)
    for n in (2, 3, 2, 1, 0, 1):
        t.allocate(n)
    return "allocates LRU first, all or nothing" + note


@ex33.check("release walks a table from its last block; cached blocks keep their hash")
def _release(learner: Learner) -> str:
    note = borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    t = _Trace(learner.get("BlockPool"), 8, 2)
    tokens = [1, 2, 3, 4, 5, 6, 7]
    a = t.allocate(4)
    t.insert(tokens, a)
    b = t.allocate(2)
    t.release(a, "request A's table")
    t.insert([9, 9, 9, 9], b)
    t.release(b, "request B's table")
    return "releases tail first" + note


@ex33.check("vLLM design doc example (block size 4, 10 blocks), times 1 to 7")
def _vllm(learner: Learner) -> str:
    """The worked example of vLLM's docs/design/prefix_caching.md (see tests/test_prefix_vllm_golden.py)."""
    note = borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    t = _Trace(learner.get("BlockPool"), 10, 4)
    t.label = "Time 1, "
    r0 = list(range(100, 115))
    t.match(r0, what="request 0, 15 tokens")
    b0 = t.allocate(4)
    t.insert(r0, b0, what="request 0")
    t.label = "Time 3, "
    r0 += [115, 116]
    b0 += t.allocate(1)
    t.insert(r0, b0, what="request 0 + 2 decoded")
    t.label = "Time 4, "
    r1 = r0[:10] + [200, 201, 202, 203]
    b1 = list(t.match(r1, what="request 1, 14 tokens sharing 10"))
    b1 += t.allocate(2)
    t.insert(r1, b1, what="request 1")
    t.label = "Time 5, "
    t.release(b0, f"request 0 finishes: {b0}")
    t.label = "Time 6, "
    t.release(b1, f"request 1 finishes: {b1}")
    t.label = "Time 7, "
    r2 = r0[:12] + list(range(300, 317))
    b2 = list(t.match(r2, what="request 2, 29 tokens sharing 12"))
    b2 += t.allocate(8 - len(b2))
    t.insert(r2, b2, what="request 2")
    return "every state of the document's example matches" + note


@ex33.check("a hit revives an evictable block; evict forgets LRU first, never a block in use")
def _revive_evict(learner: Learner) -> str:
    note = borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    t = _Trace(learner.get("BlockPool"), 6, 2)
    sys_prompt = [5, 6, 7, 8]
    a = t.allocate(3)
    t.insert(sys_prompt + [1, 1], a, what="A: system prompt + [1, 1]")
    t.release(a, "A finishes")
    hit = list(t.match(sys_prompt + [2, 2, 2], what="B: system prompt + [2, 2, 2]"))
    b = hit + t.allocate(2)
    t.allocate(1)  # must not take the revived blocks
    t.evict(1)
    t.insert(sys_prompt + [2, 2, 2], b, what="B")
    t.release(b, "B finishes")
    t.evict(2)
    t.evict(5)
    return "hits revive, eviction spares blocks in use" + note


@ex33.check("a repeated prompt hits all but its last block; the recomputed block stays an uncached duplicate")
def _duplicate(learner: Learner) -> str:
    note = borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    t = _Trace(learner.get("BlockPool"), 8, 4)
    prompt = list(range(70, 82))  # exactly 3 blocks
    a = t.allocate(3)
    t.insert(prompt, a, what="A: 12 tokens")
    b = list(t.match(prompt, what="B: the same 12 tokens")) + t.allocate(1)
    t.insert(prompt, b, what="B")
    t.release(a, "A finishes")
    t.release(b, "B finishes")
    t.match(prompt + [1], what="C: the same 12 tokens + 1")
    return "duplicates stay uncached" + note


MIX = Mix(PREFIXES, SALTS, vocab=6, weights=(30, 15, 25, 25, 5), suffix=(1, 7), again_extra=lambda bs: (0, 0, 1, bs))


@ex33.check("random request streams with eviction vs minikv's BlockHashCache")
def _random_streams(learner: Learner) -> str:
    note = borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    cls = learner.get("BlockPool")

    @forall(st.integers(2, 4), st.integers(6, 16), st.integers(0, 2**32 - 1), max_examples=40)
    def prop(bs: int, num_blocks: int, seed: int) -> None:
        request_stream(_Trace(cls, num_blocks, bs), random.Random(seed), bs, 40, MIX)

    prop()
    return "random streams agree with minikv's BlockHashCache" + note


# ---- 3.3's final check: the learner's pool serves the engine ---------------------------------------------

ENGINE_BLOCK_SIZE = 4
ENGINE_NUM_BLOCKS = 40
ENGINE_MAX_TOKENS = 6
_SYSTEM = [(7 * i + 3) % 300 + 10 for i in range(21)]  # a 21-token "system prompt" of tiny-llama token ids
ENGINE_ROUNDS: tuple[tuple[tuple[int, ...], ...], ...] = (
    (tuple(_SYSTEM + [40, 41, 42]),),                                    # the first request: all misses
    (tuple(_SYSTEM + [50, 51]), tuple(_SYSTEM + [60, 61, 62, 63, 64])),  # share the system prompt
    (tuple(_SYSTEM + [40, 41, 42, 43, 44, 45, 46, 47, 48]),),            # a follow-up of the first
    tuple(tuple([200 + i] * 30) for i in range(3)),                      # strangers: the pool must evict
    (tuple(_SYSTEM + [50, 51, 52]),),                                    # what is left after eviction
)


WORKLOAD = Workload("ch03", ENGINE_ROUNDS, ENGINE_MAX_TOKENS, {"block_size": ENGINE_BLOCK_SIZE, "num_blocks": ENGINE_NUM_BLOCKS},
                    cached=True, about="wrong K/V reused? a hit must hold exactly the prompt's prefix")


@engine_check(ex33, 'serves LLM("tiny-llama") as its prefix cache, like prefix_cache="hash"', WORKLOAD,
              {"prefix_cache": "hash"}, "prefix_cache='hash'")
def _engine(learner: Learner) -> Plug:
    note = borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    cls = learner.get("BlockPool")
    return Plug({"prefix_cache": lambda num_blocks, block_size: cls(num_blocks, block_size)}, "your BlockPool", note)


__all__ = ["WORKLOAD", "reference_longest_cache_hit"]

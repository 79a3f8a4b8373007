"""Exercise 4.4's last checks: the learner's tree behind the file's ``TreePrefixCache`` (one tree key per
block) against ``RadixCache(num_blocks, block_size)`` over request streams, then serving ``LLM("tiny-llama")``."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

from minikv.grade.checks.ch04.exercises import ex44
from minikv.grade.checks.ch04.trees import REFERENCE, ref_evict, ref_insert, ref_lock, ref_match_prefix, ref_split_node, ref_unlock
from minikv.grade.checks.ch04.tree_streams import PREFIXES, pieces
from minikv.grade.compare import call, forall
from minikv.grade.engine import Plug, Prompt, Workload, engine_check
from minikv.grade.registry import Exercise
from minikv.grade.runner import Learner
from minikv.grade.streams import Mix, request_stream
from minikv.grade.trace import Trace
from minikv.kv.block_table import cdiv
from minikv.prefix import RadixCache

MIX = Mix(PREFIXES, (None, None, "tenant-b"), vocab=4, weights=(30, 20, 20, 25, 5), suffix=(1, 9),
          again_extra=lambda bs: (1, 2, bs), cut=True, decode=(1, 5), evict=(1, 3), drain=True)


class _BlockTwin(Trace):
    """The learner's TreePrefixCache and RadixCache(num_blocks, block_size) serving one request stream.

    Block ids may differ between the two: ``pair`` maps the learner's to RadixCache's. ``holds`` records
    what each of the learner's blocks was written with, so a hit must give blocks holding the prompt's prefix.
    """

    def __init__(self, cls: Any, num_blocks: int, bs: int) -> None:
        super().__init__(f"TreePrefixCache(num_blocks={num_blocks}, block_size={bs})", keep=3)
        self.mine, self.ref, self.bs = call(cls, num_blocks, bs, context=self.desc), RadixCache(num_blocks, bs), bs
        self.holds: dict[int, tuple[Any, tuple[int, ...]]] = {}  # block -> (salt, the prefix through it)
        self.pair: dict[int, int] = {}
        self.hits = 0

    def compare(self) -> None:
        got, want = self.method(self.mine, "stats"), self.ref.stats()
        for field in ("num_cached", "num_evictable", "num_free"):
            self.expect(getattr(got, field), getattr(want, field), f"stats().{field}", " (RadixCache's)")

    def match(self, tokens: list[int], salt: str | None, what: str) -> list[int]:
        self.step(f"{what} arrives" + (f" salt={salt!r}" if salt else ""))
        m, w = self.method(self.mine, "match", tokens, salt), self.ref.match(tokens, salt)
        if m.num_cached_tokens != w.num_cached_tokens:
            self.fail(f"match found {m.num_cached_tokens} cached tokens, RadixCache finds {w.num_cached_tokens}")
        bs = self.bs
        for i, b in enumerate(m.block_ids):
            if self.holds.get(b) != (salt, tuple(tokens[: (i + 1) * bs])):
                self.fail(f"hit block {i} (block id {b}) does not hold this prompt's tokens {i * bs}..{(i + 1) * bs - 1}")
        self.pair.update(zip(m.block_ids, w.block_ids))
        self.hits += m.num_cached_tokens
        return list(m.block_ids)

    def allocate(self, n: int) -> list[int] | None:
        if n > self.ref.num_allocatable:
            self.amend(" (does not fit)")
            return None
        got = self.method(self.mine, "allocate", n)
        self.pair.update(zip(got, self.ref.allocate(n)))
        return list(got)

    def insert(self, tokens: list[int], table: list[int], salt: str | None, what: str) -> None:
        self.step(f"insert({what})")
        for i in range(cdiv(len(tokens), self.bs)):  # hit blocks are rewritten with what they hold already
            self.holds[table[i]] = (salt, tuple(tokens[: (i + 1) * self.bs]))
        self.method(self.mine, "insert", tokens, table, salt)
        self.ref.insert(tokens, [self.pair[b] for b in table], salt)
        self.compare()

    def release(self, table: list[int], what: str) -> None:
        self.step(f"release({what})")
        self.method(self.mine, "release", list(table))
        self.ref.release([self.pair[b] for b in table])
        self.compare()

    def evict(self, n: int) -> None:
        self.step(f"evict({n})")
        got, want = self.method(self.mine, "evict", n), self.ref.evict(n)
        if got != want:
            self.fail(f"evict({n}) returned {got}, RadixCache's {want}")
        self.compare()


def _tree_prefix_cache(learner: Learner) -> tuple[Any, str]:
    """The file's TreePrefixCache, running the learner's pieces (minikv's where theirs are not ready)."""
    _, note = pieces(learner, [], ["split_node", "match_prefix", "insert", "lock", "unlock"])
    if learner.module is not None:
        setattr(learner.module, "evict", learner.get("evict"))
    return learner.get("TreePrefixCache"), note


@ex44.check("your tree as a block-level prefix cache (TreePrefixCache) vs RadixCache(num_blocks, block_size)")
def _as_prefix_cache(learner: Learner) -> str:
    cls, note = _tree_prefix_cache(learner)
    hits = 0

    @forall(st.integers(2, 4), st.integers(8, 20), st.integers(0, 2**32 - 1), max_examples=20)
    def prop(bs: int, num_blocks: int, seed: int) -> None:
        nonlocal hits
        twin = _BlockTwin(cls, num_blocks, bs)
        request_stream(twin, random.Random(seed), bs, 40, MIX)
        hits += twin.hits

    prop()
    if hits == 0:
        raise AssertionError("the streams had no cache hits: they no longer exercise the cache")
    return ("request streams: same cached tokens per request and pool counts as RadixCache, hits hold the "
            "prompt's K/V" + note)


# ---- 4.4's final check: the learner's tree serves the engine ------------------------------------------------

ENGINE_BLOCK_SIZE = 4
ENGINE_NUM_BLOCKS = 24
ENGINE_MAX_TOKENS = 6
_SYSTEM = [(11 * i + 5) % 300 + 10 for i in range(18)]  # an 18-token "system prompt" of tiny-llama token ids
FOLLOW_UP = (70, 71)
ENGINE_ROUNDS: tuple[tuple[Prompt, ...], ...] = (
    (tuple(_SYSTEM + [40, 41, 42]),),                                       # all misses
    (tuple(_SYSTEM + [40, 41, 50, 51]), tuple(_SYSTEM + [60, 61, 62, 63, 64])),  # branch inside a block, and after it
    (lambda runs: [*ENGINE_ROUNDS[0][0], *runs[0][0][0], *FOLLOW_UP],),     # a follow-up turn of the first request
    tuple(tuple([200 + i] * 20) for i in range(3)),                         # strangers: the pool must evict
    (tuple(_SYSTEM + [40, 41, 50, 52]),),                                   # what is left after eviction
)


WORKLOAD = Workload("ch04", ENGINE_ROUNDS, ENGINE_MAX_TOKENS, {"block_size": ENGINE_BLOCK_SIZE, "num_blocks": ENGINE_NUM_BLOCKS},
                    cached=True, about="wrong K/V reused? a hit must hold exactly the prompt's prefix")


@engine_check(ex44, 'serves LLM("tiny-llama") as its prefix cache, like prefix_cache="radix"', WORKLOAD,
              {"prefix_cache": "radix"}, "prefix_cache='radix'")
def _engine(learner: Learner) -> Plug:
    cls, note = _tree_prefix_cache(learner)
    return Plug({"prefix_cache": lambda num_blocks, block_size: cls(num_blocks, block_size)}, "your TreePrefixCache", note)


__all__ = ["REFERENCE", "WORKLOAD", "ref_evict", "ref_insert", "ref_lock", "ref_match_prefix", "ref_split_node", "ref_unlock"]

"""Exercise 5.4, Belady's offline optimum: the learner's ``belady_hits`` against minikv's
:func:`~minikv.workloads.belady.belady_tree_hit_tokens` on hand-made traces (each isolating one rule) and
random multi-turn-like traces; a wrong answer is compared with the usual mistakes (see :func:`_variant`)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from minikv.grade.checks.ch05.budget import MODULE
from minikv.grade.compare import CheckFailed, call, forall, one_line, short
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.prefix import chain_block_hashes, max_cached_blocks
from minikv.workloads.belady import belady_tree_hit_tokens

ex54 = register(Exercise(
    "5.4", "Belady's offline optimum", MODULE, ("belady_hits",),
    hint="for each prompt: hit = longest cached run of its keys (at most max_cached_blocks); while len(cached) - hit "
         "+ need > capacity, evict the leaf (no cached child, not hit now) with max (next_use, depth); then cache "
         "all its keys. need > capacity: empty the cache, hit 0",
))


def _variant(trace: Sequence[Sequence[int]], capacity: int, block_size: int, leaves_only: bool = True,
             farthest: bool = True, deepest: bool = True) -> list[int]:
    """The exercise's replay with one rule changed, to name a learner's mistake."""
    keys = [chain_block_hashes(list(p), block_size) for p in trace]
    caps = [max_cached_blocks(len(p), block_size) for p in trace]
    parent: dict[Any, Any] = {}
    depth: dict[Any, int] = {}
    cached: set[Any] = set()

    def next_use(key: Any, now: int) -> float:
        return next((i for i in range(now + 1, len(trace)) if key in keys[i][: caps[i]]), math.inf)

    hits = []
    for i, prompt in enumerate(trace):
        need = -(-len(prompt) // block_size)
        if need > capacity:
            cached.clear()
            hits.append(0)
            continue
        hit = 0
        while hit < caps[i] and keys[i][hit] in cached:
            hit += 1
        keep = set(keys[i][:hit])
        while len(cached) - hit + need > capacity:
            parents = {parent[k] for k in cached}
            pool = [k for k in cached if k not in keep and (not leaves_only or k not in parents)]
            sign, tie = (1 if farthest else -1), (1 if deepest else -1)
            cached.remove(max(pool, key=lambda k: (sign * next_use(k, i), tie * depth[k], str(k))))
        hits.append(hit * block_size)
        for j, key in enumerate(keys[i]):
            cached.add(key)
            parent[key], depth[key] = (keys[i][j - 1] if j else None), j
    return hits


_MISTAKES: list[tuple[str, dict[str, bool]]] = [
    ("it evicts a block that a cached block extends (an inner node: its cached children can no longer be hit); "
     "only leaves may go, and among equal next uses the deepest", {"leaves_only": False, "deepest": False}),
    ("it evicts a block that a cached block extends (an inner node); only leaves may go", {"leaves_only": False}),
    ("it evicts the block whose next use is nearest; Belady evicts the one used farthest in the future",
     {"farthest": False}),
    ("among leaves with the same next use it evicts the shallowest; take the deepest", {"deepest": False}),
]


def expect_hits(fn: Callable[..., Any], trace: list[list[int]], capacity: int, block_size: int) -> list[int]:
    desc = (f"belady_hits(trace of {len(trace)} prompts [" + ", ".join(short(p, 6, " ") for p in trace[:4])
            + (", ...]" if len(trace) > 4 else "]") + f", capacity={capacity}, block_size={block_size})")
    got = call(fn, [list(p) for p in trace], capacity, block_size, context=desc)
    want = belady_tree_hit_tokens(trace, capacity, block_size)
    if not isinstance(got, (list, tuple)) or len(got) != len(want):
        raise CheckFailed(one_line(f"{desc} returned {got!r}, expected a list of {len(want)} hit counts (tokens)"))
    got = [int(g) if isinstance(g, (int, float)) and g == int(g) else g for g in got]
    if got != want:
        why = ""
        for text, change in _MISTAKES:
            if got == _variant(trace, capacity, block_size, **change):
                why = text
                break
        k = next(k for k, (a, b) in enumerate(zip(got, want)) if a != b)
        shown = f"{desc}: prompt {k} hit {got[k]} tokens, expected {want[k]} (all hits {got}, expected {want})"
        raise CheckFailed(one_line(f"{why[0].upper() + why[1:]}; {shown}" if why else shown))
    return want


@ex54.check("the docstring's examples: room for the running prompt, and a prompt too big for the pool")
def _examples(learner: Learner) -> None:
    fn = learner.get("belady_hits")
    trace = [[1, 2, 3], [4, 5, 6], [1, 2, 3]]
    for capacity in (3, 2, 1, 0, 9):
        expect_hits(fn, trace, capacity, 2)
    expect_hits(fn, [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [1, 2, 3, 4, 5]], 3, 2)


@ex54.check("the farthest next use goes first; never used again, farther still")
def _farthest(learner: Learner) -> str:
    fn = learner.get("belady_hits")
    a, b, c = [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]
    # Each prompt needs 2 blocks and leaves 1 cached. At capacity 3, prompt c must evict a (next used at prompt 3)
    # or b (at prompt 4): b. Then b evicts c (never used again) rather than a (needed at prompt 5).
    trace = [a + [0], b + [0], c + [0], a + [0], b + [0], a + [0]]
    expect_hits(fn, trace, 3, 4)
    expect_hits(fn, trace, 4, 4)
    return "evicts the block needed farthest in the future"


@ex54.check("only leaves of the prefix tree go; ties deepest first")
def _leaves(learner: Learner) -> str:
    fn = learner.get("belady_hits")
    x = [5, 6, 7, 8]
    # x's two blocks are next used by the same prompt: dropping the child keeps a 2-token hit, the parent none.
    expect_hits(fn, [x + [9], [1, 2, 3, 4, 9], x + [9]], 4, 2)
    expect_hits(fn, [x + [1, 2, 9], x + [3], [7, 7, 7], x + [1, 2, 0]], 5, 2)
    return "never strands a cached block without its parent"


def _trace(rng: random.Random) -> tuple[list[list[int]], int, int]:
    """Interleaved conversations: each prompt is an earlier prompt of its thread (or a shared stem) plus new tokens."""
    bs = rng.choice([1, 2, 4])
    threads: list[list[int]] = [[rng.randrange(20) for _ in range(rng.randrange(0, 9))] for _ in range(rng.randrange(1, 4))]
    trace = []
    for _ in range(rng.randrange(1, 14)):
        t = rng.randrange(len(threads))
        threads[t] = threads[t] + [rng.randrange(20) for _ in range(rng.randrange(1, 7))]
        trace.append(list(threads[t]) if rng.random() < 0.8 else threads[t][: rng.randrange(1, len(threads[t]) + 1)])
    return trace, rng.randrange(0, 14), bs


@ex54.check("random interleaved conversations vs minikv's belady_tree_hit_tokens")
def _random(learner: Learner) -> None:
    fn = learner.get("belady_hits")

    @forall(st.integers(0, 10**6), max_examples=120)
    def prop(seed: int) -> None:
        expect_hits(fn, *_trace(random.Random(seed)))

    prop()

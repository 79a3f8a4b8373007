"""Belady's offline optimum at a finite capacity: the reference every eviction policy is measured against.

:func:`~minikv.workloads.ideal_hit_tokens` says what an *infinite* cache
hits. A real cache holds ``capacity`` blocks and must choose what to forget;
an offline chooser that sees the whole trace in advance evicts the block
whose next use lies farthest in the future (Belady, 1966). That is what this
module computes, in the same model the engine's caches live in (the model of
:func:`~minikv.workloads.replay`):

- A prompt of ``n`` tokens occupies ``ceil(n / block_size)`` blocks of the
  pool while it runs; its hit is the longest run of its first full blocks
  that is cached, capped by the last-token rule
  (:func:`~minikv.prefix.max_cached_blocks`).
- While it runs, the other cached blocks must fit beside it:
  ``cached - hit + ceil(n / block_size) <= capacity``; eviction happens then.
- After it, all of its full blocks are cached (its partial last block is not).
- A block is *used* by a later request only if it lies in that request's
  hittable prefix (a block past the cap, or past the hit, is recomputed
  anyway, so keeping it buys nothing then).
- A request too big for the whole pool (``ceil(n / bs) > capacity``) cannot
  run beside anything: it empties the cache, hits nothing and leaves nothing
  (a real engine would refuse it; here it keeps ``capacity=0`` meaningful:
  nothing is ever hit).

**What "optimal" means here, precisely.** The farthest-next-use rule is
provably optimal for classic demand paging: pages of one size, each request
one page that must be brought in. Prefix caching is not quite that: a
request brings in many blocks at once, only a *prefix* of them counts as a
hit, and a running request's uncached partial block takes room. The rule
stays a very strong offline reference (ties broken deepest block first, it
never keeps a block without its parent, so every kept block is usable), but
it is a heuristic, not a proven bound: an online policy may in principle
beat it by a hair. Percentages "of Belady" above 100% are possible, if rare.

**Block cache vs prefix tree.** :func:`belady_hit_tokens` evicts any cached
block; :func:`belady_tree_hit_tokens` may only evict *leaves* (blocks no
other cached block extends), as a radix tree must. A block's next use is
never later than its children's (every request that uses a child uses its
parent), so with ties broken deepest first the block rule already picks a
leaf every time: the two give the same hits, and the tree version exists to
say so (and to check it). Capacities are in blocks; divide a token capacity
by the block size (:func:`capacity_blocks`).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence

from minikv.errors import InvalidRequestError
from minikv.prefix.base import max_cached_blocks
from minikv.prefix.block_hashes import chain_block_hashes

_NEVER = float("inf")


def capacity_blocks(capacity_tokens: int, block_size: int) -> int:
    """How many whole blocks of ``block_size`` a token capacity holds.

    >>> capacity_blocks(32768, 16)
    2048
    """
    if capacity_tokens < 0 or block_size < 1:
        raise InvalidRequestError(
            f"capacity_tokens must be >= 0 and block_size >= 1, got {capacity_tokens} and {block_size}"
        )
    return capacity_tokens // block_size


def _block_keys(
    trace: Sequence[Sequence[int]], block_size: int, salts: Sequence[Hashable] | None
) -> list[list[Hashable]]:
    """Per request, one key per full block that identifies the whole prefix up to it (salt included)."""
    if block_size < 1:
        raise InvalidRequestError(f"block_size must be >= 1, got {block_size}")
    if salts is not None and len(salts) != len(trace):
        raise InvalidRequestError(
            f"salts must give one salt per request: {len(salts)} salts for {len(trace)} requests"
        )
    out = []
    for i, tokens in enumerate(trace):
        salt = None if salts is None else salts[i]
        hashes = chain_block_hashes(tokens, block_size, hash_fn="xxh3_128")
        out.append([(salt, h) for h in hashes])
    return out


def _simulate(
    trace: Sequence[Sequence[int]],
    capacity: int,
    block_size: int,
    salts: Sequence[Hashable] | None,
    leaves_only: bool,
) -> list[int]:
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
        raise InvalidRequestError(f"capacity must be a whole number of blocks >= 0, got {capacity!r}")
    keys = _block_keys(trace, block_size, salts)
    caps = [max_cached_blocks(len(t), block_size) for t in trace]
    uses: dict[Hashable, list[int]] = {}  # key -> requests that may hit it, in order (reversed)
    for i in range(len(trace) - 1, -1, -1):
        for k in keys[i][: caps[i]]:
            uses.setdefault(k, []).append(i)
    depth: dict[Hashable, int] = {}
    parent: dict[Hashable, Hashable | None] = {}
    children: dict[Hashable, int] = {}  # cached children per cached block (leaves_only)
    cached: set[Hashable] = set()
    heap: list[tuple[float, int, int, Hashable]] = []  # (-next use, -depth, tie, key)
    tie = 0

    def next_use(k: Hashable, now: int) -> float:
        lst = uses.get(k)
        while lst and lst[-1] <= now:
            lst.pop()
        return lst[-1] if lst else _NEVER

    def push(k: Hashable, now: int) -> None:
        nonlocal tie
        tie += 1
        heapq.heappush(heap, (-next_use(k, now), -depth[k], tie, k))

    def evict_one(now: int, keep: set[Hashable]) -> None:
        while True:
            nu, _, _, k = heapq.heappop(heap)
            if k not in cached or k in keep:
                continue  # gone, or in use now (pushed again after the request)
            if -nu != next_use(k, now):
                push(k, now)  # stale: next uses only move later, so this one waits longer
                continue
            if leaves_only and children[k]:
                continue  # pushed again when its last cached child goes
            break
        cached.discard(k)
        p = parent[k]
        if p is not None and p in cached:
            children[p] -= 1
            if leaves_only and children[p] == 0 and p not in keep:
                push(p, now)

    hits = []
    for i, tokens in enumerate(trace):
        ks = keys[i]
        need = -(-len(tokens) // block_size)
        if need > capacity:
            cached.clear()
            children.clear()
            heap.clear()
            hits.append(0)
            continue
        h = 0
        while h < caps[i] and ks[h] in cached:
            h += 1
        hit_keys = set(ks[:h])
        excess = len(cached) - h + need - capacity
        for _ in range(excess):
            evict_one(i, hit_keys)
        hits.append(h * block_size)
        for j, k in enumerate(ks):
            if k not in cached:
                cached.add(k)
                depth[k] = j
                parent[k] = ks[j - 1] if j else None
                children[k] = 0  # no orphans: nothing below an uncached block is cached
                if j:
                    children[ks[j - 1]] += 1
        for k in ks:  # every block of the request: its next use moved on
            if k in cached:
                push(k, i)
        if len(heap) > 4 * len(cached) + 64:  # drop stale entries
            heap = []
            for k in cached:
                push(k, i)
    return hits


def belady_hit_tokens(
    trace: Sequence[Sequence[int]],
    capacity: int,
    block_size: int,
    salts: Sequence[Hashable] | None = None,
) -> list[int]:
    """Per request, the tokens a block cache of ``capacity`` blocks hits under Belady's rule.

    Evicts the cached block whose next use is farthest away (never used
    again: first), ties broken deepest block first. See the module docstring
    for the model and for what "optimal" does and does not mean here.

    >>> belady_hit_tokens([[1, 2, 3], [4, 5, 6], [1, 2, 3]], capacity=3, block_size=2)
    [0, 0, 2]
    """
    return _simulate(trace, capacity, block_size, salts, leaves_only=False)


def belady_tree_hit_tokens(
    trace: Sequence[Sequence[int]],
    capacity: int,
    block_size: int,
    salts: Sequence[Hashable] | None = None,
) -> list[int]:
    """As :func:`belady_hit_tokens`, for a prefix tree: only leaves (blocks no cached block extends) may go.

    >>> belady_tree_hit_tokens([[1, 2, 3], [4, 5, 6], [1, 2, 3]], capacity=3, block_size=2)
    [0, 0, 2]
    """
    return _simulate(trace, capacity, block_size, salts, leaves_only=True)


def percent_of_optimum(hits: Sequence[int] | int, optimum: Sequence[int] | int) -> float:
    """A replay's hit tokens as a percentage of the optimum's (100.0 when both are 0).

    >>> percent_of_optimum([0, 16, 32], [0, 32, 32])
    75.0
    """
    got = hits if isinstance(hits, int) else sum(hits)
    best = optimum if isinstance(optimum, int) else sum(optimum)
    if best == 0:
        return 100.0 if got == 0 else float("inf")
    return 100.0 * got / best


__all__ = ["belady_hit_tokens", "belady_tree_hit_tokens", "capacity_blocks", "percent_of_optimum"]

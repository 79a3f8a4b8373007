"""``policy="duel"``: LRU, SLRU or a thrash-resistant order, whichever its shadow caches say hits most.

LRU is right when what was used recently is used again soon, and about as
wrong as possible when requests come back in a loop longer than the cache
(many conversations taking turns): each prompt's blocks are evicted just
before its next turn, every turn. The loop-resistant order (``keep-old``)
evicts the *newest* entries first, never-hit ones before hit ones: whatever
got in first stays and keeps hitting, the rest recycles a few blocks among
itself. That is the classic cure for loops (MRU, the "bimodal insertion" of
Qureshi et al.'s DIP), and it is as wrong as LRU is right on random traffic:
finished conversations would never leave.

Between the two sits SLRU (segmented LRU: never-hit entries out first, LRU
in each segment), which wins where a few popular prefixes meet many one-off
prompts. So this policy runs three *shadow caches*: key-only simulations
(no K/V, dicts of salt-free block keys, :func:`minikv.prefix.ghost.block_keys`)
of the same request stream at the same capacity, one per order, and counts
the tokens each would have hit (exponentially decayed, so it follows the
traffic as it changes). The real cache evicts in the order of the shadow
with the highest score; when the leader changes, ``generation`` moves on
and the cache rebuilds its eviction heap. ARC adapts the same way from its
ghost lists, with one knob; set dueling (DIP) with sampled sets.

Cost: three dict updates per full block of each request, on ``match``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

from minikv.prefix.ghost import block_keys

ORDERS = ("lru", "slru", "keep-old")
"""The orders the policy chooses among (see the module docstring)."""


class _Shadow:
    """Keys of a cache of ``capacity`` blocks evicting in one of :data:`ORDERS`.

    ``cold``: keys never hit since cached (under ``lru``: every key);
    ``hot``: keys hit at least once. ``lru`` and ``slru`` keep both in order
    of last use and evict the oldest (cold first); ``keep-old`` evicts the
    newest cold key first, then the newest hot one.
    """

    def __init__(self, capacity: int, order: str) -> None:
        self.capacity = capacity
        self.order = order
        self.cold: OrderedDict[tuple, None] = OrderedDict()
        self.hot: OrderedDict[tuple, None] = OrderedDict()

    def request(self, keys: list[tuple], hittable: int) -> int:
        """Hit blocks of one request (its hittable prefix), then cache all its keys."""
        cold, hot = self.cold, self.hot
        tiers = self.order != "lru"
        recency = self.order != "keep-old"
        h = 0
        while h < hittable and (keys[h] in cold or keys[h] in hot):
            h += 1
        for j in range(len(keys) - 1, -1, -1):  # the first blocks end up most recent, as a release leaves them
            k = keys[j]
            if k in hot:
                if recency:
                    hot.move_to_end(k)
            elif k in cold:
                if tiers and j < h:
                    del cold[k]
                    hot[k] = None
                elif recency:
                    cold.move_to_end(k)
            else:
                cold[k] = None
        newest_first = not recency
        while len(cold) + len(hot) > self.capacity:
            (cold if cold else hot).popitem(last=newest_first)
        return h


class Dueling:
    """Evicts in whichever of :data:`ORDERS` its shadow cache would have hit most lately.

    ``capacity``: the shadows' size in blocks (the cache sets it to its pool
    size when it is 0); ``decay``: per request, how much of the old scores
    stays (0.99: about the last 100 requests count). The leader changes only
    when another order scores 5% more (no flapping on ties).
    """

    name = "duel"

    def __init__(self, capacity: int = 0, block_size: int = 16, decay: float = 0.99) -> None:
        self.capacity = capacity
        self.block_size = block_size
        self.decay = decay
        self.generation = 0
        self.order = ORDERS[0]
        self._shadows: list[_Shadow] | None = None
        self.scores = [0.0] * len(ORDERS)

    @property
    def keep_old(self) -> bool:
        """True while the loop-resistant order leads."""
        return self.order == "keep-old"

    def bind(self, num_blocks: int, block_size: int) -> Dueling:
        """A fresh copy sized for a cache of ``num_blocks`` blocks of ``block_size`` tokens."""
        return Dueling(self.capacity or num_blocks, block_size, self.decay)

    def observe(self, tokens: Sequence[int], salt: Hashable, extra_keys: Sequence[Hashable] = ()) -> None:
        """Feed one request (as ``match`` sees it) to every shadow; maybe switch the order."""
        if self._shadows is None:
            self._shadows = [_Shadow(self.capacity, order) for order in ORDERS]
        bs = self.block_size
        keys = [(salt, k) for k in block_keys(tokens, bs, len(tokens) // bs, extra_keys)]
        hittable = max(0, (len(tokens) - 1) // bs)
        for i, shadow in enumerate(self._shadows):
            self.scores[i] = self.scores[i] * self.decay + shadow.request(keys, hittable)
        lead = ORDERS.index(self.order)
        best = max(range(len(ORDERS)), key=lambda i: (self.scores[i], i == lead))
        if self.scores[best] > 1.05 * self.scores[lead]:
            self.order = ORDERS[best]
            self.generation += 1

    def priority(self, node) -> tuple:  # noqa: ANN001 (an EvictionCandidate)
        if self.order == "lru":
            return (node.last_access,)
        if self.order == "slru":
            return (min(node.hit_count, 1), node.last_access)
        return (min(node.hit_count, 1), -node.created)

    def __repr__(self) -> str:
        return f"Dueling(order={self.order!r}, scores={[round(x) for x in self.scores]})"


__all__ = ["ORDERS", "Dueling"]

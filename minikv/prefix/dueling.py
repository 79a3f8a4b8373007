"""``policy="duel"``: LRU or a thrash-resistant order, whichever two shadow caches say hits more.

LRU is right when what was used recently is used again soon, and about as
wrong as possible when requests come back in a loop longer than the cache
(many conversations taking turns): each prompt's blocks are evicted just
before its next turn, every turn. The loop-resistant order (``keep-old``)
evicts the *newest* entries first, never-hit ones before hit ones: whatever
got in first stays and keeps hitting, the rest recycles a few blocks among
itself. That is the classic cure for loops (MRU, the "bimodal insertion" of
Qureshi et al.'s DIP), and it is as wrong as LRU is right on random traffic:
finished conversations would never leave.

So this policy runs both *shadow caches*: key-only simulations (no K/V, a
dict of salt-free block keys each, :func:`minikv.prefix.ghost.block_keys`)
of the same request stream at the same capacity, one per order, and counts
the tokens each would have hit (exponentially decayed, so it follows the
traffic as it changes). The real cache evicts in the order of the shadow
with the higher score; when the leader changes, ``generation`` moves on
and the cache rebuilds its eviction heap. ARC adapts the same way from its
ghost lists, with one knob; set dueling (DIP) with sampled sets.

Cost: two dict updates per full block of each request, on ``match``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

from minikv.prefix.ghost import block_keys


class _Shadow:
    """Keys of a cache of ``capacity`` blocks: LRU, or keep-old (newest never-hit out first)."""

    def __init__(self, capacity: int, keep_old: bool) -> None:
        self.capacity = capacity
        self.keep_old = keep_old
        self.cold: OrderedDict[tuple, None] = OrderedDict()  # never hit since cached (LRU: everything)
        self.hot: OrderedDict[tuple, None] = OrderedDict()  # hit at least once (keep-old only)

    def request(self, keys: list[tuple], hittable: int) -> int:
        """Hit blocks of one request (its hittable prefix), then cache all its keys."""
        cold, hot = self.cold, self.hot
        h = 0
        while h < hittable and (keys[h] in cold or keys[h] in hot):
            h += 1
        for j in range(len(keys) - 1, -1, -1):  # the first blocks end up most recent, as a release leaves them
            k = keys[j]
            if k in hot:
                hot.move_to_end(k)
            elif k in cold:
                if self.keep_old and j < h:
                    del cold[k]
                    hot[k] = None
                else:
                    cold.move_to_end(k)
            else:
                cold[k] = None
        while len(cold) + len(hot) > self.capacity:
            if not self.keep_old:
                cold.popitem(last=False)
            elif cold:
                cold.popitem(last=True)
            else:
                hot.popitem(last=True)
        return h


class Dueling:
    """Evicts like LRU or like keep-old, whichever of two shadow caches hits more lately.

    ``capacity``: the shadows' size in blocks (the cache sets it to its pool
    size when it is 0); ``decay``: per request, how much of the old score
    stays (0.99: about the last 100 requests count).
    """

    name = "duel"

    def __init__(self, capacity: int = 0, block_size: int = 16, decay: float = 0.99) -> None:
        self.capacity = capacity
        self.block_size = block_size
        self.decay = decay
        self.generation = 0
        self.keep_old = False
        self._shadows: tuple[_Shadow, _Shadow] | None = None
        self.scores = [0.0, 0.0]  # LRU, keep-old

    def bind(self, num_blocks: int, block_size: int) -> Dueling:
        """A fresh copy sized for a cache of ``num_blocks`` blocks of ``block_size`` tokens."""
        return Dueling(self.capacity or num_blocks, block_size, self.decay)

    def observe(self, tokens: Sequence[int], salt: Hashable, extra_keys: Sequence[Hashable] = ()) -> None:
        """Feed one request (as ``match`` sees it) to both shadows; maybe switch the order."""
        if self._shadows is None:
            self._shadows = (_Shadow(self.capacity, False), _Shadow(self.capacity, True))
        bs = self.block_size
        keys = [(salt, k) for k in block_keys(tokens, bs, len(tokens) // bs, extra_keys)]
        hittable = max(0, (len(tokens) - 1) // bs)
        for i, shadow in enumerate(self._shadows):
            self.scores[i] = self.scores[i] * self.decay + shadow.request(keys, hittable)
        lead = self.scores[1] > 1.05 * self.scores[0] if not self.keep_old else self.scores[1] * 1.05 >= self.scores[0]
        if lead != self.keep_old:
            self.keep_old = lead
            self.generation += 1

    def priority(self, node) -> tuple:  # noqa: ANN001 (an EvictionCandidate)
        if self.keep_old:
            return (min(node.hit_count, 1), -node.created)
        return (node.last_access,)

    def __repr__(self) -> str:
        return f"Dueling(order={'keep-old' if self.keep_old else 'lru'}, scores={self.scores})"


__all__ = ["Dueling"]

"""Eviction policies of both prefix caches: which evictable entry to forget first.

One interface serves :class:`~minikv.prefix.BlockHashCache` (whose entries
are cached blocks) and :class:`~minikv.prefix.RadixCache` (whose entries are
unlocked leaves): a policy is one function, ``priority(entry)``, and the
entry with the *smallest* priority is evicted first. Both caches take
``policy=`` (a name of :data:`EVICTION_POLICIES` or a policy object), so an
engine picks one with ``prefix_cache_options={"policy": "slru"}``.

A cache keeps its evictable entries in a heap ordered by that key and
re-checks the key when it pops an entry (lazy deletion), so keys must never
*decrease* while an entry waits in the heap. Every policy here only grows:
access times and hit counts go up, and an entry's end only moves towards the
root when a radix leaf is trimmed. (The block cache under ``"lru"`` needs no
heap at all: its free queue *is* the LRU order, exactly as in vLLM.)

What a policy may read (:class:`EvictionCandidate`): the logical time of the
last ``match`` or ``insert`` that used the entry, how many matches hit it,
and ``end``, the prompt position just past it (how deep in a prompt it sits).
The clock is logical (one tick per ``match`` or ``insert``), not wall time,
so every run with the same requests evicts the same entries.

- ``lru`` (vLLM's and SGLang's default): the entry used longest ago.
- ``lfu``: the entry matched fewest times; ties broken by LRU. It keeps a
  popular system prompt alive through a burst of one-off requests.
- ``slru`` (segmented LRU, the scan-resistant core of S3-FIFO and ARC):
  entries never hit since they were cached go first, LRU among them, and
  only then entries hit at least once, LRU among those. One-off prompts
  recycle among themselves instead of flushing reused prefixes.
- ``duel``: LRU, SLRU or a loop-resistant "keep-old" order (newest,
  never-hit entries out first), whichever of three key-only shadow caches
  hits most lately (:mod:`minikv.prefix.dueling`): the one to use when the
  traffic is not known in advance. A stateful policy: it has
  ``observe`` (the caches call it on each ``match``), ``generation`` (the
  caches rebuild their heap when it moves on) and ``bind`` (each cache gets
  its own copy, sized to its pool).
- ``shallow``: LRU with a handicap for depth: an entry ``end`` tokens deep
  counts as used ``weight * end`` ticks earlier than it was. Deep blocks (a
  long conversation's latest turns) are shared by fewer future prompts than
  shallow ones, and they cost as much room.

How each fares against Belady's offline optimum on our traces is measured by
``minikv bench evict`` (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from minikv.errors import InvalidRequestError


class EvictionCandidate(Protocol):
    """What a policy may read of an evictable entry: a radix node or a cached block."""

    @property
    def last_access(self) -> int:
        """Logical time of the last match or insert whose path went through the node."""
        ...

    @property
    def hit_count(self) -> int:
        """How many matches went through the node."""
        ...

    @property
    def end(self) -> int:
        """Prompt position just past the entry (a block's or a node's last token + 1)."""
        ...

    @property
    def created(self) -> int:
        """A number that grows with each entry the cache creates (its age order)."""
        ...


@runtime_checkable
class EvictionPolicy(Protocol):
    """Orders evictable leaves: smallest ``priority`` is evicted first."""

    name: str

    def priority(self, node: EvictionCandidate) -> tuple[int, ...]:
        """The node's sort key; must not decrease over the node's life."""
        ...


@dataclass(frozen=True)
class LRU:
    """Least recently used first."""

    name: str = "lru"

    def priority(self, node: EvictionCandidate) -> tuple[int, ...]:
        return (node.last_access,)


@dataclass(frozen=True)
class LFU:
    """Least frequently matched first; the least recently used among equals."""

    name: str = "lfu"

    def priority(self, node: EvictionCandidate) -> tuple[int, ...]:
        return (node.hit_count, node.last_access)


@dataclass(frozen=True)
class SLRU:
    """Segmented LRU: never-hit entries first (LRU among them), then hit ones (LRU)."""

    name: str = "slru"

    def priority(self, node: EvictionCandidate) -> tuple[int, ...]:
        return (min(node.hit_count, 1), node.last_access)


@dataclass(frozen=True)
class Shallow:
    """LRU where an entry ``end`` tokens deep counts as used ``weight * end`` ticks earlier."""

    name: str = "shallow"
    weight: float = 0.2

    def priority(self, node: EvictionCandidate) -> tuple[float, ...]:
        return (node.last_access - self.weight * node.end,)


from minikv.prefix.dueling import Dueling  # noqa: E402 (it needs nothing above; kept beside its peers)

EVICTION_POLICIES: dict[str, type[EvictionPolicy]] = {
    "lru": LRU,
    "lfu": LFU,
    "slru": SLRU,
    "shallow": Shallow,
    "duel": Dueling,
}
"""Policies by name."""


def bind_policy(policy: EvictionPolicy, num_blocks: int, block_size: int) -> EvictionPolicy:
    """The policy a cache of that size uses: a stateful policy (one with ``bind``) gets its own copy."""
    bind = getattr(policy, "bind", None)
    return bind(num_blocks, block_size) if callable(bind) else policy


def resolve_policy(policy: str | EvictionPolicy) -> EvictionPolicy:
    """The policy named ``policy`` (a key of :data:`EVICTION_POLICIES`), or ``policy`` itself if it is one."""
    if isinstance(policy, str):
        try:
            return EVICTION_POLICIES[policy]()
        except KeyError:
            choices = ", ".join(repr(k) for k in EVICTION_POLICIES)
            raise InvalidRequestError(
                f"unknown eviction policy {policy!r}; choose one of {choices}, or pass an "
                f"object with a priority(node) method"
            ) from None
    if not isinstance(policy, EvictionPolicy):
        raise InvalidRequestError(
            f"an eviction policy needs a name and a priority(node) method, got "
            f"{type(policy).__name__}"
        )
    return policy


__all__ = [
    "EVICTION_POLICIES",
    "LFU",
    "LRU",
    "SLRU",
    "Dueling",
    "EvictionCandidate",
    "Shallow",
    "EvictionPolicy",
    "bind_policy",
    "resolve_policy",
]

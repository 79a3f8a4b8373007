"""Eviction policies for the radix cache: which unlocked leaf to forget first.

A policy is one function, ``priority(node)``: the leaf with the *smallest*
priority is evicted first. The cache keeps its evictable leaves in a heap
ordered by that key and re-checks the key when it pops a leaf (lazy
deletion), so keys must never *decrease* while a node waits in the heap.
Both policies here only ever grow: access times and hit counts go up.

The clock is logical (one tick per ``match`` or ``insert``), not wall time,
so every run with the same requests evicts the same leaves.

- LRU (SGLang's default): the leaf whose path was used longest ago.
- LFU: the leaf matched fewest times; ties broken by LRU. It keeps a popular
  system prompt's branch alive through a burst of one-off requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from minikv.errors import InvalidRequestError


class EvictionCandidate(Protocol):
    """What a policy may read of a tree node."""

    @property
    def last_access(self) -> int:
        """Logical time of the last match or insert whose path went through the node."""
        ...

    @property
    def hit_count(self) -> int:
        """How many matches went through the node."""
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


EVICTION_POLICIES: dict[str, type[EvictionPolicy]] = {"lru": LRU, "lfu": LFU}
"""Policies by name."""


def resolve_policy(policy: str | EvictionPolicy) -> EvictionPolicy:
    """The policy named ``policy`` (``"lru"``, ``"lfu"``), or ``policy`` itself if it is one."""
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
    "EvictionCandidate",
    "EvictionPolicy",
    "resolve_policy",
]

"""Scheduling policies: in which order the engine admits its waiting requests.

Each step the engine fills its token budget with the running requests first,
then admits waiting ones in the order a policy gives:
``make_policy(name).order(list(waiting), cache)``. The order decides how much
of the prefix cache is hit: two requests sharing a long prefix hit it only if
the second is admitted before that prefix is evicted.

- ``fcfs``: first come, first served (the queue as it is). No starvation.
- ``lpm``: longest cached prefix first (SGLang's longest prefix match), ties
  by arrival. Ranking costs one ``cache.peek`` per waiting request, so above
  ``threshold`` waiting requests (128, as SGLang) it falls back to FCFS.
  A request whose prefix is never cached can wait a long time.
- ``dfs-weight`` (SGLang): waiting requests hang in a tree at their cached
  prefix; each node weighs as many waiting requests as it has below it; a
  depth-first walk that visits heavier subtrees first emits them. Requests
  sharing a cached prefix come out together, the biggest group first.

Ordering only *reads* the cache through ``peek`` (no reference taken, no LRU
order or counter changed); a cache without ``peek`` counts as a 0-token hit.
The policies rank with pure functions over plain data, :func:`lpm_order`
and :func:`dfs_weight_order`, which exercise 5.3 is graded against.

>>> make_policy("lpm").name, make_policy("dfs-weight").name
('lpm', 'dfs-weight')
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from minikv.errors import InvalidRequestError

if TYPE_CHECKING:
    from minikv.engine.sequence import Sequence as Request
else:
    Request = Any

LPM_THRESHOLD = 128
"""Waiting requests above which ``lpm`` stops peeking and serves FCFS (SGLang's value)."""


@runtime_checkable
class SchedulingPolicy(Protocol):
    """Orders the waiting queue; the engine admits from the front of the result.

    ``order`` must return a permutation of ``waiting`` (every request once,
    nothing added) and must not take cache references or change the cache:
    read it with ``cache.peek(token_ids, salt)`` only. ``cache`` may be None.
    A request reads as: ``token_ids`` (prompt plus any tokens generated
    before a preemption), ``prompt_token_ids``, ``params.cache_salt``,
    ``metrics.arrival_time`` and ``request_id``.
    """

    name: str

    def order(self, waiting: list[Request], cache: object) -> list[Request]:
        """The requests of ``waiting`` in the order they should be admitted."""
        ...


# ------------------------------------------------------------ pure rankings


def lpm_order(
    items: Iterable[tuple[Hashable, int, float]], threshold: int = LPM_THRESHOLD
) -> list[Hashable]:
    """Longest prefix match: request ids by cached tokens, most first; ties by arrival.

    ``items`` are ``(request_id, cached_tokens, arrival)`` in queue order.
    Requests with equal cached tokens go by ``arrival`` (earliest first),
    then by queue order. When there are more than ``threshold`` items the
    queue order is kept unchanged (FCFS): ranking a long queue costs a
    cache lookup per request and each step, so SGLang stops doing it.

    >>> lpm_order([("a", 0, 0.0), ("b", 32, 1.0), ("c", 32, 0.5), ("d", 16, 0.1)])
    ['c', 'b', 'd', 'a']
    >>> lpm_order([("a", 0, 0.0), ("b", 32, 1.0), ("c", 16, 2.0)], threshold=2)
    ['a', 'b', 'c']
    """
    rows = list(items)
    if len(rows) > threshold:
        return [rid for rid, _, _ in rows]
    ranked = sorted(range(len(rows)), key=lambda i: (-rows[i][1], rows[i][2], i))
    return [rows[i][0] for i in ranked]


@dataclass
class _Node:
    """A node of the waiting requests' prefix tree: the prefix ``key[:depth]``."""

    depth: int
    children: list[_Node]
    requests: list[int]  # indices of the requests whose key ends exactly here
    weight: int = 0  # requests in the subtree
    first: tuple[float, int] = (0.0, 0)  # earliest (arrival, index) in the subtree


def _common_prefix(a: tuple, b: tuple) -> int:
    """Length of the common prefix of two tuples (binary search on slice equality)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _prefix_tree(keys: list[tuple]) -> _Node:
    """The compressed trie of ``keys``: a node where a key ends or two keys part."""
    root = _Node(0, [], [])
    order = sorted(range(len(keys)), key=lambda i: keys[i])  # a prefix sorts before its extensions
    stack = [root]
    prev: tuple | None = None
    for i in order:
        key = keys[i]
        lcp = 0 if prev is None else _common_prefix(prev, key)
        popped = None
        while stack[-1].depth > lcp:
            popped = stack.pop()
        top = stack[-1]
        if top.depth < lcp:  # prev and key part inside popped's edge: branch there
            assert popped is not None
            branch = _Node(lcp, [popped], [])
            top.children[-1] = branch  # popped was top's last child (keys are sorted)
            stack.append(branch)
            top = branch
        if len(key) == top.depth:
            top.requests.append(i)
        else:
            leaf = _Node(len(key), [], [i])
            top.children.append(leaf)
            stack.append(leaf)
        prev = key
    return root


def dfs_weight_order(
    items: Sequence[tuple[Hashable, Sequence[int], int, float]],
    salts: Sequence[Hashable] | None = None,
) -> list[Hashable]:
    """SGLang's DFS-weight order: request ids grouped by cached prefix, biggest group first.

    ``items`` are ``(request_id, token_ids, cached_tokens, arrival)`` in queue
    order; ``salts`` (one per item, default all None) keep apart prefixes
    that cannot be shared. Each request hangs in a prefix tree at the node of
    its cached prefix ``token_ids[:cached_tokens]`` (of its salt); requests
    that hit nothing hang at the root. A node's weight is the number of
    requests in its subtree. A depth-first walk from the root visits the
    children of each node heaviest first (ties: the child holding the
    earliest arrival), emits every request below a child before moving to
    the next, and emits a node's own requests (by arrival, then queue order)
    after its children: deeper, longer hits first.

    >>> p, q = [1, 2, 3, 4], [7, 7, 7, 7]
    >>> dfs_weight_order([
    ...     ("x", p + [5], 0, 0.0),     # nothing cached: the root, last
    ...     ("a1", p + [6], 4, 1.0),    # group p, two requests
    ...     ("b1", q + [8], 4, 2.0),    # group q, one request
    ...     ("a2", p + [9], 4, 3.0),
    ... ])
    ['a1', 'a2', 'b1', 'x']
    """
    if salts is not None and len(salts) != len(items):
        raise InvalidRequestError(
            f"salts must give one salt per request: {len(salts)} salts for {len(items)} requests"
        )
    salt_ids: dict[Hashable, int] = {}
    keys: list[tuple] = []
    for i, (_, tokens, cached, _) in enumerate(items):
        if cached <= 0:
            keys.append(())
            continue
        sid = salt_ids.setdefault(None if salts is None else salts[i], len(salt_ids))
        keys.append((sid, *tokens[:cached]))
    root = _prefix_tree(keys)
    arrival = [(float(row[3]), i) for i, row in enumerate(items)]
    # Weights and earliest arrivals bottom-up: reversed preorder puts children before parents.
    preorder, stack = [], [root]
    while stack:
        node = stack.pop()
        preorder.append(node)
        stack.extend(node.children)
    for node in reversed(preorder):
        node.weight = len(node.requests) + sum(c.weight for c in node.children)
        own = [arrival[i] for i in node.requests] + [c.first for c in node.children]
        node.first = min(own, default=(0.0, 0))
    out: list[Hashable] = []
    todo: list[tuple[_Node, bool]] = [(root, False)]  # (node, children already expanded)
    while todo:
        node, expanded = todo.pop()
        if expanded:
            out += [items[i][0] for i in sorted(node.requests, key=arrival.__getitem__)]
            continue
        todo.append((node, True))
        kids = sorted(node.children, key=lambda c: (-c.weight, c.first))
        todo += [(c, False) for c in reversed(kids)]
    return out


# ------------------------------------------------------------- the policies


def cached_tokens(request: Request, cache: object) -> int:
    """Tokens of ``request`` that ``cache`` would hit now, by ``peek``; 0 if it cannot tell."""
    peek = getattr(cache, "peek", None)
    if peek is None:
        return 0
    return int(peek(_tokens(request), _salt(request)))


def _tokens(request: Request) -> Sequence[int]:
    tokens = getattr(request, "token_ids", None)
    return request.prompt_token_ids if tokens is None else tokens


def _salt(request: Request) -> Hashable:
    return getattr(getattr(request, "params", None), "cache_salt", None)


def _arrival(request: Request) -> float:
    return float(getattr(getattr(request, "metrics", None), "arrival_time", 0.0))


@dataclass(frozen=True)
class FCFS:
    """First come, first served: the waiting queue unchanged."""

    name: str = "fcfs"

    def order(self, waiting: list[Request], cache: object) -> list[Request]:
        return list(waiting)


@dataclass(frozen=True)
class LPM:
    """Longest cached prefix first (ties by arrival); FCFS above ``threshold`` waiting requests."""

    threshold: int = LPM_THRESHOLD
    name: str = "lpm"

    def order(self, waiting: list[Request], cache: object) -> list[Request]:
        if len(waiting) > self.threshold:  # do not even peek
            return list(waiting)
        rows = [(i, cached_tokens(r, cache), _arrival(r)) for i, r in enumerate(waiting)]
        return [waiting[i] for i in lpm_order(rows, self.threshold)]


@dataclass(frozen=True)
class DFSWeight:
    """SGLang's DFS-weight: requests grouped by cached prefix, heaviest subtree first."""

    name: str = "dfs-weight"

    def order(self, waiting: list[Request], cache: object) -> list[Request]:
        rows = [(i, _tokens(r), cached_tokens(r, cache), _arrival(r)) for i, r in enumerate(waiting)]
        ranked = dfs_weight_order(rows, [_salt(r) for r in waiting])
        return [waiting[i] for i in ranked]


POLICIES: dict[str, type] = {"fcfs": FCFS, "lpm": LPM, "dfs-weight": DFSWeight}
"""Policies by name; each is built with its defaults."""


def make_policy(policy: str | SchedulingPolicy) -> SchedulingPolicy:
    """The policy named ``policy``, or ``policy`` itself if it has an ``order`` method.

    >>> make_policy("fcfs")
    FCFS(name='fcfs')
    >>> make_policy(LPM(threshold=8)).threshold
    8
    >>> make_policy("sjf")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    minikv.errors.InvalidRequestError: unknown scheduling policy 'sjf'; choose one of 'fcfs', ...
    """
    choices = ", ".join(repr(k) for k in POLICIES)
    if isinstance(policy, str):
        try:
            return POLICIES[policy]()
        except KeyError:
            raise InvalidRequestError(
                f"unknown scheduling policy {policy!r}; choose one of {choices}, or pass an "
                f"object with an order(waiting, cache) method"
            ) from None
    if not callable(getattr(policy, "order", None)):
        raise InvalidRequestError(
            f"a scheduling policy is one of {choices} or an object with an order(waiting, cache) "
            f"method, got {type(policy).__name__}"
        )
    return policy


def checked_order(policy: SchedulingPolicy, waiting: list[Request], cache: object) -> list[Request]:
    """``policy.order(waiting, cache)``, checked to be a permutation of ``waiting``.

    For policies the engine did not write (a learner's): a result that drops,
    repeats or invents a request raises :class:`InvalidRequestError`.
    """
    ordered = list(policy.order(list(waiting), cache))
    given = sorted(map(id, waiting))
    if len(ordered) != len(waiting) or sorted(map(id, ordered)) != given:
        ids = [getattr(r, "request_id", "?") for r in waiting]
        got = [getattr(r, "request_id", "?") for r in ordered]
        name = getattr(policy, "name", type(policy).__name__)
        raise InvalidRequestError(
            f"scheduling policy {name!r} must return every waiting request exactly once: "
            f"given {ids}, got {got}"
        )
    return ordered


__all__ = [
    "LPM",
    "LPM_THRESHOLD",
    "POLICIES",
    "DFSWeight",
    "FCFS",
    "SchedulingPolicy",
    "cached_tokens",
    "checked_order",
    "dfs_weight_order",
    "lpm_order",
    "make_policy",
]

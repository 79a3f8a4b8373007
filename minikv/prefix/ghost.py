"""Ghost memory and miss classification, shared by the prefix caches.

A *ghost list* remembers the keys of recently evicted blocks (not their K/V):
ARC and S3-FIFO use such lists to notice that something evicted was wanted
again; here they let a cache say *why* a prompt missed
(:class:`~minikv.prefix.report.MissReport`): a block that was cached once and
evicted since is ``evicted``, one the cache never had is ``never_seen``.

Keys are salt-free: :func:`block_keys` chains Python's tuple hash over each
full block's token ids (and the extra keys), ``key_i = hash((key_{i-1},
tokens of block i))``, so the same prefix under two salts has the same keys
and the ghost list stores the salt beside each key. Python hashes ints and
tuples of ints the same way in every run, so the keys are reproducible; they
are only ever compared within one process. A collision (probability about
``2**-64`` per pair) could at worst put a token in the wrong bucket of a
report: no K/V is ever served from a ghost.

:func:`classify` turns what a cache knows about one prompt into the report,
the same way for every cache (see its docstring for the bucket rules).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

from minikv.errors import InvalidRequestError
from minikv.prefix.report import MissReport

ROOT_KEY = hash("minikv/prefix/ghost/root")


def block_keys(tokens: Sequence[int], block_size: int, num_blocks: int, extra_keys: Sequence[Hashable] = ()) -> list[int]:
    """Salt-free chained keys of the first ``num_blocks`` full blocks of ``tokens``."""
    key = hash((ROOT_KEY, tuple(extra_keys)))
    out = []
    for i in range(num_blocks):
        key = hash((key, tuple(tokens[i * block_size : (i + 1) * block_size])))
        out.append(key)
    return out


class GhostList:
    """The last ``capacity`` evicted block keys, oldest forgotten first, each with its salt.

    >>> g = GhostList(2)
    >>> g.add(1, None); g.add(2, "a"); g.add(3, None)
    >>> (1 in g, g.has(2, "a"), g.other_salt(2, None), len(g))
    (False, True, True, 2)
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise InvalidRequestError(f"ghost_size must be a whole number >= 0 (e.g. 1024), got {capacity!r}")
        self.capacity = capacity
        self._keys: OrderedDict[tuple[int, Hashable], None] = OrderedDict()  # (key, salt), oldest first
        self._salted: dict[int, int] = {}  # key -> how many entries with a salt (not None) it has

    def add(self, key: int, salt: Hashable) -> None:
        """Remember that the block ``key`` was evicted from the tree or table of ``salt``."""
        if not self.capacity:
            return
        keys, k = self._keys, (key, salt)
        if k in keys:
            keys.move_to_end(k)
            return
        keys[k] = None
        if salt is not None:
            self._salted[key] = self._salted.get(key, 0) + 1
        if len(keys) > self.capacity:
            self._drop(keys.popitem(last=False)[0])

    def _drop(self, k: tuple[int, Hashable]) -> None:
        key, salt = k
        if salt is not None:
            left = self._salted[key] - 1
            if left:
                self._salted[key] = left
            else:
                del self._salted[key]

    def discard(self, key: int, salt: Hashable) -> None:
        """Forget ``key`` under ``salt`` (it is cached again)."""
        if self._keys.pop((key, salt), 0) is None:
            self._drop((key, salt))

    def has(self, key: int, salt: Hashable) -> bool:
        return (key, salt) in self._keys

    def other_salt(self, key: int, salt: Hashable) -> bool:
        """True when ``key`` was evicted under a salt other than ``salt``."""
        salted = self._salted.get(key, 0)
        if salt is None:
            return salted > 0
        return (key, None) in self._keys or salted - ((key, salt) in self._keys) > 0

    def __contains__(self, key: int) -> bool:
        return (key, None) in self._keys or key in self._salted

    def __len__(self) -> int:
        return len(self._keys)

    def clear(self) -> None:
        self._keys.clear()
        self._salted.clear()


def check_hit(num_tokens: int, num_cached_tokens: object) -> int:
    """``num_cached_tokens`` as an int in ``0 .. max(0, num_tokens - 1)``, else InvalidRequestError."""
    if isinstance(num_cached_tokens, bool) or not isinstance(num_cached_tokens, int):
        raise InvalidRequestError(f"num_cached_tokens must be an int (Match.num_cached_tokens), got {num_cached_tokens!r}")
    if not 0 <= num_cached_tokens <= max(0, num_tokens - 1):
        raise InvalidRequestError(
            f"num_cached_tokens={num_cached_tokens} does not fit a prompt of {num_tokens} tokens (a hit "
            f"leaves at least the last token to compute); pass the Match that match() returned for it"
        )
    return num_cached_tokens


def classify(
    n: int, hit: int, held: int, unit: int, block_size: int, status: Callable[[int], str]
) -> MissReport:
    """Split a prompt of ``n`` tokens into the buckets of a :class:`MissReport`.

    ``hit``: tokens the match gave; ``held``: the longest prefix the cache
    holds for this salt *without* the last-token rule (a multiple of
    ``unit``, the granularity the cache stores: the block size, or a radix
    page); ``status(i)``: ``"evicted"``, ``"other_salt"`` or ``"never_seen"``
    for the block of index ``i`` (positions ``i * block_size ..``). Rules:

    - the whole prompt is held and ends on a ``unit`` boundary: the last
      token is ``last_token`` (without the rule it would have hit), and the
      held tokens between the hit and it that could not be shared (a block
      cache stops a whole block short) are ``partial_block``;
    - otherwise the tokens past the prompt's last full ``unit`` are
      ``partial_block`` (the cache cannot store them yet), so are held tokens
      the match could not share, and each other token from ``held`` on takes
      its block's ``status``.
    """
    if n == 0:
        return MissReport()
    held = min(max(held, hit), n)
    if held == n and n % unit == 0:
        return MissReport(hit=hit, last_token=1, partial_block=n - 1 - hit)
    tail = n % unit
    start = min(held, n - tail)
    counts = {"evicted": 0, "other_salt": 0, "never_seen": 0}
    pos, end = start, n - tail
    while pos < end:
        i = pos // block_size
        nxt = min(end, (i + 1) * block_size)
        counts[status(i)] += nxt - pos
        pos = nxt
    return MissReport(hit=hit, partial_block=start - hit + tail, **counts)


__all__ = ["GhostList", "block_keys", "check_hit", "classify"]

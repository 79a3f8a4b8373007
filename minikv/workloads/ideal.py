"""The hit rate of an infinite prefix cache: the ceiling every real cache is measured against.

An infinite cache never evicts, so request ``i`` can reuse its longest common
prefix (LCP) with *any* earlier request of the same salt. Two rules still
apply, the same ones the engine's caches follow:

- the last-token rule: at most ``len - 1`` tokens hit (the last prompt
  token's logits must be computed);
- with ``block_size``, only whole blocks can be shared by pointer, so the hit
  is rounded down to a multiple of ``block_size`` (what a block-hash cache, or
  a radix cache with ``page_size == block_size``, can reach).

Comparing every pair of prompts costs O(n^2) prompt comparisons. Instead all
prompts seen so far go into one compressed trie (a radix tree, the same
structure as :class:`~minikv.prefix.RadixCache`, minus blocks and locks): the
longest match of a new prompt against the trie *is* its best LCP with any
earlier prompt. One walk and one insert per prompt: O(total tokens).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from minikv.errors import InvalidRequestError


class _Node:
    """A trie node; ``edges`` maps an edge's first token to ``[seq, start, end, child]``.

    An edge's tokens are ``seq[start:end]``: a slice of the prompt that made
    it, by reference, so nothing is copied.
    """

    __slots__ = ("edges",)

    def __init__(self) -> None:
        self.edges: dict[int, list] = {}


def _common(a: Sequence[int], a0: int, b: Sequence[int], b0: int, n: int) -> int:
    """How many of the ``n`` tokens from ``a[a0]`` and ``b[b0]`` agree, from the start."""
    if a[a0 : a0 + n] == b[b0 : b0 + n]:  # the usual case, compared in C
        return n
    lo, hi = 0, n - 1  # a[a0:a0+lo] == b[b0:b0+lo] holds, a full n does not
    while lo < hi:  # binary search on slice equality: O(n log n) in C, not O(n) in Python
        mid = (lo + hi + 1) // 2
        if a[a0 : a0 + mid] == b[b0 : b0 + mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class PrefixTrie:
    """Every prompt added so far, as a compressed trie; ``add`` returns the LCP with them."""

    def __init__(self) -> None:
        self.root = _Node()
        self.num_edges = 0

    def add(self, tokens: Sequence[int]) -> int:
        """Insert ``tokens``; returns its longest common prefix with any prompt added before."""
        if not isinstance(tokens, list):  # slices of a list and a tuple never compare equal
            tokens = list(tokens)
        node, pos, n = self.root, 0, len(tokens)
        while pos < n:
            edge = node.edges.get(tokens[pos])
            if edge is None:  # nothing earlier continues this way: hang the rest here
                node.edges[tokens[pos]] = [tokens, pos, n, _Node()]
                self.num_edges += 1
                return pos
            seq, start, end, child = edge
            c = _common(seq, start, tokens, pos, min(end - start, n - pos))
            if c < end - start:  # the prompt leaves (or ends inside) this edge
                if pos + c < n:  # split the edge after c tokens and branch off
                    mid = _Node()
                    mid.edges[seq[start + c]] = [seq, start + c, end, child]
                    mid.edges[tokens[pos + c]] = [tokens, pos + c, n, _Node()]
                    edge[2], edge[3] = start + c, mid
                    self.num_edges += 2
                return pos + c
            node, pos = child, pos + c
        return n


def ideal_hit_tokens(
    trace: Sequence[Sequence[int]],
    block_size: int | None = None,
    salts: Sequence[Hashable] | None = None,
) -> list[int]:
    """Per request, the tokens an infinite cache would hit, in arrival order.

    ``min(LCP with any earlier request of the same salt, len - 1)``, rounded
    down to a multiple of ``block_size`` when it is given. ``salts``: one per
    request (``None`` entries allowed); requests only share with equal salts.

    >>> ideal_hit_tokens([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 9]])
    [0, 3, 2]
    >>> ideal_hit_tokens([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 9]], block_size=2)
    [0, 2, 2]
    """
    if block_size is not None and block_size < 1:
        raise InvalidRequestError(f"block_size must be >= 1 or None, got {block_size}")
    if salts is not None and len(salts) != len(trace):
        raise InvalidRequestError(
            f"salts must give one salt per request: {len(salts)} salts for {len(trace)} requests"
        )
    tries: dict[Hashable, PrefixTrie] = {}
    out = []
    for i, tokens in enumerate(trace):
        salt = None if salts is None else salts[i]
        trie = tries.get(salt)
        if trie is None:
            trie = tries[salt] = PrefixTrie()
        hit = max(0, min(trie.add(tokens), len(tokens) - 1))
        if block_size is not None:
            hit -= hit % block_size
        out.append(hit)
    return out


def ideal_hit_rate(
    trace: Sequence[Sequence[int]],
    block_size: int | None = None,
    salts: Sequence[Hashable] | None = None,
) -> float:
    """Hit tokens of an infinite cache over all prompt tokens (0.0 for an empty trace)."""
    total = sum(map(len, trace))
    return sum(ideal_hit_tokens(trace, block_size, salts)) / total if total else 0.0


__all__ = ["PrefixTrie", "ideal_hit_rate", "ideal_hit_tokens"]

"""The radix tree's node, the result of an insert, and small helpers over nodes and tokens.

Nothing here changes a cache: these are the data the other modules of
:mod:`minikv.prefix.radix` build on.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from minikv.errors import InvalidRequestError

Namespace = tuple[Hashable, tuple[Hashable, ...]]
"""``(salt, extra_keys)``: which tree a request's tokens live in."""


@dataclass(frozen=True)
class InsertResult:
    """What an ``insert`` did, in tokens and blocks.

    ``prefix_len``: tokens already in the tree (SGLang's return value);
    ``new_tokens``: tokens added; ``new_blocks``: blocks that became cached.
    """

    prefix_len: int
    new_tokens: int
    new_blocks: int


class RadixNode:
    """One edge of the tree and the node it leads to.

    ``tokens`` are the token ids of the edge, at positions ``start .. end - 1``
    of every sequence through it. ``block_ids[i]`` is the block holding
    positions of block range ``start // block_size + i``; when the node starts
    mid-block and its first block also backs an ancestor
    (``shares_first_block``), the ancestor owns that block.
    """

    __slots__ = (
        "id", "tokens", "start", "block_ids", "shares_first_block", "parent", "children",
        "lock_ref", "last_access", "hit_count", "alive", "namespace", "ghost_key", "offload_key",
    )  # fmt: skip

    def __init__(
        self,
        node_id: int,
        tokens: tuple[int, ...],
        start: int,
        block_ids: list[int],
        parent: RadixNode | None,
        shares_first_block: bool = False,
    ) -> None:
        self.id = node_id
        self.tokens = tokens
        self.start = start
        self.block_ids = block_ids
        self.shares_first_block = shares_first_block
        self.parent = parent
        self.children: dict[tuple[int, ...], RadixNode] = {}
        self.lock_ref = 0
        self.last_access = 0
        self.hit_count = 0
        self.alive = True
        self.namespace: Namespace | None = None  # set on roots only
        # Salt-free key of the path's full blocks up to ``end // block_size`` (minikv.prefix.ghost),
        # filled in when first needed; None again whenever ``end`` moves (a trim).
        self.ghost_key: int | None = None
        # ``(end // block_size, sha256 chain key of the path's full blocks)`` for the offload tier
        # (minikv.prefix.radix.offload), filled in when first needed; stale once ``end // block_size`` moves.
        self.offload_key: tuple[int, bytes] | None = None

    @property
    def end(self) -> int:
        """Position just past the edge's last token."""
        return self.start + len(self.tokens)

    @property
    def created(self) -> int:
        """Creation order (the node id): what age-aware eviction policies read."""
        return self.id

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def owned_blocks(self) -> list[int]:
        """The blocks freed when this node is evicted."""
        return self.block_ids[1:] if self.shares_first_block else self.block_ids

    @property
    def num_owned(self) -> int:
        return len(self.block_ids) - self.shares_first_block

    def __repr__(self) -> str:
        return (
            f"RadixNode(id={self.id}, span={self.start}..{self.end}, blocks={self.block_ids}, "
            f"lock_ref={self.lock_ref})"
        )


def iter_nodes(roots: Iterable[RadixNode]) -> Iterator[RadixNode]:
    """Every node below ``roots``, parents before children (the roots themselves not included)."""
    for root in roots:
        stack = list(reversed(root.children.values()))
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children.values()))


def holder_above(node: RadixNode, block: int) -> RadixNode | None:
    """The nearest node from ``node`` up whose last block is ``block``, or None."""
    while not node.is_root:
        if node.block_ids[-1] == block:
            return node
        assert node.parent is not None
        node = node.parent
    return None


def common_len(edge: tuple[int, ...], tokens: list[int], pos: int, end: int) -> int:
    """How many leading tokens of ``edge`` equal ``tokens[pos:end]``."""
    n = min(len(edge), end - pos)
    if n > 0 and edge[:n] == tuple(tokens[pos : pos + n]):  # the common case, at C speed
        return n
    i = 0
    while i < n and edge[i] == tokens[pos + i]:
        i += 1
    return i


def make_namespace(salt: Hashable, extra_keys: Sequence[Hashable]) -> Namespace:
    """The tree key of ``(salt, extra_keys)``; :class:`InvalidRequestError` if not hashable."""
    ns = (salt, tuple(extra_keys))
    try:
        hash(ns)
    except TypeError:
        raise InvalidRequestError(
            f"a cache salt and extra keys must be hashable (str, int, bytes, tuples), got "
            f"{salt!r} and {extra_keys!r}"
        ) from None
    return ns


def short_tokens(tokens: Sequence[int], n: int) -> str:
    """The first ``n`` token ids, space-separated, "…" if there are more."""
    return " ".join(map(str, tokens[:n])) + (" …" if len(tokens) > n else "")

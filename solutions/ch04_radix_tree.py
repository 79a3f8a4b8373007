"""Chapter 04: a radix-tree prefix cache, the SGLang way (see chapters/04_radix_tree.ipynb).

Exercises 4.1-4.4: a radix tree over token ids that remembers where each
cached token's K/V lives (one *value* per token, e.g. a KV slot id). Find the
longest cached prefix of a prompt, splitting an edge where the match ends
inside it (4.1); store a finished sequence without storing any prefix twice
(4.2); lock the path a running request uses (4.3); and evict least recently
used unlocked leaves when memory runs short (4.4).

``Node`` and ``RadixTree`` are written for you, and so is ``TreePrefixCache``
at the bottom: it wraps your functions into a prefix cache the engine can
use (``LLM(model, prefix_cache=lambda n, bs: TreePrefixCache(n, bs))``), one
tree key per block of tokens. Check your work with
``minikv grade --chapter 4``, or ``minikv.grade.check("4.1")`` in the notebook.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

from minikv.errors import KVCacheFull
from minikv.prefix import CacheStats, Match, PrefixCacheError, max_cached_blocks


class Node:
    """One node of the radix tree, together with the edge that leads to it (written for you).

    * ``tokens``: the edge's run of token ids (the root's is empty);
    * ``values``: one value per token, where that token's K/V lives (a KV slot id);
    * ``parent``: the node above (``None`` for the root);
    * ``children``: first token of the child's edge -> child. Two children of a
      node never start with the same token (else they would share a prefix);
    * ``lock_ref``: how many running requests use this node's tokens (their
      match went through it or below it). A node with ``lock_ref > 0`` is
      never evicted;
    * ``last_access``: the tree's clock at the last match or insert that used
      this node's tokens (``RadixTree.tick()``); eviction goes by it.
    """

    def __init__(self, tokens: Sequence[int] = (), values: Sequence[int] = (), parent: Node | None = None) -> None:
        self.tokens: list[int] = list(tokens)
        self.values: list[int] = list(values)
        self.parent = parent
        self.children: dict[int, Node] = {}
        self.lock_ref = 0
        self.last_access = 0

    def __repr__(self) -> str:
        shown = " ".join(map(str, self.tokens[:6])) + (" ..." if len(self.tokens) > 6 else "")
        return f"Node([{shown}], {len(self.tokens)} tokens, lock_ref={self.lock_ref}, last_access={self.last_access})"


class RadixTree:
    """The root of the tree and its logical clock (written for you).

    ``tick()`` advances the clock by one and returns the new time: call it once
    per ``match_prefix`` or ``insert`` and stamp that time on the nodes used.
    The methods below only read the tree, or call your functions.
    """

    def __init__(self) -> None:
        self.root = Node()
        self.clock = 0

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    # shortcuts to the exercise functions
    def match(self, tokens: Sequence[int]) -> tuple[list[int], Node]:
        return match_prefix(self, tokens)

    def insert(self, tokens: Sequence[int], values: Sequence[int]) -> int:
        return insert(self, tokens, values)

    def evict(self, num_tokens: int) -> list[int]:
        return evict(self, num_tokens)

    # reading the tree
    def nodes(self) -> Iterator[Node]:
        """Every node but the root, parents before children."""
        stack = list(reversed(self.root.children.values()))
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children.values()))

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes() if not n.children]

    def num_tokens(self) -> int:
        """Tokens stored on all edges: each distinct cached prefix counts once."""
        return sum(len(n.tokens) for n in self.nodes())

    def to_dict(self) -> list[dict[str, Any]]:
        """The root's children as plain data (the shape of ``RadixCache.to_dict()[0]["children"]``)."""

        def as_dict(node: Node) -> dict[str, Any]:
            return {"tokens": list(node.tokens), "values": list(node.values), "lock_ref": node.lock_ref,
                    "last_access": node.last_access, "children": [as_dict(c) for c in node.children.values()]}

        return [as_dict(c) for c in self.root.children.values()]

    def render(self, decode: Callable[[list[int]], str] | None = None, max_tokens: int = 8) -> str:
        """ASCII art, one line per node: the edge's tokens (or ``decode(tokens)``), values, lock, time."""
        lines = ["root"]

        def walk(node: Node, indent: str) -> None:
            kids = list(node.children.values())
            for i, child in enumerate(kids):
                last = i == len(kids) - 1
                text = repr(decode(child.tokens)) if decode else " ".join(map(str, child.tokens[:max_tokens]))
                if not decode and len(child.tokens) > max_tokens:
                    text += " ..."
                vals = " ".join(map(str, child.values[:max_tokens])) + (" ..." if len(child.values) > max_tokens else "")
                lines.append(f"{indent}{'└── ' if last else '├── '}[{text}] values=[{vals}] "
                             f"lock={child.lock_ref} t={child.last_access}")
                walk(child, indent + ("    " if last else "│   "))

        walk(self.root, "")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"RadixTree({sum(1 for _ in self.nodes())} nodes, {self.num_tokens()} tokens, clock={self.clock})"


def split_node(node: Node, k: int) -> Node:
    """Exercise 4.1: match with split.

    Cut ``node``'s edge after its first ``k`` tokens (``0 < k < len(node.tokens)``)
    and return the new node that holds the first part.

    The new node takes ``node``'s place among its parent's children (under the
    same first token), holds ``tokens[:k]`` and ``values[:k]``, and has
    ``node`` as its only child. ``node`` keeps ``tokens[k:]``, ``values[k:]``
    and its own children: it stays the *same object*, so whoever holds it (a
    running request that locked it) still holds the end of its path.
    The new node copies ``lock_ref`` and ``last_access`` from ``node``: every
    request that uses ``node`` uses its first part too.

    >>> tree = RadixTree(); tree.insert([1, 2, 3, 4], [10, 11, 12, 13])
    0
    >>> a = tree.root.children[1]; upper = split_node(a, 2)
    >>> upper.tokens, upper.values, a.tokens, a.parent is upper, tree.root.children[1] is upper
    ([1, 2], [10, 11], [3, 4], True, True)
    """
    ### BEGIN SOLUTION
    upper = Node(node.tokens[:k], node.values[:k], node.parent)
    upper.lock_ref, upper.last_access = node.lock_ref, node.last_access
    assert node.parent is not None
    node.parent.children[upper.tokens[0]] = upper
    node.tokens, node.values = node.tokens[k:], node.values[k:]
    node.parent = upper
    upper.children[node.tokens[0]] = node
    return upper
    ### END SOLUTION


def match_prefix(tree: RadixTree, tokens: Sequence[int]) -> tuple[list[int], Node]:
    """Exercise 4.1: match with split.

    The longest prefix of ``tokens`` stored in ``tree``. Returns
    ``(values, last_node)``: the values of the matched tokens (so
    ``len(values)`` is the matched length) and the node where the match ends
    (``tree.root`` when nothing matches).

    Walk from the root: the next child is the one keyed by the next token;
    count how many tokens of its edge agree with ``tokens``. If the whole
    edge agrees, take its values and go on from that child. If only the first
    ``c`` agree (the prompt differs, or ends, inside the edge), take those
    ``c`` values, ``split_node(child, c)`` so that the match ends exactly at
    a node, and stop there.

    Stamp the access time: ``t = tree.tick()`` once per call, and
    ``last_access = t`` on every node whose tokens were matched (a split's new
    upper node included; the lower part was not used and keeps its time).
    Nothing else changes: no lock is taken, nothing is stored.

    >>> tree = RadixTree(); tree.insert([1, 2, 3, 4], [10, 11, 12, 13])
    0
    >>> values, node = match_prefix(tree, [1, 2, 9])
    >>> values, node.tokens, [c.tokens for c in node.children.values()]
    ([10, 11], [1, 2], [[3, 4]])
    """
    ### BEGIN SOLUTION
    t = tree.tick()
    node, values, pos = tree.root, [], 0
    while pos < len(tokens) and tokens[pos] in node.children:
        child = node.children[tokens[pos]]
        c = 0
        while c < len(child.tokens) and pos + c < len(tokens) and child.tokens[c] == tokens[pos + c]:
            c += 1
        inside = c < len(child.tokens)
        if inside:  # the match ends inside this edge: split it there
            child = split_node(child, c)
        child.last_access = t
        values += child.values
        node, pos = child, pos + c
        if inside:
            break
    return values, node
    ### END SOLUTION


def insert(tree: RadixTree, tokens: Sequence[int], values: Sequence[int]) -> int:
    """Exercise 4.2: insert.

    Store ``tokens``, with ``values[i]`` the value of ``tokens[i]``, so that a
    later ``match_prefix`` finds them. Return how many leading tokens were
    in the tree already (SGLang's ``insert`` returns the same). Those are
    **not** stored again: the tree keeps its own values for them, and the
    caller frees its duplicates.

    Walk from the root as in ``match_prefix``:

    * no child for the next token: hang ``tokens[pos:]`` (and their values)
      below the current node as one new leaf, and stop;
    * the whole edge agrees: go on from that child;
    * the first ``c`` tokens agree and then ``tokens`` goes on differently:
      ``split_node(child, c)`` and go on from the new upper node (the rest
      becomes a new leaf beside the old lower part);
    * ``tokens`` ends inside (or at the end of) an edge: all of it is there
      already. Stop without splitting.

    Stamp ``t = tree.tick()`` (once per call) on every node walked into
    (including one that ``tokens`` ends inside, and a split's upper node)
    and on the new leaf. Do not change any ``lock_ref``.

    >>> tree = RadixTree()
    >>> tree.insert([1, 2, 3, 4], [10, 11, 12, 13]), tree.insert([1, 2, 7], [20, 21, 22])
    (0, 2)
    >>> print(tree.render())
    root
    └── [1 2] values=[10 11] lock=0 t=2
        ├── [3 4] values=[12 13] lock=0 t=1
        └── [7] values=[22] lock=0 t=2
    """
    ### BEGIN SOLUTION
    t = tree.tick()
    node, pos = tree.root, 0
    while pos < len(tokens):
        child = node.children.get(tokens[pos])
        if child is None:  # nothing stored from here on: one new leaf
            leaf = Node(tokens[pos:], values[pos:], node)
            leaf.last_access = t
            node.children[tokens[pos]] = leaf
            return pos
        c = 0
        while c < len(child.tokens) and pos + c < len(tokens) and child.tokens[c] == tokens[pos + c]:
            c += 1
        if c < len(child.tokens):
            if pos + c == len(tokens):  # ends inside this edge: all of it is there
                child.last_access = t
                return len(tokens)
            child = split_node(child, c)  # branches off inside this edge
        child.last_access = t
        node, pos = child, pos + c
    return len(tokens)
    ### END SOLUTION


def lock(node: Node) -> None:
    """Exercise 4.3: lock and unlock along the path.

    A running request uses every token from the root down to ``node`` (the
    node where its match ended). ``lock(node)`` adds 1 to ``lock_ref`` of
    ``node`` and of every ancestor up to the root; ``unlock(node)`` subtracts
    1 from the same nodes. Counts, not flags: two requests on one path lock
    it twice, and it stays locked until both have unlocked. (The root is
    never evicted: counting on it too or not makes no difference.)

    >>> tree = RadixTree(); tree.insert([1, 2, 3], [10, 11, 12]); tree.insert([1, 2, 5], [20, 21, 22])
    0
    2
    >>> _, end = tree.match([1, 2, 3]); lock(end)
    >>> [(n.tokens, n.lock_ref) for n in tree.nodes()]
    [([1, 2], 1), ([3], 1), ([5], 0)]
    """
    ### BEGIN SOLUTION
    while node.parent is not None:
        node.lock_ref += 1
        node = node.parent
    ### END SOLUTION


def unlock(node: Node) -> None:
    """Exercise 4.3: lock and unlock along the path.

    Undo one ``lock(node)``: subtract 1 from ``lock_ref`` of ``node`` and of
    every ancestor up to the root.
    """
    ### BEGIN SOLUTION
    while node.parent is not None:
        node.lock_ref -= 1
        node = node.parent
    ### END SOLUTION


def evict(tree: RadixTree, num_tokens: int) -> list[int]:
    """Exercise 4.4: LRU leaf eviction.

    Forget ``num_tokens`` cached tokens (all that can go, if fewer) and return
    their values, so the caller can reuse those KV slots.

    Only an **unlocked leaf** may go: no running request uses its tokens, and
    no other cached sequence continues past it. Repeat, least recently used
    first (smallest ``last_access``):

    * if the leaf holds no more tokens than are still needed, remove it from
      its parent's ``children`` and free all its values. Its parent may now be
      an unlocked leaf (not the root): it becomes a candidate too;
    * otherwise cut only the tokens still needed off the *end* of its edge
      (``tokens`` and ``values``), free those values, and stop.

    A heap (``heapq``) of ``(last_access, tiebreak, leaf)`` gives the next
    leaf quickly; take the tiebreak from a counter, since nodes do not compare.

    >>> tree = RadixTree(); tree.insert([1, 2, 3], [10, 11, 12]); tree.insert([1, 2, 5], [20, 21, 22])
    0
    2
    >>> evict(tree, 3)   # leaf [3] (oldest), then leaf [5]; [1 2] is a leaf now: its last token goes
    [12, 22, 11]
    >>> print(tree.render())
    root
    └── [1] values=[10] lock=0 t=2
    """
    ### BEGIN SOLUTION
    heap: list[tuple[int, int, Node]] = []
    for count, leaf in enumerate(tree.leaves()):
        if leaf.lock_ref == 0:
            heap.append((leaf.last_access, count, leaf))
    heapq.heapify(heap)
    count = len(heap)
    freed: list[int] = []
    while heap and len(freed) < num_tokens:
        _, _, leaf = heapq.heappop(heap)
        need = num_tokens - len(freed)
        if len(leaf.tokens) > need:  # more than needed: cut off the end of the edge
            freed += leaf.values[-need:]
            del leaf.tokens[-need:], leaf.values[-need:]
            break
        freed += leaf.values
        parent = leaf.parent
        assert parent is not None
        del parent.children[leaf.tokens[0]]
        leaf.parent = None
        if parent.parent is not None and not parent.children and parent.lock_ref == 0:
            count += 1
            heapq.heappush(heap, (parent.last_access, count, parent))
    return freed
    ### END SOLUTION


# ---- written for you: your tree as a prefix cache the engine can use ------------------------------------


class TreePrefixCache:
    """Your radix tree behind minikv's ``PrefixCache`` interface (written for you).

    The engine shares K/V by whole blocks, so here the tree's "tokens" are
    blocks: each block of ``block_size`` token ids becomes one key (a small
    int, given out the first time that block's contents are seen; the first
    block's key includes the cache salt, so salts never share), and each
    key's value is the id of the block that holds its K/V. With that, your
    ``match_prefix``, ``insert``, ``lock``, ``unlock`` and ``evict`` run
    unchanged, and the cache behaves like ``RadixCache(num_blocks,
    block_size)`` (one page = one block).

    Locks follow the engine's references. The engine names only blocks
    (``match`` hands them out, ``release`` takes them back, without saying
    which request), so before anything that reads the locks (eviction, the
    counts) the cache undoes the locks it placed last time and locks, once
    per reference, the node that now holds each referenced cached block.
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks, self.block_size = int(num_blocks), int(block_size)
        self.tree = RadixTree()
        self.free: deque[int] = deque(range(self.num_blocks))
        self.ref = [0] * self.num_blocks  # references held by running requests
        self.path_of: dict[int, tuple[int, ...]] = {}  # cached block -> the keys from the root through it
        self.key_ids: dict[tuple[Hashable, ...], int] = {}
        self.locked: list[Node] = []  # the nodes locked by the last _sync_locks, once per lock
        self.stale = False  # references changed since then
        self.requests = self.query_tokens = self.hit_tokens = self.evictions = 0

    def keys(self, token_ids: Sequence[int], num_blocks: int, salt: str | None) -> list[int]:
        """One tree key per full block: the same contents (and salt, for block 0) give the same key."""
        bs, out = self.block_size, []
        for i in range(num_blocks):
            content = (salt, *token_ids[i * bs:(i + 1) * bs]) if i == 0 else tuple(token_ids[i * bs:(i + 1) * bs])
            out.append(self.key_ids.setdefault(content, len(self.key_ids)))
        return out

    @property
    def num_evictable(self) -> int:
        """Cached blocks of unlocked nodes: all of them can go, leaves first."""
        self._sync_locks()
        return sum(len(n.values) for n in self.tree.nodes() if n.lock_ref == 0)

    @property
    def num_allocatable(self) -> int:
        return len(self.free) + self.num_evictable

    def match(self, token_ids: Sequence[int], salt: str | None = None) -> Match:
        self.requests += 1
        self.query_tokens += len(token_ids)
        usable = max_cached_blocks(len(token_ids), self.block_size)  # the last token is always computed
        if usable == 0:
            return Match((), 0)
        blocks, _ = match_prefix(self.tree, self.keys(token_ids, usable, salt))
        for b in blocks:
            self.ref[b] += 1
        self.stale = True
        self.hit_tokens += len(blocks) * self.block_size
        return Match(tuple(blocks), len(blocks) * self.block_size)

    def allocate(self, n: int) -> list[int]:
        if n > self.num_allocatable:
            raise KVCacheFull(f"{n} blocks are needed but only {self.num_allocatable} are free or evictable")
        if len(self.free) < n:
            self.evict(n - len(self.free))
        out = [self.free.popleft() for _ in range(n)]
        for b in out:
            self.ref[b] = 1
        self.stale = True
        return out

    def insert(self, token_ids: Sequence[int], block_ids: Sequence[int], salt: str | None = None) -> int:
        full = len(token_ids) // self.block_size
        if full == 0:
            return 0
        keys, blocks = self.keys(token_ids, full, salt), list(block_ids[:full])
        already = insert(self.tree, keys, blocks)  # the caller's blocks for those stay uncached
        for i in range(already, full):
            self.path_of[blocks[i]] = tuple(keys[: i + 1])
        self.stale = True
        return full - already

    def release(self, block_ids: Sequence[int]) -> None:
        for b in reversed(list(block_ids)):
            if self.ref[b] <= 0:
                raise ValueError(f"block {b} is not held; release each block of a sequence once")
            self.ref[b] -= 1
            if self.ref[b] == 0 and b not in self.path_of:
                self.free.append(b)
        self.stale = True

    def evict(self, n: int) -> int:
        self._sync_locks()
        gone = evict(self.tree, n)
        for b in gone:
            del self.path_of[b]
            self.free.append(b)
        self.evictions += len(gone)
        return len(gone)

    def stats(self) -> CacheStats:
        evictable = self.num_evictable
        return CacheStats(
            num_blocks=self.num_blocks, block_size=self.block_size,
            num_used=self.num_blocks - len(self.free) - evictable, num_evictable=evictable,
            num_free=len(self.free), num_cached=len(self.path_of), requests=self.requests,
            query_tokens=self.query_tokens, hit_tokens=self.hit_tokens, evictions=self.evictions,
        )

    def reset(self) -> None:
        if any(self.ref):
            raise PrefixCacheError("cannot reset the prefix cache while blocks are in use")
        self.__init__(self.num_blocks, self.block_size)  # type: ignore[misc]

    def _sync_locks(self) -> None:
        """Lock exactly the nodes that hold referenced cached blocks, once per reference."""
        if not self.stale:
            return
        for node in self.locked:  # a node split since keeps its lock in both halves: unlock undoes it all
            unlock(node)
        self.locked = []
        for b, path in self.path_of.items():
            for _ in range(self.ref[b]):
                node = self._find(path)
                lock(node)
                self.locked.append(node)
        self.stale = False

    def _find(self, keys: Sequence[int]) -> Node:
        """The node holding the last of ``keys`` (a read-only walk: no split, no stamp)."""
        node, pos = self.tree.root, 0
        while pos < len(keys):
            node = node.children[keys[pos]]
            pos += len(node.tokens)
        return node

    def __repr__(self) -> str:
        s = self.stats()
        return (f"TreePrefixCache(num_blocks={self.num_blocks}, block_size={self.block_size}, "
                f"used={s.num_used}, evictable={s.num_evictable}, free={s.num_free})")

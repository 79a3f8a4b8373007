"""A radix-tree prefix cache (SGLang's RadixAttention) behind the same API as the hash cache.

SGLang (Zheng et al., arXiv 2312.07104) keeps every cached prefix in one
radix tree: each edge is a run of token ids together with where their K/V
live; a node's children are keyed by the first token (or first *page*) of
their run. Finding the longest cached prefix is one walk from the root;
requests that share a system prompt share its path.

**Pages.** ``page_size`` is the granularity of the tree's keys and matches:

- ``page_size == block_size`` (the default): runs are whole blocks, a match is
  a whole number of blocks. On any request stream without eviction it hits
  exactly what :class:`~minikv.prefix.BlockHashCache` hits.
- ``page_size == 1``: token-granular, as SGLang runs by default. The tree
  finds the true longest common prefix with every earlier request, even one
  that ends in the middle of a block.

**Partly shared blocks** (``page_size < block_size``). The engine can share
only whole blocks, by pointer. So a hit of ``L`` tokens with ``r = L %
block_size > 0`` is served as: the ``L // block_size`` full blocks shared by
pointer, plus a *fresh* block that ``match`` allocates for the caller, with
``Match.copy_from_block`` (the tree's block holding tokens ``L - r .. L - 1``)
and ``Match.copy_tokens = r``. The engine copies those ``r`` slots into the
fresh block before it runs the model (copy-on-write of the last, partial
block), e.g. ``kv[:, :, dst, :r] = kv[:, :, src, :r]`` on the pool tensor, and
computes from token ``L`` on. The copied tokens count as cached: they need no
recompute. Until the copy has surely happened (the caller ``insert``s or
``release``s that fresh block) the source is *pinned*: the node where the
match ended stays locked. With ``partial_copy=False`` a hit is cut down to
whole blocks instead, while the tree still indexes every token
(``longest_prefix``).

In this paged form several nodes on one path can point to the *same* block:
a node that starts mid-block may share its first block with an ancestor (the
same request wrote both). A block belongs to (is freed with) the shallowest
node that points to it.

**Locks.** A node with ``lock_ref > 0`` is in use at or below it: it is never
evicted. SGLang counts one lock per running request on every node of its
path. Here the engine only names *blocks* (``match`` hands them out,
``release`` takes them back), so each reference a running request holds on a
cached block is one lock on the path from the deepest node using that block
up to the root (for a full block that node is on the request's own path),
and each copy pin one lock from the node where its match ended. The counts
differ from SGLang's, but are zero exactly when nothing in the subtree is in
use, which is all eviction reads. A block a request allocated that never
entered the tree goes back to the free list on ``release``; a block in the
tree is freed only when its node is evicted.

**Eviction.** Only unlocked leaves are evictable. They wait in a heap ordered
by an :mod:`~minikv.prefix.policies` policy (LRU by default; LFU, SLRU,
shallow, duel); stale entries are skipped when popped, and the whole heap is
rebuilt when a stateful policy changes its order (its ``generation``). Evicting a leaf frees the blocks it owns,
then its parent may become an evictable leaf. When fewer blocks are needed
than a leaf owns, only the leaf's tail is cut off. Every ``match`` and
``insert`` stamps the access time on its whole path, not only the leaf.
Evicted full blocks leave their salt-free key in a bounded ghost list
(:mod:`minikv.prefix.ghost`), which ``explain_miss`` reads; it is a memory
of the past only, no invariant below depends on it.

**Salts.** One tree per ``(salt, extra_keys)``: different salts never share.

An engine uses it exactly like :class:`~minikv.prefix.BlockHashCache`
(``match`` -> ``allocate`` the rest -> run -> ``insert`` -> ``release``), plus
the copy when ``Match.copy_from_block`` is set.

**Invariants** (what ``RadixCache.check_invariants`` recounts from scratch):

1. *Shape.* Every node's edge is a non-empty whole number of pages, starts
   where its parent's ends (``start == parent.end``) and hangs under its
   parent at the key of its first page.
2. *Blocks.* A node has one block per block range its positions touch;
   ``shares_first_block`` is set exactly when it starts mid-block and an
   ancestor's last block is its first; each cached block is owned by one node
   (the shallowest using it) and maps to the deepest node using it.
3. *Locks.* A node's ``lock_ref`` is the sum over its subtree of the
   references requests hold on blocks whose deepest node is there, plus the
   copy pins that end there.
4. *Evictable.* The evictable count is the number of blocks owned by nodes
   with ``lock_ref == 0``.
5. *Free.* The ledger's free list holds exactly the blocks that no request
   references and no tree caches (each once).
6. *Heap.* Every unlocked leaf has an entry in the eviction heap (stale
   entries may wait there too; they are skipped when popped).
7. *Pins.* Each copy pin's node is alive and holds the source block, and the
   fresh block it copies into is held by the request.

**Where each job lives.** :mod:`.node` (the node, small helpers),
:mod:`.locks` (the shared state; lock propagation, copy pins, the eviction
heap, trimming and removing leaves: invariants 3, 4, 6 and 7),
:mod:`.tree` (walk, split, new leaves, longest prefix: invariants 1 and 2),
:mod:`.queries` (counts, ``stats``, ``peek``, ``explain_miss``: read-only),
:mod:`.inspection` (``check_invariants``, ``to_dict``, ``render``,
``to_dot``), :mod:`.offload` (the host tier: keys, spill, copy-back) and
:mod:`.cache` (the operations of the :class:`~minikv.prefix.PrefixCache` API,
on the block ledger of :mod:`minikv.prefix.ledger`: invariant 5).
"""

from minikv.prefix.radix.cache import RadixCache
from minikv.prefix.radix.node import InsertResult, Namespace, RadixNode

__all__ = ["InsertResult", "Namespace", "RadixCache", "RadixNode"]

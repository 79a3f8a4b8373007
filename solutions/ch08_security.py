"""Chapter 08: the prefix cache's side channel, its fix, and a second cache level (see chapters/08_security.ipynb).

Exercises 8.1-8.3. A shared prefix cache is shared state: a request that hits
comes back sooner, so whoever can time requests learns what others sent.
8.1 scores such an attacker honestly (a threshold learnt on some trials,
judged on the others, and the ROC AUC of the timings). 8.2 is the fix with a
middle way: block hashes salted per tenant from the first block that is not
public, so a published system prompt is still shared. 8.3 is the CPU offload
tier's store and copy-back, which keeps evicted blocks in host memory; it
plugs into the engine as ``LLM(..., cpu_offload_blocks=N, cpu_offload_cls=HostTier)``,
in place of minikv's tier (the grader runs it so). Check your work with
``minikv grade --chapter 8``, or ``minikv.grade.check("8.1")`` in the notebook.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

from minikv.prefix.hashing import ROOT_HASH, encode_block
from minikv.prefix.offload import CheckedOut, OffloadTier


class AttackScore(NamedTuple):
    """How well the timing attack did: the TTFT cut it learnt and, on the held-out trials, its accuracy and AUC."""

    threshold: float
    accuracy: float
    auc: float


def score_attack(hits: Sequence[tuple[int, float]], misses: Sequence[tuple[int, float]],
                 train_trials: int) -> AttackScore:
    """Exercise 8.1: score the timing attack on held-out trials.

    ``hits`` and ``misses`` are ``(trial, ttft)`` pairs: the TTFT (seconds) of
    each probe of the prefix the victim sent (a cache hit) and of each decoy (a
    miss), with the trial it belongs to. Trials ``< train_trials`` are the
    attacker's **training** trials, the others the **test** trials (each part
    holds at least one hit and one miss). Return ``AttackScore``:

    * ``threshold``: the attacker's rule is "a probe faster than the threshold
      is a hit" (``ttft < threshold``). Try a cut halfway between every two
      neighbouring distinct training TTFTs, and ``min - 1.0`` and ``max + 1.0``;
      keep the one with the best *balanced accuracy* on the training trials
      (the mean of the fraction of hits called hits and of misses called
      misses), the smallest such cut on ties;
    * ``accuracy``: that cut's balanced accuracy on the **test** trials (scored
      on its own training trials it would flatter the attacker);
    * ``auc``: the ROC AUC on the **test** trials: the probability that a test
      hit is *faster* than a test miss, over every (hit, miss) pair, a tie
      counting one half (timers tick: equal TTFTs happen).

    >>> score_attack([(0, 0.1), (1, 0.2)], [(0, 0.9), (1, 0.2)], train_trials=1)
    AttackScore(threshold=0.5, accuracy=0.5, auc=0.5)
    """
    ### BEGIN SOLUTION
    train_hits = [t for trial, t in hits if trial < train_trials]
    train_misses = [t for trial, t in misses if trial < train_trials]
    test_hits = [t for trial, t in hits if trial >= train_trials]
    test_misses = [t for trial, t in misses if trial >= train_trials]

    def balanced(cut: float, hit_ttfts: list[float], miss_ttfts: list[float]) -> float:
        called_hit = sum(t < cut for t in hit_ttfts) / len(hit_ttfts)
        called_miss = sum(t >= cut for t in miss_ttfts) / len(miss_ttfts)
        return (called_hit + called_miss) / 2

    values = sorted(set(train_hits + train_misses))
    cuts = [values[0] - 1.0] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1.0]
    best = max(cuts, key=lambda c: (balanced(c, train_hits, train_misses), -c))
    wins = 0.0
    for h in test_hits:
        for m in test_misses:
            wins += 1.0 if h < m else 0.5 if h == m else 0.0
    auc = wins / (len(test_hits) * len(test_misses))
    return AttackScore(best, balanced(best, test_hits, test_misses), auc)
    ### END SOLUTION


def tenant_block_hashes(token_ids: Sequence[int], block_size: int, salt: str | None,
                        public_blocks: int = 0) -> list[bytes]:
    """Exercise 8.2: salted block hashes, public blocks shared.

    Chapter 03's chain, with the tenant's ``salt`` entering at the first block
    that is **not public**: one 32-byte hash per *full* block,

        hash_i = sha256(encode_block(parent_i, tokens of block i, extra_i)).digest()

    with ``parent_0 = ROOT_HASH`` and ``parent_i = hash_{i-1}``, where
    ``extra_i = (("cache_salt", salt),)`` for ``i == public_blocks`` when a
    ``salt`` is given, and ``()`` for every other block. The first
    ``public_blocks`` blocks (a published system prompt) get the same hashes
    for every tenant, so they are shared; from block ``public_blocks`` on the
    chain carries the salt, so no other tenant can hit them. With
    ``public_blocks=0`` this is vLLM's ``cache_salt`` (and minikv's): the salt
    in the first block's hash. ``public_blocks`` past the last full block
    means nothing is salted.

    >>> a = tenant_block_hashes(list(range(48)), 16, "alice", public_blocks=1)
    >>> b = tenant_block_hashes(list(range(48)), 16, "bob", public_blocks=1)
    >>> a[0] == b[0], a[1] == b[1], a[2] == b[2]
    (True, False, False)
    """
    ### BEGIN SOLUTION
    hashes: list[bytes] = []
    parent = ROOT_HASH
    for i in range(len(token_ids) // block_size):
        block = list(token_ids[i * block_size : (i + 1) * block_size])
        extra = (("cache_salt", salt),) if i == public_blocks and salt is not None else ()
        parent = hashlib.sha256(encode_block(parent, block, extra)).digest()
        hashes.append(parent)
    return hashes
    ### END SOLUTION


class HostTier(OffloadTier):
    """Exercise 8.3: a CPU tier that stores evicted blocks and copies them back.

    The second cache level: ``num_blocks`` slots of host memory
    (``self.host``, one slot per KV block) holding blocks the prefix cache
    evicted from the KV pool ``self.pool``, looked up by the cache's block key.
    :class:`~minikv.prefix.offload.OffloadTier` (the base class) gives the
    rest of the interface (``get``, ``checkin``, ``discard``, ``reset``,
    ``stats``); you set up the state and write its three moves. The state:

    * ``self._index``: an ``OrderedDict`` ``key -> (slot, meta)``, least
      recently stored first (the next to drop);
    * ``self._free``: the free slots (a list; take with ``pop()``);
    * ``self._out``: how many slots are checked out (reserved for a copy back);
    * counters ``self._stored``, ``self._loaded``, ``self._dropped`` (blocks).

    The copies go through the pool: ``self.pool.save_blocks(block_ids,
    self.host, slots)`` copies pool blocks into host slots,
    ``self.pool.load_blocks(self.host, slots, block_ids)`` copies back.

    The engine builds it in place of minikv's tier with
    ``LLM(..., cpu_offload_blocks=N, cpu_offload_cls=HostTier)``.
    """

    def __init__(self, pool: Any, num_blocks: int) -> None:
        """Set up an empty tier of ``num_blocks`` host slots over ``pool`` (a :class:`~minikv.kv.KVPool`).

        ``self.pool``, ``self.num_blocks``, ``self.block_size`` (the pool's);
        ``self.host = pool.host_buffer(num_blocks)`` (zeroed host memory, pinned
        on CUDA, one slot per block: ``[num_blocks, 2, layers, block_size,
        kv_heads, head_dim]``); ``_index`` an empty ``OrderedDict``, ``_free``
        every slot, ``_out`` and the three counters 0.
        """
        ### BEGIN SOLUTION
        self.pool = pool
        self.num_blocks = num_blocks
        self.block_size = pool.block_size
        self.host = pool.host_buffer(num_blocks)
        self._index = OrderedDict()
        self._free = list(range(num_blocks - 1, -1, -1))
        self._out = 0
        self._stored = self._loaded = self._dropped = 0
        ### END SOLUTION

    def store(self, items: Sequence[tuple[Hashable, int, Any]]) -> None:
        """Copy evicted pool blocks out: each ``(key, block_id, meta)`` becomes the newest entry.

        The keys of one call are distinct (a cache evicts a block once).

        1. A key already in the tier is replaced: drop its entry first and give
           its slot back to ``_free``.
        2. Only ``room = num_blocks - _out`` blocks can be held; when more
           items come, keep only the **last** ``room`` of them (the first would
           be dropped at once) and count the others in ``_dropped``.
        3. For each kept item, in order: if no slot is free, **evict** the
           least recent entry (the first of ``_index``), free its slot, count it
           in ``_dropped``; then take a free slot and index the key there (at
           the end: newest).
        4. Copy the kept blocks into their slots with one ``save_blocks`` call,
           and add them to ``_stored``.
        """
        ### BEGIN SOLUTION
        for key, _, _ in items:
            old = self._index.pop(key, None)
            if old is not None:
                self._free.append(old[0])
        room = self.num_blocks - self._out
        keep = list(items[len(items) - room :]) if len(items) > room else list(items)
        self._dropped += len(items) - len(keep)
        slots = []
        for key, _, meta in keep:
            if not self._free:
                _, (slot, _) = self._index.popitem(last=False)
                self._free.append(slot)
                self._dropped += 1
            slot = self._free.pop()
            self._index[key] = (slot, meta)
            slots.append(slot)
        self.pool.save_blocks([b for _, b, _ in keep], self.host, slots)
        self._stored += len(keep)
        ### END SOLUTION

    def checkout(self, keys: Sequence[Hashable]) -> CheckedOut:
        """Take ``keys`` (all in the tier) out of the index for a copy back; their slots stay reserved.

        Return ``CheckedOut(list(keys), slots, metas)`` in the order of
        ``keys`` and add ``len(keys)`` to ``_out``. A block lives in one level
        at a time: once checked out it is no longer in the tier's index.
        """
        ### BEGIN SOLUTION
        slots, metas = [], []
        for key in keys:
            slot, meta = self._index.pop(key)
            slots.append(slot)
            metas.append(meta)
        self._out += len(keys)
        return CheckedOut(list(keys), slots, metas)
        ### END SOLUTION

    def load(self, out: CheckedOut, block_ids: Sequence[int]) -> None:
        """Copy checked-out blocks back into the pool blocks ``block_ids`` (one each, in order).

        Copy with ``load_blocks``, add them to ``_loaded``, then release the
        reservation: ``_out`` down by their number, their slots back to
        ``_free``, and empty ``out.keys``, ``out.slots`` and ``out.metas``.
        """
        ### BEGIN SOLUTION
        self.pool.load_blocks(self.host, out.slots, list(block_ids))
        self._loaded += len(out.slots)
        self._out -= len(out.slots)
        self._free.extend(out.slots)
        out.keys, out.slots, out.metas = [], [], []
        ### END SOLUTION

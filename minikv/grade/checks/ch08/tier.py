"""Exercise 8.3, the CPU tier's store and copy-back: the learner's ``HostTier`` against minikv's
:class:`~minikv.prefix.offload.OffloadTier`, step by step over small pools (the keys it holds in LRU order,
its counters, and the K/V each copy back writes), then swapped in for the engine's tier.

The engine builds its tier itself over its own pool (``LLM(..., cpu_offload_blocks=N)`` makes an
``OffloadTier``), and ``cpu_offload_cls=`` names the class it builds instead: the final check runs the
engine with ``cpu_offload_cls=HostTier`` against the same engine with minikv's tier; the caches call only
the tier's methods, so nothing else changes.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from hypothesis import strategies as st

from minikv.grade.checks.ch08.attack import MODULE
from minikv.grade.compare import CheckFailed, forall, one_line, short
from minikv.grade.engine import Plug, Workload, engine_check
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.grade.trace import Trace
from minikv.kv import KVPool
from minikv.prefix.offload import OffloadTier

ex83 = register(Exercise(
    "8.3", "a CPU tier that stores evicted blocks and copies them back", MODULE, ("HostTier",),
    hint="store: replace old copies of the keys, keep only the last num_blocks - _out items, evict "
         "self._index.popitem(last=False) when no slot is free, then one save_blocks; checkout: pop each key's "
         "(slot, meta), _out += n; load: load_blocks(self.host, out.slots, block_ids), then _loaded, _out and "
         "_free, and empty out.keys/slots/metas",
))

NUM_BLOCKS, BLOCK_SIZE = 8, 2


def _pool() -> KVPool:
    return KVPool(1, 1, 2, block_size=BLOCK_SIZE, num_blocks=NUM_BLOCKS)


class TierOps(Trace):
    """The learner's tier and minikv's, each over its own pool holding the same K/V, run in lockstep."""

    def __init__(self, cls: type, capacity: int, desc: str) -> None:
        super().__init__(desc)
        self.pools = (_pool(), _pool())
        self.mine = self.call(cls, self.pools[0], capacity, what="HostTier(pool, num_blocks)")
        self.ref = OffloadTier(self.pools[1], capacity)
        self.truth: dict[Any, torch.Tensor] = {}  # key -> the K/V stored under it
        self.values = 0.0

    def fill(self, block: int) -> torch.Tensor:
        """Write fresh K/V into ``block`` of both pools (what the model would have computed there)."""
        self.values += 1.0
        data = torch.full_like(self.pools[0].kv[:, :, block], self.values)
        for pool in self.pools:
            pool.kv[:, :, block] = data
        return data

    def compare(self) -> None:
        mine, ref = self.mine, self.ref
        try:
            mine.check_invariants()
        except AssertionError as exc:
            self.fail(f"the tier's slots do not add up: {exc} (a slot must be free, indexed or checked out, once)")
        if mine.keys() != ref.keys():
            have, want = mine.keys(), ref.keys()
            why = ""
            if len(have) == mine.num_blocks and set(self.before) <= set(have) and set(self.before) - set(want):
                why = ("; it never evicts: when no slot is free, drop the least recently stored entry (the first of "
                       "_index) to make room for the new block")
            self.fail(one_line(f"the tier holds keys {short(have)} (least recent first), expected {short(want)}{why}"))
        got, want = mine.stats(), ref.stats()
        if got != want:
            self.fail(one_line(f"the tier's stats are {got}, expected {want}"))

    def store(self, items: list[tuple[str, int]]) -> None:
        self.before = self.mine.keys()
        for key, block in items:
            self.truth[key] = self.fill(block)
        rows = [(k, b, f"meta-{k}") for k, b in items]
        self.step(f"store({[(k, b) for k, b in items]})")
        self.method(self.mine, "store", list(rows))
        self.ref.store(list(rows))
        self.compare()

    def copy_back(self, keys: list[str], blocks: list[int], put_back: bool = False) -> None:
        self.before = self.mine.keys()
        self.step(f"checkout({keys})" + ("; checkin" if put_back else f"; load into blocks {blocks}"))
        out = self.method(self.mine, "checkout", list(keys))
        ref_out = self.ref.checkout(list(keys))
        if list(getattr(out, "keys", ())) != keys or list(getattr(out, "metas", ())) != ref_out.metas:
            self.fail(one_line(f"checkout returned keys {getattr(out, 'keys', None)} and metas "
                               f"{getattr(out, 'metas', None)}, expected {keys} and {ref_out.metas}"))
        if any(k in self.mine for k in keys):
            self.fail("a checked-out key is still in the tier's index: a block lives in one level at a time")
        if self.mine.num_checked_out != len(keys):
            self.fail(f"{self.mine.num_checked_out} slots are checked out, expected {len(keys)} (add to _out)")
        if put_back:
            self.mine.checkin(out)
            self.ref.checkin(ref_out)
            self.compare()
            return
        for pool in self.pools:
            pool.kv[:, :, blocks] = -1.0  # the fresh blocks hold somebody's old K/V
        self.method(self.mine, "load", out, list(blocks))
        self.ref.load(ref_out, list(blocks))
        for key, block in zip(keys, blocks):
            held = self.pools[0].kv[:, :, block]
            if not torch.equal(held, self.truth[key]):
                stale = " (still what the block held before: it was never copied back)" if bool((held == -1).all()) else ""
                self.fail(f"after load, pool block {block} does not hold the K/V stored under {key!r}{stale}; "
                          "without copying them back the hit serves wrong K/V: load_blocks(self.host, slots, block_ids)")
        if getattr(out, "slots", None):
            self.fail("load left the CheckedOut holding its slots; empty out.keys, out.slots and out.metas")
        self.compare()


def _tier_cls(learner: Learner) -> type:
    cls = learner.get("HostTier")
    if not isinstance(cls, type) or not issubclass(cls, OffloadTier):
        raise CheckFailed("HostTier must stay a subclass of minikv.prefix.offload.OffloadTier (keep the stub's class line)")
    return cls


@ex83.check("store three blocks, copy two back")
def _basic(learner: Learner) -> str:
    ops = TierOps(_tier_cls(learner), 4, "HostTier(pool of 8 blocks, num_blocks=4)")
    ops.store([("a", 0), ("b", 1), ("c", 2)])
    ops.copy_back(["a", "b"], [5, 6])
    return "the right keys left, the K/V copied back into the fresh blocks, the slots freed"


@ex83.check("a full tier evicts its least recently stored block")
def _evicts(learner: Learner) -> str:
    ops = TierOps(_tier_cls(learner), 3, "HostTier(pool of 8 blocks, num_blocks=3)")
    ops.store([("a", 0), ("b", 1)])
    ops.store([("c", 2), ("d", 3)])
    ops.store([("b", 4)])  # stored again: newest, not a second copy
    ops.store([("e", 5), ("f", 6), ("g", 7), ("h", 0)])  # more than the tier holds: only the last 3 kept
    ops.copy_back(["g"], [1])
    return "LRU drops, a re-stored key replaced, an oversized batch cut to its last blocks"


@ex83.check("checked-out slots stay reserved; checkin puts them back")
def _reserved(learner: Learner) -> None:
    ops = TierOps(_tier_cls(learner), 3, "HostTier(pool of 8 blocks, num_blocks=3)")
    ops.store([("a", 0), ("b", 1), ("c", 2)])
    ops.copy_back(["b", "c"], [], put_back=True)
    ops.copy_back(["a"], [4])
    ops.store([("d", 3), ("e", 5)])


@ex83.check("random stores and copy backs, vs minikv's OffloadTier")
def _random(learner: Learner) -> None:
    cls = _tier_cls(learner)

    @forall(st.integers(1, 5), st.integers(0, 2**31 - 1), max_examples=40)
    def prop(capacity: int, seed: int) -> None:
        rng = random.Random(seed)
        ops = TierOps(cls, capacity, f"HostTier(pool of 8 blocks, num_blocks={capacity}), seed {seed}")
        for _ in range(12):
            held = ops.ref.keys()
            if held and rng.random() < 0.4:
                k = rng.randrange(1, len(held) + 1)
                keys = rng.sample(held, k)
                ops.copy_back(keys, rng.sample(range(NUM_BLOCKS), k), put_back=rng.random() < 0.2)
            else:
                n = rng.randrange(1, 4)
                keys = rng.sample("abcdefghij", n)  # distinct in one call, as a cache's evictions are
                ops.store(list(zip(keys, rng.sample(range(NUM_BLOCKS), n))))

    prop()


def _chats(turns: int = 3, conversations: int = 4, seed: int = 0) -> tuple[tuple[Any, ...], ...]:
    """Round-robin chats, each turn the conversation so far plus a new message (the replies left out)."""
    rng = random.Random(seed)
    history = [[rng.randrange(3, 250) for _ in range(10)] for _ in range(conversations)]
    rounds = []
    for _ in range(turns):
        for h in history:
            h += [rng.randrange(3, 250) for _ in range(rng.randrange(6, 10))]
        rounds.extend((tuple(h),) for h in history)
    return tuple(rounds)


WORKLOAD = Workload(
    "ch08-tier", _chats(), max_tokens=4, cached=True,
    options={"prefix_cache": "hash", "block_size": 4, "num_blocks": 12, "cpu_offload_blocks": 48},
    about="the tier copied back other K/V than the block held when it was evicted",
)


@engine_check(ex83, "serves LLM('tiny-llama', cpu_offload_blocks=48, cpu_offload_cls=HostTier) like minikv's tier",
              WORKLOAD, reference={}, ref_name="OffloadTier")
def _engine(learner: Learner) -> Plug:
    return Plug({"cpu_offload_cls": _tier_cls(learner)}, "your HostTier (cpu_offload_cls=HostTier)")

"""``LLM(..., cpu_offload_cls=...)``: the engine builds the caller's tier in place of minikv's ``OffloadTier``.

Chapter 08's exercise 8.3 plugs the learner's ``HostTier`` in this way. The
engine builds the class over its own KV pool at the size ``cpu_offload_blocks``
/ ``cpu_offload_gb`` give and hands it to the hash or radix cache, which only
calls the tier's methods: the greedy tokens, the hits and the tier's counters
must be those of the built-in tier.
"""

from __future__ import annotations

from typing import Any

import pytest

from minikv import LLM
from minikv.errors import InvalidRequestError
from minikv.prefix import OffloadTier
from pool_checks import assert_nothing_allocated
from test_engine_offload import CACHES, POOL, chat_rounds


class CountingTier(OffloadTier):
    """minikv's tier, counting the copies the caches ask of it (so a test sees it was the one used)."""

    def __init__(self, pool: Any, num_blocks: int) -> None:
        super().__init__(pool, num_blocks)
        self.calls = {"store": 0, "load": 0}

    def store(self, items):  # type: ignore[no-untyped-def]
        self.calls["store"] += 1
        super().store(items)

    def load(self, out, block_ids):  # type: ignore[no-untyped-def]
        self.calls["load"] += 1
        super().load(out, block_ids)


class DelegatingTier:
    """No ``OffloadTier`` subclass: every method the caches call, forwarded to one."""

    def __init__(self, pool: Any, num_blocks: int) -> None:
        self.inner = OffloadTier(pool, num_blocks)
        self.block_size = self.inner.block_size
        self.num_blocks = num_blocks
        for name in ("get", "store", "checkout", "load", "checkin", "discard", "reset", "stats"):
            setattr(self, name, getattr(self.inner, name))

    def __contains__(self, key: object) -> bool:
        return key in self.inner

    def __len__(self) -> int:
        return len(self.inner)


def _run(kind: str, opts: dict, **tier: Any) -> tuple[list[list[int]], Any, LLM]:
    llm = LLM("tiny-llama", device="cpu", prefix_cache=kind, prefix_cache_options=opts, **POOL, **tier)
    return chat_rounds(llm, together=True), llm.cache_stats(), llm


@pytest.mark.parametrize("kind,opts", CACHES)
def test_the_engine_builds_the_given_tier_and_serves_like_minikvs(kind: str, opts: dict) -> None:
    want, want_stats, ref = _run(kind, opts, cpu_offload_blocks=64)
    assert want_stats.offload_hit_tokens > 0, "the workload must reach the tier for the comparison to mean anything"
    got, stats, llm = _run(kind, opts, cpu_offload_blocks=64, cpu_offload_cls=CountingTier)
    tier = llm.offload_tier
    assert type(tier) is CountingTier and llm.cache.offload is tier
    assert tier.num_blocks == 64 and tier.pool is llm.kv_pool
    assert tier.calls["store"] > 0 and tier.calls["load"] > 0
    assert got == want
    assert stats == want_stats
    assert tier.stats() == ref.offload_tier.stats()
    assert_nothing_allocated(llm, "after the chats")
    llm.reset_prefix_cache()
    assert len(tier) == 0 and tier.stats().stored == 0


@pytest.mark.parametrize("kind", ["hash", "radix"])
def test_a_factory_or_a_duck_typed_tier_is_taken_too(kind: str) -> None:
    want, want_stats, ref = _run(kind, {}, cpu_offload_gb=0.0001)
    sizes = []

    def factory(pool: Any, num_blocks: int) -> DelegatingTier:
        sizes.append(num_blocks)
        return DelegatingTier(pool, num_blocks)

    got, stats, llm = _run(kind, {}, cpu_offload_gb=0.0001, cpu_offload_cls=factory)
    assert sizes == [ref.offload_tier.num_blocks]  # cpu_offload_gb sized it in this pool's blocks
    assert isinstance(llm.offload_tier, DelegatingTier)
    assert got == want and stats == want_stats and stats.offload_hit_tokens > 0


class NoLoad:
    def __init__(self, pool: Any, num_blocks: int) -> None:
        pass

    get = store = checkout = checkin = discard = reset = stats = lambda self, *a: None


@pytest.mark.parametrize("kw,match", [
    (dict(cpu_offload_cls=CountingTier), "neither is given; add one"),
    (dict(cpu_offload_blocks=4, cpu_offload_cls=3), "must be a tier class or a factory"),
    (dict(cpu_offload_blocks=4, cpu_offload_cls="OffloadTier"), "must be a tier class or a factory"),
    (dict(cpu_offload_blocks=4, cpu_offload_cls=NoLoad), r"cpu_offload_cls=NoLoad lacks 'load', '__contains__'"),
    (dict(cpu_offload_blocks=4, cpu_offload_cls=dict), "lacks 'store'"),
    (dict(cpu_offload_blocks=4, cpu_offload_cls=lambda pool: None), r"cannot be called as cpu_offload_cls\(kv_pool"),
    (dict(cpu_offload_blocks=4, cpu_offload_cls=lambda pool, n: object()), "built .*object.*, which lacks 'get'"),
    (dict(cpu_offload_blocks=4, cpu_offload_cls=CountingTier, prefix_cache="none"), "prefix_cache='hash' or 'radix'"),
    (dict(cpu_offload_blocks=4, cpu_offload_cls=CountingTier, prefix_cache=lambda n, b: None),
     "prefix_cache='hash' or 'radix'"),
])
def test_bad_tier_classes_say_what_to_give(kw: dict, match: str) -> None:
    kw = {"prefix_cache": "hash", **kw}
    with pytest.raises(InvalidRequestError, match=match):
        LLM("tiny-llama", device="cpu", **POOL, **kw)


def test_a_built_tier_is_refused_with_what_to_pass_instead() -> None:
    llm = LLM("tiny-llama", device="cpu", prefix_cache="hash", cpu_offload_blocks=4, **POOL)
    with pytest.raises(InvalidRequestError, match="a tier already built: the engine builds it over its own KV pool"):
        LLM("tiny-llama", device="cpu", prefix_cache="hash", cpu_offload_blocks=4,
            cpu_offload_cls=llm.offload_tier, **POOL)

"""What isolation costs: the hit rate a multi-tenant stream loses to salts, and what sharing public prefixes wins back.

The stream (:func:`tenant_trace`): ``tenants`` tenants take turns; every
request is one public system prompt (the same for all), then the tenant's
own private document (the same for all of that tenant's requests), then a
fresh question. Replayed through a cache without a model
(:func:`minikv.workloads.replay`), in three ways:

- ``shared``: no salt; everything common is shared (the most hits, and the leak);
- ``salted``: a salt per tenant; tenants share nothing, not even the system prompt;
- ``public``: a salt per tenant inside
  :class:`~minikv.security.public_prefix.PublicPrefixCache` with the system
  prompt published: the system prompt is shared, private documents are not.

The pool is big enough that nothing is evicted, so the differences are
sharing alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from minikv.prefix import make_prefix_cache
from minikv.security.attack import random_tokens
from minikv.security.public_prefix import PublicPrefixCache
from minikv.workloads import blocks_to_fit, replay

MODES = ("shared", "salted", "public")


@dataclass(frozen=True)
class TenantTrace:
    """The requests (token ids), each one's tenant, and the public system prompt."""

    prompts: list[list[int]]
    tenants: list[str]
    system: list[int]


def tenant_trace(tenants: int = 8, requests_per_tenant: int = 8, system_len: int = 512, private_len: int = 256,
                 question_len: int = 32, vocab: int = 49152, seed: int = 0) -> TenantTrace:
    """Tenants in turn; each request = system prompt + the tenant's document + a fresh question."""
    rng = random.Random(seed)
    system = random_tokens(rng, system_len, vocab)
    docs = {f"tenant-{t}": random_tokens(rng, private_len, vocab) for t in range(tenants)}
    prompts, who = [], []
    for _ in range(requests_per_tenant):
        for name, doc in docs.items():
            prompts.append(system + doc + random_tokens(rng, question_len, vocab))
            who.append(name)
    return TenantTrace(prompts, who, system)


def hit_rates(trace: TenantTrace, kind: str = "hash", block_size: int = 16, **options: object) -> dict[str, float]:
    """The hit rate (hit tokens / prompt tokens) of each of :data:`MODES` on ``trace``."""
    total = sum(map(len, trace.prompts))
    n = blocks_to_fit(trace.prompts, block_size)
    out = {}
    for mode in MODES:
        cache = make_prefix_cache(kind, n, block_size, **options)
        salts = None if mode == "shared" else trace.tenants
        if mode == "public":
            cache = PublicPrefixCache(cache, [trace.system])
        out[mode] = sum(replay(cache, trace.prompts, salts)) / total
    return out


__all__ = ["MODES", "TenantTrace", "hit_rates", "tenant_trace"]

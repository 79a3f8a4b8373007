"""Drive a prefix cache through a trace the way the engine does, without a model.

Per request, one at a time (the engine's road, minus the forward pass):
``match`` -> ``allocate`` the blocks still missing -> ``insert`` the prompt
(full blocks; at ``page_size < block_size`` the radix cache also keeps the
partial last block) -> ``release`` the block table. Only bookkeeping runs, so
this measures what the cache itself costs and what it hits.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, MutableMapping, Sequence

from minikv.errors import InvalidRequestError, KVCacheFull
from minikv.prefix.base import PrefixCache

PHASES = ("match", "allocate", "insert", "release")
"""The steps of one request, as keys of ``replay``'s ``timings``."""


def blocks_to_fit(trace: Sequence[Sequence[int]], block_size: int) -> int:
    """A pool size at which replaying ``trace`` never evicts: all blocks it allocates, plus one.

    (The extra block covers a radix cache's copy source, held while its
    copy-on-write block is in flight.)
    """
    return sum(-(-len(t) // block_size) for t in trace) + 1


def replay(
    cache: PrefixCache,
    trace: Sequence[Sequence[int]],
    salts: Sequence[Hashable] | None = None,
    *,
    timings: MutableMapping[str, float] | None = None,
) -> list[int]:
    """Run every request of ``trace`` through ``cache``; returns each request's hit tokens.

    ``timings``, if given, gets the seconds spent in each of :data:`PHASES`
    added to it. A request that needs more blocks than the cache can free
    raises :class:`~minikv.errors.KVCacheFull` after giving its matched
    blocks back.
    """
    if salts is not None and len(salts) != len(trace):
        raise InvalidRequestError(
            f"salts must give one salt per request: {len(salts)} salts for {len(trace)} requests"
        )
    bs = cache.block_size
    now = time.perf_counter
    t_match = t_alloc = t_insert = t_release = 0.0
    hits: list[int] = []
    for i, tokens in enumerate(trace):
        salt = None if salts is None else salts[i]
        t0 = now()
        m = cache.match(tokens, salt)
        t1 = now()
        try:
            new = cache.allocate(-(-len(tokens) // bs) - len(m.block_ids))
        except KVCacheFull as e:
            cache.release(m.block_ids)
            raise KVCacheFull(
                f"request {i} ({len(tokens)} tokens) does not fit a pool of {cache.num_blocks} "
                f"blocks of {bs} tokens: {e}"
            ) from None
        table = [*m.block_ids, *new]
        t2 = now()
        cache.insert(tokens, table, salt)
        t3 = now()
        cache.release(table)
        t4 = now()
        t_match += t1 - t0
        t_alloc += t2 - t1
        t_insert += t3 - t2
        t_release += t4 - t3
        hits.append(m.num_cached_tokens)
    if timings is not None:
        for phase, t in zip(PHASES, (t_match, t_alloc, t_insert, t_release)):
            timings[phase] = timings.get(phase, 0.0) + t
    return hits


__all__ = ["PHASES", "blocks_to_fit", "replay"]

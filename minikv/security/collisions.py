"""What a short block hash costs: wrong hits on a long trace, next to sha256 and to verifying tokens on a hit.

A block-hash cache trusts that equal hashes mean equal prefixes. With a
``b``-bit hash and ``C`` blocks cached, a lookup of a block that is *not*
cached still finds an entry with probability about ``C / 2**b``: a wrong
hit, and the request computes over someone else's K/V. At 16 bits and a few
thousand cached blocks that is several percent of lookups; at 32 bits about
one in a million; sha256 (minikv's default, as vLLM's ``sha256`` option)
makes it negligible. ``verify=True`` (minikv's default for any hash but
sha256) compares the block's tokens, extra keys and parent with what the
cache stored, so a collision costs a miss instead.

:func:`count_collisions` replays a trace through a
:class:`~minikv.prefix.BlockHashCache` the way the engine does (match,
allocate, insert, release) next to a shadow record of what each block
*really* holds (the full sha256 chain of the prefix that wrote it, or
"poisoned" when it was computed after a wrong hit, attending over wrong
K/V). Per request it checks every hit block against the request's own
prefix, so it counts:

- ``wrong_blocks`` / ``wrong_tokens``: hit blocks (and their tokens) whose
  K/V belong to another prefix; ``requests_hurt``: requests with any;
- ``caught_at_insert``: of those requests, how many ``insert`` then refused
  (it refuses a block table whose blocks do not hold the tokens given,
  unless the block was hit by the same, colliding, hash: so a collision is
  not refused, and this stays 0 unless the cache is misused);
  ``silent``: the requests whose wrong K/V went unnoticed;
- ``repeated_blocks``: requests whose hit listed one block twice (the walk
  now stops where a wrong hit leads it back to a block it already took, so 0);
- ``detected``: collisions the cache saw (``stats().collisions``): with
  ``verify``, hits turned into misses; without it, walks that came back to a
  block and colliding hits that ``insert`` left alone;
- ``expected``: the arithmetic ``sum(C / 2**b)`` over the lookups that
  missed, for comparison.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from minikv.errors import InvalidRequestError
from minikv.prefix import BlockHashCache
from minikv.prefix.block_hashes import HashFn, chain_block_hashes

POISONED = b"poisoned"


def truncated_sha256(bits: int) -> HashFn:
    """The first ``bits`` bits of sha256 (``bits`` a multiple of 8): a weak hash to study collisions with.

    >>> len(truncated_sha256(16)(b"block")), truncated_sha256(16).__name__
    (2, 'sha256_16')
    """
    if bits % 8 or not 8 <= bits <= 256:
        raise InvalidRequestError(f"bits must be a multiple of 8 in 8..256, got {bits}")

    def fn(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()[: bits // 8]

    fn.__name__ = f"sha256_{bits}"
    return fn


@dataclass
class CollisionCount:
    """Counters of one replay (see the module docstring)."""

    name: str
    bits: int
    verify: bool
    requests: int = 0
    query_tokens: int = 0
    hit_tokens: int = 0
    wrong_blocks: int = 0
    wrong_tokens: int = 0
    requests_hurt: int = 0
    caught_at_insert: int = 0
    silent: int = 0
    repeated_blocks: int = 0
    detected: int = 0
    expected: float = 0.0

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.query_tokens if self.query_tokens else 0.0


def count_collisions(trace: Sequence[Sequence[int]], num_blocks: int, block_size: int = 16, bits: int = 256,
                     verify: bool | None = None) -> CollisionCount:
    """Replay ``trace`` through a ``num_blocks`` cache hashing with ``bits`` bits of sha256 (256: sha256 itself)."""
    hash_fn = "sha256" if bits == 256 else truncated_sha256(bits)
    cache = BlockHashCache(num_blocks, block_size, hash_fn=hash_fn, verify=verify)
    out = CollisionCount("sha256" if bits == 256 else f"sha256[:{bits} bits]", bits, cache.verify)
    holds: dict[int, bytes] = {}  # block id -> the true chain hash of the prefix whose K/V it holds
    for tokens in trace:
        tokens = list(tokens)
        truth = chain_block_hashes(tokens, block_size)
        cached_before = cache.stats().num_cached
        m = cache.match(tokens)
        hits = list(m.block_ids)
        if len(hits) < (len(tokens) - 1) // block_size:  # the walk stopped at a block that was not there
            out.expected += cached_before / 2 ** bits
        wrong = [j for j, b in enumerate(hits) if holds.get(b) != truth[j]]
        new = cache.allocate(-(-len(tokens) // block_size) - len(hits))
        table = hits + new
        for k, b in enumerate(new, start=len(hits)):
            holds[b] = POISONED if wrong or k >= len(truth) else truth[k]
        out.requests += 1
        out.query_tokens += len(tokens)
        out.hit_tokens += m.num_cached_tokens
        if wrong:
            out.wrong_blocks += len(wrong)
            out.wrong_tokens += len(wrong) * block_size
            out.requests_hurt += 1
        try:
            cache.insert(tokens, table)
            out.silent += bool(wrong)
        except InvalidRequestError:
            out.caught_at_insert += 1
        firsts = list(dict.fromkeys(table))
        if len(firsts) < len(table):  # a wrong hit led the chain back to a block it had already hit
            out.repeated_blocks += 1
            repeats = list(table)
            for b in firsts:
                repeats.remove(b)
            cache.release(firsts)
            for b in repeats:
                cache.release([b])
        else:
            cache.release(table)
    out.detected = cache.stats().collisions
    return out


__all__ = ["CollisionCount", "count_collisions", "truncated_sha256"]

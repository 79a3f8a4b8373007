"""MissReport: why the part of a prompt that was not a cache hit missed.

Every prompt token falls in exactly one bucket, so the fields sum to the
prompt length. A cache that can explain its misses has a method

    explain_miss(token_ids, salt, num_cached_tokens) -> MissReport

which the engine calls right after a request's first ``match`` (it must not
take references or change statistics). Buckets, in the order they are
decided for a token past the hit:

- ``last_token``: the one token the last-token rule recomputes because the
  rest of the prompt was cached (its logits give the first output token);
- ``partial_block``: tokens past the prompt's last full block (a block cache
  only shares whole blocks);
- ``evicted``: tokens whose blocks were cached once and have been evicted
  since (the cache remembers recently evicted hashes or tree paths);
- ``other_salt``: tokens cached under a different ``cache_salt``, kept apart on purpose;
- ``never_seen``: tokens no request with this salt has had before (as far as the cache remembers).
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class MissReport:
    """Tokens of one prompt (or, summed, of many) by why they were or were not a hit."""

    hit: int = 0
    last_token: int = 0
    partial_block: int = 0
    evicted: int = 0
    other_salt: int = 0
    never_seen: int = 0

    @property
    def total(self) -> int:
        """Prompt tokens accounted for: the sum of every bucket."""
        return sum(getattr(self, f.name) for f in fields(self))

    @property
    def missed(self) -> int:
        """Tokens that were computed: everything but the hit."""
        return self.total - self.hit

    def __add__(self, other: MissReport) -> MissReport:
        return MissReport(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

"""A middle way between one shared cache and a salt per tenant: share only the published prefixes.

A per-tenant ``cache_salt`` closes the timing channel but also stops tenants
from sharing a system prompt everybody knows. minikv's salt (like vLLM's)
enters the *first* block's hash, so a salted request shares nothing; there
is no engine option to salt "from token p on". :class:`PublicPrefixCache`
adds one, around any prefix cache, without touching the engine:

- the operator *publishes* some prefixes (system prompts, shared documents);
- for a salted request, the tokens that agree with a published prefix (the
  longest common prefix with any of them) are keyed as they are, so every
  tenant shares them; every token after that is keyed under the salt:
  token ``t`` becomes ``(salt_id << 32) | t``, a key no other salt and no
  raw token can have (``salt_id`` is a small number given to each salt on
  first sight, so two salts never share keys);
- unsalted requests are keyed as they are (they share with everyone).

The inner cache then runs with no salt at all; keys only decide what is
looked up and stored, while the engine computes K/V from the real tokens,
so a hit is always correct. In a block-hash cache a block that straddles
the end of the public part holds salted keys and stays private, so only
whole public blocks are shared.

Why the longest *common* prefix and not "starts with the whole published
prefix": the engine inserts a sequence's blocks as they are computed, so
the same request is keyed again with fewer tokens (chunked prefill). The
common prefix of ``tokens[:n]`` is the first ``n`` tokens of that of
``tokens``, so a request's keys never change as it grows. The price: a
tenant's tokens that happen to continue a published prefix are treated as
public, which reveals only that they equal public text.

Use it as a factory: ``LLM(model, prefix_cache=public_prefix_cache("hash",
[system_ids]))``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from minikv.errors import InvalidRequestError
from minikv.prefix import make_prefix_cache
from minikv.prefix.base import Match, as_token_ids

_TOKEN_BITS = 32


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share.

    >>> common_prefix_len([1, 2, 3], [1, 2, 4, 5]), common_prefix_len([], [1])
    (2, 0)
    """
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PublicPrefixCache:
    """Wraps a prefix cache: published prefixes are shared across salts, the rest stays per salt.

    Forwards everything else to ``inner`` (stats, allocate, release,
    evict, ...), so it plugs into the engine as the cache itself.
    """

    def __init__(self, inner: Any, public_prefixes: Sequence[Sequence[int]]) -> None:
        self.inner = inner
        self.public_prefixes = [as_token_ids(p) for p in public_prefixes]
        self._salt_ids: dict[Hashable, int] = {}

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def num_allocatable(self) -> int:
        return self.inner.num_allocatable

    def public_len(self, token_ids: Sequence[int]) -> int:
        """Leading tokens of ``token_ids`` shared with a published prefix (the longest such run)."""
        return max((common_prefix_len(token_ids, p) for p in self.public_prefixes), default=0)

    def keys(self, token_ids: Sequence[int], salt: Hashable | None) -> list[int]:
        """The keys the inner cache sees: public tokens as they are, the rest tagged with the salt's id.

        >>> c = PublicPrefixCache(None, [[1, 2, 3]])
        >>> c.keys([1, 2, 9], "a"), c.keys([1, 2, 9], None), c.keys([1, 2, 9], "b")[2] >> 32
        ([1, 2, 4294967305], [1, 2, 9], 2)
        """
        tokens = as_token_ids(token_ids)
        if salt is None:
            return tokens
        if any(t < 0 or t >> _TOKEN_BITS for t in tokens):
            raise InvalidRequestError(f"token ids must be in [0, 2**{_TOKEN_BITS}) to be keyed under a salt")
        tag = self._salt_ids.setdefault(salt, len(self._salt_ids) + 1) << _TOKEN_BITS
        p = self.public_len(tokens)
        return tokens[:p] + [tag | t for t in tokens[p:]]

    def match(self, token_ids: Sequence[int], salt: Hashable | None = None, **kw: Any) -> Match:
        return self.inner.match(self.keys(token_ids, salt), None, **kw)

    def insert(self, token_ids: Sequence[int], block_ids: Sequence[int], salt: Hashable | None = None,
               **kw: Any) -> int:
        return self.inner.insert(self.keys(token_ids, salt), block_ids, None, **kw)

    def peek(self, token_ids: Sequence[int], salt: Hashable | None = None, **kw: Any) -> int:
        return self.inner.peek(self.keys(token_ids, salt), None, **kw)

    def explain_miss(self, token_ids: Sequence[int], salt: Hashable | None, num_cached_tokens: int):
        return self.inner.explain_miss(self.keys(token_ids, salt), None, num_cached_tokens)

    def __repr__(self) -> str:
        return f"PublicPrefixCache({self.inner!r}, {len(self.public_prefixes)} published prefixes)"


def public_prefix_cache(kind: str | Callable[..., Any], public_prefixes: Sequence[Sequence[int]]
                        ) -> Callable[..., PublicPrefixCache]:
    """A ``prefix_cache`` factory for the engine: a ``kind`` cache ("hash", "radix" or a factory) wrapped.

    ``LLM(..., prefix_cache=public_prefix_cache("radix", [ids]), prefix_cache_options={"page_size": 1})``:
    the options go to the inner cache.
    """
    prefixes = [as_token_ids(p) for p in public_prefixes]

    def factory(num_blocks: int, block_size: int, **options: Any) -> PublicPrefixCache:
        inner = make_prefix_cache(kind, num_blocks, block_size, **options) if isinstance(kind, str) \
            else kind(num_blocks, block_size, **options)
        return PublicPrefixCache(inner, prefixes)

    factory.__name__ = f"public_prefix_cache_{kind if isinstance(kind, str) else 'custom'}"
    return factory


__all__ = ["PublicPrefixCache", "common_prefix_len", "public_prefix_cache"]

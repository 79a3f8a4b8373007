"""``BlockHashCache.peek``: what a ``match`` would hit now, with no side effects (a mixin).

A scheduler peeks at every waiting prompt at every step, so the block hashes
of recently peeked prompts are remembered (bounded by
:attr:`HashPeekMixin.PEEK_MEMO_TOKENS` tokens).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from minikv.prefix.base import as_token_ids, max_cached_blocks
from minikv.prefix.block_hashes import ExtraKey, HashFn, iter_block_hashes


class HashPeekMixin:
    """``peek`` over the state :class:`~minikv.prefix.BlockHashCache` sets up."""

    block_size: int
    verify: bool
    _hash: HashFn
    _by_hash: dict

    _walk_chain: Callable[..., list]  # the chain walk of minikv.prefix.hash_offload

    def peek(
        self,
        token_ids: Sequence[int],
        salt: str | None = None,
        *,
        extra_keys: Sequence[ExtraKey] = (),
    ) -> int:
        """The ``num_cached_tokens`` that :meth:`match` would return now; changes nothing.

        The same hash-chain walk (through the offload tier too, if any),
        last-token rule, salt and ``verify`` check as ``match``, but no
        reference is taken, no evictable block is revived
        (the free queue, i.e. the LRU order, stays as it is) and no counter
        moves, not even ``collisions``.

        >>> from minikv.prefix import BlockHashCache
        >>> c = BlockHashCache(4, 2)
        >>> c.insert([1, 2, 3, 4], c.allocate(2))
        2
        >>> c.peek([1, 2, 3, 4, 5]), c.peek([1, 2, 3, 4]), c.peek([1, 2, 3, 4, 5], salt="x")
        (4, 2, 0)
        >>> c.stats().requests
        0
        """
        tokens = as_token_ids(token_ids)
        bs = self.block_size
        limit = max_cached_blocks(len(tokens), bs)
        hashes = self._peek_hashes(tokens, salt, tuple(extra_keys), limit)
        num_hit = len(self._walk_chain(hashes, tokens, salt, extra_keys, count=False))  # pool, then tier
        return num_hit * bs

    _peek_memo: OrderedDict[tuple, list[bytes]] | None = None  # made by the first peek
    _peek_memo_tokens = 0
    PEEK_MEMO_TOKENS = 1 << 18
    """Prompt tokens whose block hashes ``peek`` remembers (a scheduler peeks every waiting
    prompt at every step; hashing them again each time would cost more than the lookups)."""

    def _peek_hashes(
        self, tokens: list[int], salt: str | None, extra_keys: tuple[ExtraKey, ...], limit: int
    ) -> list[bytes]:
        """The hashes of the first ``limit`` blocks of ``tokens``, from the memo when it has them.

        The memo is keyed by the exact tokens, salt and extra keys (hashes
        depend on nothing else), and forgets the least recently peeked
        prompts beyond :attr:`PEEK_MEMO_TOKENS` tokens.
        """
        key = (salt, extra_keys, tuple(tokens[: limit * self.block_size]))
        if self._peek_memo is None:
            self._peek_memo = OrderedDict()
        memo = self._peek_memo
        try:
            hashes = memo.get(key)
        except TypeError:  # an unhashable extra key: no memo
            hashes, key = None, None
        if hashes is not None:
            memo.move_to_end(key)
            return hashes
        blocks = iter_block_hashes(tokens, self.block_size, salt, extra_keys, self._hash, limit)
        hashes = [h for h, _, _ in blocks]
        if key is not None and len(key[2]) <= self.PEEK_MEMO_TOKENS:
            memo[key] = hashes
            self._peek_memo_tokens += len(key[2])
            while self._peek_memo_tokens > self.PEEK_MEMO_TOKENS:
                self._peek_memo_tokens -= len(memo.popitem(last=False)[0][2])
        return hashes


__all__ = ["HashPeekMixin"]

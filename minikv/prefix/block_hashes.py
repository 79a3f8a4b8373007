"""Block hashes: the fixed byte encoding of a block, and the chain that links blocks into a prefix.

Each *full* block of a sequence gets a hash that covers its parent block's
hash, its own token ids and extra keys (cache salt, adapter id, ...). Equal
hashes therefore stand for equal *prefixes*, not merely equal blocks. The
cache that looks blocks up by these hashes is
:class:`~minikv.prefix.hashing.BlockHashCache`.

The bytes that get hashed are a fixed encoding (length-prefixed, little-endian
int64 token ids), never Python's per-process salted ``hash()``, so a prompt
gets the same hashes in every process and on every machine.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Union

import xxhash

from minikv.errors import InvalidRequestError
from minikv.prefix.base import as_token_ids
from minikv.prefix.ledger import whole_number

ExtraKey = Union[int, str, bytes, "tuple[ExtraKey, ...]"]
"""What may go into a block's extra keys: ints, strings, bytes, and tuples of them."""

HashFn = Callable[[bytes], bytes]
"""A hash function: the encoded block in, its digest out."""


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


HASH_FUNCTIONS: dict[str, HashFn] = {
    "sha256": _sha256,
    "xxh3_128": xxhash.xxh3_128_digest,
    "xxh64": xxhash.xxh64_digest,
}
"""Hash functions by name: ``sha256`` is the strong default, the xxhash ones are fast."""

TRUSTED_HASHES = frozenset({"sha256"})
"""Names whose hits are trusted without comparing token ids (see ``BlockHashCache.verify``)."""

ROOT_HASH: bytes = hashlib.sha256(b"minikv/prefix/root").digest()
"""The parent hash of every sequence's first block: a constant, the same in every process."""

SALT_KEY = "cache_salt"
"""The first block's extra keys start with ``(SALT_KEY, salt)`` when a salt is given."""

_U32 = struct.Struct("<I")


def resolve_hash_fn(hash_fn: str | HashFn) -> HashFn:
    """The function for a name in :data:`HASH_FUNCTIONS`, or ``hash_fn`` itself if callable."""
    if callable(hash_fn):
        return hash_fn
    try:
        return HASH_FUNCTIONS[hash_fn]
    except (KeyError, TypeError):
        choices = ", ".join(repr(k) for k in HASH_FUNCTIONS)
        raise InvalidRequestError(
            f"unknown hash function {hash_fn!r}; choose one of {choices}, or pass a callable "
            f"bytes -> bytes"
        ) from None


def _encode_key(key: ExtraKey, out: list[bytes]) -> None:
    """Append a type tag, a length and the payload, so distinct keys never encode alike."""
    if isinstance(key, int):
        raw = key.to_bytes((key.bit_length() + 8) // 8, "little", signed=True)
        out += (b"i", _U32.pack(len(raw)), raw)
    elif isinstance(key, str):
        raw = key.encode("utf-8")
        out += (b"s", _U32.pack(len(raw)), raw)
    elif isinstance(key, (bytes, bytearray)):
        out += (b"b", _U32.pack(len(key)), bytes(key))
    elif isinstance(key, tuple):
        out += (b"t", _U32.pack(len(key)))
        for k in key:
            _encode_key(k, out)
    else:
        raise InvalidRequestError(
            f"a cache salt or extra key must be an int, str, bytes or a tuple of them, "
            f"got {type(key).__name__}"
        )


def encode_block(
    parent_hash: bytes, token_ids: Sequence[int], extra_keys: Sequence[ExtraKey] = ()
) -> bytes:
    """The exact bytes a block hash is taken of.

    Layout: ``len(parent) | parent | num_tokens | tokens as <int64 ... | extra
    keys as one tagged tuple``. Every field is length-prefixed, so no two
    different (parent, tokens, extras) triples give the same bytes.
    """
    try:
        packed = struct.pack(f"<{len(token_ids)}q", *token_ids)
    except struct.error as e:
        raise InvalidRequestError(f"token ids must be integers in the int64 range ({e})") from None
    out = [_U32.pack(len(parent_hash)), bytes(parent_hash), _U32.pack(len(token_ids)), packed]
    _encode_key(tuple(extra_keys), out)
    return b"".join(out)


def hash_block(
    parent_hash: bytes,
    token_ids: Sequence[int],
    extra_keys: Sequence[ExtraKey] = (),
    hash_fn: str | HashFn = "sha256",
) -> bytes:
    """Hash of one block: covers its parent's hash, its token ids and its extra keys."""
    return resolve_hash_fn(hash_fn)(encode_block(parent_hash, token_ids, extra_keys))


def block_extra_keys(
    index: int, salt: str | None, extra_keys: Sequence[ExtraKey] = ()
) -> tuple[ExtraKey, ...]:
    """Extra keys of block ``index``: ``extra_keys`` everywhere, plus the salt on block 0.

    The salt only needs to enter the first block: the chain carries it into
    every later hash.
    """
    if index == 0 and salt is not None:
        return ((SALT_KEY, salt), *extra_keys)
    return tuple(extra_keys)


def iter_block_hashes(
    tokens: list[int],
    block_size: int,
    salt: str | None,
    extra_keys: Sequence[ExtraKey],
    fn: HashFn,
    num_blocks: int,
) -> Iterator[tuple[bytes, tuple[int, ...], tuple[ExtraKey, ...]]]:
    """(hash, tokens, extra keys) of the first ``num_blocks`` full blocks, lazily."""
    parent = ROOT_HASH
    for i in range(num_blocks):
        toks = tuple(tokens[i * block_size : (i + 1) * block_size])
        extra = block_extra_keys(i, salt, extra_keys)
        parent = fn(encode_block(parent, toks, extra))
        yield parent, toks, extra


def chain_block_hashes(
    token_ids: Sequence[int],
    block_size: int,
    salt: str | None = None,
    extra_keys: Sequence[ExtraKey] = (),
    hash_fn: str | HashFn = "sha256",
) -> list[bytes]:
    """Hash every *full* block of ``token_ids``, each hash covering its parent's.

    Block i's hash is ``H(parent_hash_i, tokens of block i, extra keys of block i)``
    with ``parent_hash_0 = ROOT_HASH``; the salt enters block 0's extra keys.
    A trailing partial block gets no hash: it cannot be shared yet.

    >>> len(chain_block_hashes(list(range(40)), block_size=16))
    2
    """
    block_size = whole_number("block_size", block_size, 1, "16")
    tokens = as_token_ids(token_ids)
    fn = resolve_hash_fn(hash_fn)
    blocks = iter_block_hashes(tokens, block_size, salt, extra_keys, fn, len(tokens) // block_size)
    return [h for h, _, _ in blocks]


__all__ = [
    "HASH_FUNCTIONS",
    "ROOT_HASH",
    "SALT_KEY",
    "TRUSTED_HASHES",
    "ExtraKey",
    "HashFn",
    "block_extra_keys",
    "chain_block_hashes",
    "encode_block",
    "hash_block",
    "iter_block_hashes",
    "resolve_hash_fn",
]

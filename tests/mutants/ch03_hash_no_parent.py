"""3.1 bug: hashes each block on its own, without its parent's hash (equal blocks anywhere collide)."""

import hashlib

from minikv.prefix.hashing import ROOT_HASH, encode_block

TARGET = "3.1"
EXPECT = "left block 1's hash the same"


def chain_block_hashes(token_ids, block_size, salt=None):
    out = []
    for i in range(len(token_ids) // block_size):
        extra = (("cache_salt", salt),) if i == 0 and salt is not None else ()
        out.append(hashlib.sha256(encode_block(ROOT_HASH, list(token_ids[i * block_size:(i + 1) * block_size]), extra)).digest())
    return out

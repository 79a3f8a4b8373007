"""3.1 bug: also hashes the trailing partial block (which may still grow, so it must not be shared)."""

import hashlib

from minikv.prefix.hashing import ROOT_HASH, encode_block

TARGET = "3.1"
EXPECT = "partial block gets no hash"


def chain_block_hashes(token_ids, block_size, salt=None):
    out, parent = [], ROOT_HASH
    for i in range(-(-len(token_ids) // block_size)):
        extra = (("cache_salt", salt),) if i == 0 and salt is not None else ()
        parent = hashlib.sha256(encode_block(parent, list(token_ids[i * block_size:(i + 1) * block_size]), extra)).digest()
        out.append(parent)
    return out

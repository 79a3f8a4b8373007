"""8.2 bug: the salt always enters block 0, so the public blocks are not shared across tenants."""

import hashlib

from minikv.prefix.hashing import ROOT_HASH, encode_block

TARGET = "8.2"
EXPECT = "whatever public_blocks says"


def tenant_block_hashes(token_ids, block_size, salt, public_blocks=0):
    out, parent = [], ROOT_HASH
    for i in range(len(token_ids) // block_size):
        extra = (("cache_salt", salt),) if i == 0 and salt is not None else ()
        parent = hashlib.sha256(encode_block(parent, list(token_ids[i * block_size:(i + 1) * block_size]), extra)).digest()
        out.append(parent)
    return out

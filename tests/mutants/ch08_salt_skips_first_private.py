"""8.2 bug: the salt goes on every block after the first private one, not on it: that block is still shared."""

import hashlib

from minikv.prefix.hashing import ROOT_HASH, encode_block

TARGET = "8.2"
EXPECT = "the salt on every block but block"


def tenant_block_hashes(token_ids, block_size, salt, public_blocks=0):
    out, parent = [], ROOT_HASH
    for i in range(len(token_ids) // block_size):
        extra = (("cache_salt", salt),) if i > public_blocks and salt is not None else ()
        parent = hashlib.sha256(encode_block(parent, list(token_ids[i * block_size:(i + 1) * block_size]), extra)).digest()
        out.append(parent)
    return out

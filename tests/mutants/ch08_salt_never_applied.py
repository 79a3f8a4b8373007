"""8.2 bug: the salt is never put in any block's extra keys, so every tenant shares every block."""

import hashlib

from minikv.prefix.hashing import ROOT_HASH, encode_block

TARGET = "8.2"
EXPECT = "the hashes equal the unsalted ones"


def tenant_block_hashes(token_ids, block_size, salt, public_blocks=0):
    out, parent = [], ROOT_HASH
    for i in range(len(token_ids) // block_size):
        parent = hashlib.sha256(encode_block(parent, list(token_ids[i * block_size:(i + 1) * block_size]))).digest()
        out.append(parent)
    return out

"""3.1 bug: forgets the salt (extra keys), so different tenants share blocks."""

import hashlib

from minikv.prefix.hashing import ROOT_HASH, encode_block

TARGET = "3.1"
EXPECT = "equals the unsalted one"


def chain_block_hashes(token_ids, block_size, salt=None):
    out, parent = [], ROOT_HASH
    for i in range(len(token_ids) // block_size):
        parent = hashlib.sha256(encode_block(parent, list(token_ids[i * block_size:(i + 1) * block_size]))).digest()
        out.append(parent)
    return out

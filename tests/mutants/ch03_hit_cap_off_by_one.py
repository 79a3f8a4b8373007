"""3.2 bug: caps one block too early (len // block_size - 1), missing a hit whenever the last block is partial."""

from minikv.prefix import chain_block_hashes

TARGET = "3.2"
EXPECT = "you stopped after 2"


def longest_cache_hit(cached, token_ids, block_size, salt=None):
    usable = max(0, len(token_ids) // block_size - 1)
    hits = []
    for h in chain_block_hashes(list(token_ids[:usable * block_size]), block_size, salt):
        if h not in cached:
            break
        hits.append(cached[h])
    return hits

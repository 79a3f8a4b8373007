"""3.2 bug: no last-token rule: a fully cached prompt leaves nothing for the model to compute."""

from minikv.prefix import chain_block_hashes

TARGET = "3.2"
EXPECT = "leaves no token to compute"


def longest_cache_hit(cached, token_ids, block_size, salt=None):
    hits = []
    for h in chain_block_hashes(list(token_ids), block_size, salt):
        if h not in cached:
            break
        hits.append(cached[h])
    return hits

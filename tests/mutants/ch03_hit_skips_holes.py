"""3.2 bug: keeps going past an uncached block, returning blocks whose prefix is not all there."""

from minikv.prefix import chain_block_hashes

TARGET = "3.2"
EXPECT = "stop at the first block that is not cached"


def longest_cache_hit(cached, token_ids, block_size, salt=None):
    usable = max(0, (len(token_ids) - 1) // block_size)
    return [cached[h] for h in chain_block_hashes(list(token_ids[:usable * block_size]), block_size, salt) if h in cached]

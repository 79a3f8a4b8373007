"""5.4 bug: evicts the leaf whose next use is nearest (the opposite of Belady's rule)."""

import math

from minikv.prefix import chain_block_hashes, max_cached_blocks

TARGET = "5.4"
EXPECT = "evicts the block whose next use is nearest"


def belady_hits(trace, capacity, block_size):
    keys = [chain_block_hashes(list(p), block_size) for p in trace]
    caps = [max_cached_blocks(len(p), block_size) for p in trace]
    parent, depth, cached, hits = {}, {}, set(), []

    def next_use(key, now):
        return next((i for i in range(now + 1, len(trace)) if key in keys[i][: caps[i]]), math.inf)

    for i, prompt in enumerate(trace):
        need = math.ceil(len(prompt) / block_size)
        if need > capacity:
            cached.clear()
            hits.append(0)
            continue
        hit = 0
        while hit < caps[i] and keys[i][hit] in cached:
            hit += 1
        keep = set(keys[i][:hit])
        while len(cached) - hit + need > capacity:
            parents = {parent[k] for k in cached}
            leaves = [k for k in cached if k not in keep and k not in parents]
            cached.remove(min(leaves, key=lambda k: (next_use(k, i), -depth[k])))
        hits.append(hit * block_size)
        for j, key in enumerate(keys[i]):
            cached.add(key)
            parent[key], depth[key] = (keys[i][j - 1] if j else None), j
    return hits

"""5.3 bug: reads each hit with cache.match (which takes a reference and counts a query) instead of cache.peek."""

TARGET = "5.3"
EXPECT = "ordering changed the cache"


def lpm_order(waiting, cache, threshold=128):
    if len(waiting) > threshold:
        return list(waiting)
    hits = [cache.match(r.token_ids, r.cache_salt).num_cached_tokens for r in waiting]
    ranked = sorted(range(len(waiting)), key=lambda i: (-hits[i], waiting[i].arrival_time, i))
    return [waiting[i] for i in ranked]

"""5.3 bug: sorts by cached tokens ascending, so the request with the shortest cached prefix goes first."""

TARGET = "5.3"
EXPECT = "longest cached prefix first"


def lpm_order(waiting, cache, threshold=128):
    if len(waiting) > threshold:
        return list(waiting)
    hits = [cache.peek(r.token_ids, r.cache_salt) for r in waiting]
    ranked = sorted(range(len(waiting)), key=lambda i: (hits[i], waiting[i].arrival_time, i))
    return [waiting[i] for i in ranked]

"""7.4 bug: the hit rate from the after scrape's totals (since the server started), not the deltas."""

from prometheus_client.parser import text_string_to_metric_families

TARGET = "7.4"
EXPECT = "the hit rate since the server started"


def hit_rate_between(before, after, prefix="minikv:"):
    totals = {}
    for family in text_string_to_metric_families(after):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    queries = totals.get(prefix + "prefix_cache_queries_total", 0.0)
    return totals.get(prefix + "prefix_cache_hits_total", 0.0) / queries if queries else 0.0

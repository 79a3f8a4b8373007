"""7.4 bug: divides by the prompt tokens counter instead of the prefix cache's queries."""

from prometheus_client.parser import text_string_to_metric_families

TARGET = "7.4"
EXPECT = "the denominator is minikv:prefix_cache_queries_total"


def _totals(text):
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def hit_rate_between(before, after, prefix="minikv:"):
    b, a = _totals(before), _totals(after)
    prompt = a.get(prefix + "prompt_tokens_total", 0.0) - b.get(prefix + "prompt_tokens_total", 0.0)
    hits = a.get(prefix + "prefix_cache_hits_total", 0.0) - b.get(prefix + "prefix_cache_hits_total", 0.0)
    return hits / prompt if prompt > 0 else 0.0

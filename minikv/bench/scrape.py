"""Reading a server's Prometheus ``/metrics``: counter totals, and the prefix-cache hit rate between two scrapes.

Counters only grow, from the server's start. What a benchmark wants is what
happened *during* its run, so it scrapes before and after and subtracts:

    hit rate of the run = Δ prefix_cache_hits_total / Δ prefix_cache_queries_total

(both in tokens; vLLM exports them as ``vllm:prefix_cache_hits_total`` and
``vllm:prefix_cache_queries_total``, minikv as ``minikv:...``). Text is parsed
with ``prometheus_client``'s parser; a counter's value is its ``_total``
sample summed over its label sets (``model_name``...).

    >>> before = 'minikv:prefix_cache_hits_total 100.0\\nminikv:prefix_cache_queries_total 400.0\\n'
    >>> after = 'minikv:prefix_cache_hits_total 250.0\\nminikv:prefix_cache_queries_total 600.0\\n'
    >>> hit_rate_between(before, after)
    0.75
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def counter_totals(text: str) -> dict[str, float]:
    """``{sample name: value}`` of every ``*_total`` sample in a scrape, summed over label sets."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    return totals


def hit_rate_between(before: str, after: str, prefix: str = "minikv:") -> float:
    """Hit tokens / query tokens of the prefix cache between two scrapes; 0.0 when nothing was queried."""
    b, a = counter_totals(before), counter_totals(after)
    hits, queries = prefix + "prefix_cache_hits_total", prefix + "prefix_cache_queries_total"
    d_queries = a.get(queries, 0.0) - b.get(queries, 0.0)
    d_hits = a.get(hits, 0.0) - b.get(hits, 0.0)
    return d_hits / d_queries if d_queries > 0 else 0.0


__all__ = ["counter_totals", "hit_rate_between"]

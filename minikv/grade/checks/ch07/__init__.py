"""Chapter 07 (serving): 7.1 incremental detokenization with stop strings, 7.2 a stream's latency numbers,
7.3 cached tokens over HTTP (and the learner's chapter-04 tree behind the server), 7.4 hit rate between
two /metrics scrapes.

References: :class:`minikv.engine.detokenizer.IncrementalDetokenizer` (on the byte-level tokenizer of
``tiny-llama``), :func:`minikv.bench.latency.stream_latency` and :func:`minikv.bench.online.percentile`,
``LLM("tiny-llama", prefix_cache="radix")``'s ``num_cached_tokens`` (one request at a time), and
:func:`minikv.bench.scrape.hit_rate_between` on real and hand-written scrapes. 7.3's final check serves
``ServerThread("tiny-llama", prefix_cache=<your TreePrefixCache>)``.
"""

from minikv.grade.checks.ch07 import detok, http_cache, latency, scrapes

__all__ = ["detok", "http_cache", "latency", "scrapes"]

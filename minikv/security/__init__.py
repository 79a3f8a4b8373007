"""Security of a shared prefix cache: the timing side channel, its fixes, and what a weak hash costs.

A shared prefix cache is shared state: whoever can time a request can learn
whether someone else sent the same prefix. vLLM had this as CVE-2025-46570
and fixed it with a per-request ``cache_salt`` that enters the first
block's hash (minikv's ``SamplingParams(cache_salt=...)`` does the same);
InputSnatch (arXiv 2411.18191) and PromptPeek (NDSS 2025) recover prompts
through such caches; SGLang issue 1504 reports the radix cache's leak.

Rooms, one role each:

- :mod:`.auc`: ROC AUC (Mann-Whitney, ties half), its spread under no leak,
  the attacker's threshold classifier;
- :mod:`.probes`: send a prompt and read its TTFT, in-process
  (``EngineProber``) or from a server over the OpenAI API (``HttpProber``);
- :mod:`.attack`: which of several prefixes did the victim send?
- :mod:`.recovery`: a secret token by token (page size 1) or a block at a time;
- :mod:`.public_prefix`: the middle way, published prefixes shared across salts;
- :mod:`.cost`: the hit rate salts cost on a multi-tenant stream;
- :mod:`.ordering`: the order LPM scheduling serves requests in leaks hits;
- :mod:`.collisions`: wrong hits from truncated block hashes, and ``verify``.

``minikv bench leak`` and ``minikv bench collisions`` run them.
"""

from minikv.security.auc import chance_band, null_auc_se, roc_auc
from minikv.security.public_prefix import PublicPrefixCache, public_prefix_cache

__all__ = ["PublicPrefixCache", "chance_band", "null_auc_se", "public_prefix_cache", "roc_auc"]

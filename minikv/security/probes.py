"""How the attacker sends a request and reads its time to first token: through the engine, or over HTTP.

A :class:`Prober` sends one prompt (token ids, so nothing is lost to
tokenization) with one token to generate and returns a :class:`Probe`: the
TTFT the sender observed and, where the system reports it, how many prompt
tokens came from the cache (the ground truth the timing tries to guess;
the attack never reads it).

- :class:`EngineProber`: ``LLM.generate`` one request at a time, TTFT from
  ``RequestOutput.metrics`` (arrival to first token, inside the engine).
- :class:`HttpProber`: an OpenAI-compatible server (``minikv serve``,
  vLLM, SGLang) through the ``openai`` client's streaming completions;
  TTFT is measured here, from sending the request to the first streamed
  token, so it includes the network and the server's queue as a real
  attacker's would. ``cache_salt`` goes in the body (vLLM's field).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Probe:
    """One request's observed TTFT (seconds) and the cached prompt tokens the system reported (None: not told)."""

    ttft: float
    cached_tokens: int | None = None


class Prober(Protocol):
    """Sends one prompt of token ids under a cache salt, generating one token, and times it."""

    def send(self, token_ids: Sequence[int], salt: str | None = None) -> Probe: ...


class EngineProber:
    """Probes a :class:`~minikv.LLM` in this process; one request per ``generate`` call.

    ``max_tokens=1`` and greedy decoding: the request's only cost is its
    prefill, which is what a cache hit shortens.
    """

    def __init__(self, llm: Any) -> None:
        from minikv.sampling import SamplingParams

        self.llm = llm
        self._params = SamplingParams
        self.vocab_size: int = len(llm.tokenizer)

    def send(self, token_ids: Sequence[int], salt: str | None = None) -> Probe:
        params = self._params(max_tokens=1, temperature=0.0, cache_salt=salt)
        out = self.llm.generate({"prompt_token_ids": list(token_ids)}, params)[0]
        return Probe(float(out.metrics.ttft), int(out.num_cached_tokens))


class HttpProber:
    """Probes an OpenAI-compatible server at ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``).

    ``model``: the served name (default: the first of ``GET /models``).
    Each ``send`` streams a completion of one token with
    ``stream_options.include_usage`` on, so the last chunk's
    ``usage.prompt_tokens_details.cached_tokens`` gives the ground truth
    when the server reports it.
    """

    def __init__(self, base_url: str, model: str | None = None, api_key: str = "EMPTY", timeout: float = 600.0) -> None:
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
        self.model = model or self.client.models.list().data[0].id

    def send(self, token_ids: Sequence[int], salt: str | None = None) -> Probe:
        extra = {} if salt is None else {"cache_salt": salt}
        start = time.perf_counter()
        stream = self.client.completions.create(
            model=self.model, prompt=list(token_ids), max_tokens=1, temperature=0.0, stream=True,
            stream_options={"include_usage": True}, extra_body=extra)
        ttft, cached = None, None
        for chunk in stream:
            if ttft is None and chunk.choices:
                ttft = time.perf_counter() - start
            usage = getattr(chunk, "usage", None)
            details = getattr(usage, "prompt_tokens_details", None) if usage is not None else None
            if details is not None and getattr(details, "cached_tokens", None) is not None:
                cached = int(details.cached_tokens)
        return Probe(time.perf_counter() - start if ttft is None else ttft, cached)


__all__ = ["EngineProber", "HttpProber", "Probe", "Prober"]

"""One streamed request to an OpenAI-compatible server, timed chunk by chunk (httpx, asyncio).

The client speaks plain HTTP with httpx rather than through the ``openai``
package so that every timestamp is taken where the bytes arrive: the send
time just before the request goes out, then one ``time.perf_counter()`` per
Server-Sent Events chunk that carries text (a first chunk with only
``role`` does not count). TTFT, E2E, inter-token latencies and TPOT follow
from those as :mod:`minikv.bench.latency` defines them (vLLM's and SGLang's
definitions), with ``n`` the server's ``usage.completion_tokens`` (or the
number of text chunks when it does not say);

- cached tokens: ``usage.prompt_tokens_details.cached_tokens`` of the last
  chunk (asked for with ``stream_options.include_usage``), ``None`` when the
  server does not report it: unknown, which is not 0.

A request that fails (a refused connection, an HTTP error, an ``error``
event, a stream cut before ``data: [DONE]``) comes back as a
:class:`RequestResult` with ``ok=False`` and the reason, never as an
exception: one bad request does not end a benchmark. :func:`list_models`
is the check before a run and raises :class:`~minikv.errors.EndpointError`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from minikv.bench.latency import StreamLatency, stream_latency
from minikv.errors import EndpointError, EndpointUnreachableError

ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


def server_root(base_url: str) -> str:
    """The server's root URL: ``http://host:port``, also when given as OpenAI's ``.../v1`` base URL.

    >>> server_root("http://127.0.0.1:8000/v1/"), server_root("http://127.0.0.1:8000")
    ('http://127.0.0.1:8000', 'http://127.0.0.1:8000')
    """
    root = base_url.strip().rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise EndpointError(f"--base-url must start with http:// or https://, got {base_url!r} "
                            "(e.g. http://127.0.0.1:8000)")
    return root[:-3] if root.endswith("/v1") else root


@dataclass
class RequestResult:
    """What one request did. Times are seconds (``perf_counter``); lengths are tokens as the server counts them."""

    conversation: int
    turn: int
    ok: bool = False
    error: str | None = None
    start: float = 0.0  # when it was sent
    end: float = 0.0  # when its last byte came
    chunk_times: list[float] = field(default_factory=list)  # one per chunk that carried text
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # None: the server did not report it

    @property
    def latency(self) -> StreamLatency | None:
        """TTFT, E2E, ITL and TPOT (:func:`minikv.bench.latency.stream_latency`); None unless it completed with text."""
        if not self.ok or not self.chunk_times:
            return None
        return stream_latency(self.start, self.chunk_times, max(self.num_output_tokens, len(self.chunk_times)))

    @property
    def ttft(self) -> float | None:
        return self.latency.ttft if self.latency else None

    @property
    def e2e(self) -> float | None:
        """Send to last text chunk (the end of the stream when no text came)."""
        if not self.ok:
            return None
        return self.latency.e2e if self.latency else self.end - self.start

    @property
    def num_output_tokens(self) -> int:
        if not self.ok:
            return 0
        return self.completion_tokens if self.completion_tokens is not None else len(self.chunk_times)

    @property
    def itl(self) -> list[float]:
        return self.latency.itl if self.latency else []

    @property
    def tpot(self) -> float | None:
        return self.latency.tpot if self.latency else None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("chunk_times")
        d.update(ttft=self.ttft, e2e=self.e2e, tpot=self.tpot, itl=self.itl, num_output_tokens=self.num_output_tokens)
        return d


def build_payload(endpoint: str, model: str, messages: list[dict[str, str]], max_tokens: int,
                  temperature: float = 0.0, seed: int | None = None, ignore_eos: bool = False) -> dict[str, Any]:
    """The JSON body of a streamed request, usage included; ``completions`` sends the messages as one text."""
    from minikv.workloads.serve_traces import render_prompt

    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": temperature, "stream": True,
                            "stream_options": {"include_usage": True}}
    if endpoint == "chat":
        body["messages"] = messages
    elif endpoint == "completions":
        body["prompt"] = render_prompt(messages)
    else:
        raise EndpointError(f"endpoint must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
    if seed is not None:
        body["seed"] = seed
    if ignore_eos:
        body["ignore_eos"] = True  # vLLM's, SGLang's and minikv's extra field
    return body


def _chunk_text(endpoint: str, choice: dict[str, Any]) -> str:
    if endpoint == "chat":
        return (choice.get("delta") or {}).get("content") or ""
    return choice.get("text") or ""


def read_usage(result: RequestResult, usage: dict[str, Any]) -> None:
    """Take prompt, completion and cached token counts from an OpenAI ``usage`` object (cached: None if absent)."""
    result.prompt_tokens = usage.get("prompt_tokens", result.prompt_tokens)
    result.completion_tokens = usage.get("completion_tokens", result.completion_tokens)
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    result.cached_tokens = cached if isinstance(cached, int) else result.cached_tokens


async def send_request(client: httpx.AsyncClient, url: str, endpoint: str, body: dict[str, Any],
                       result: RequestResult) -> RequestResult:
    """POST ``body`` to ``url`` and read its SSE stream into ``result`` (also returned); failures set ``ok=False``."""
    result.start = time.perf_counter()
    done = False
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code >= 400:
                text = (await response.aread()).decode("utf-8", "replace")
                result.error = f"HTTP {response.status_code}: {text.strip()[:300]}"
                return result
            async for line in response.aiter_lines():
                now = time.perf_counter()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done, result.end = True, now
                    break
                event = json.loads(data)
                if "error" in event:
                    result.error = f"error event: {json.dumps(event['error'])[:300]}"
                    return result
                for choice in event.get("choices") or []:
                    piece = _chunk_text(endpoint, choice)
                    if piece:
                        result.chunk_times.append(now)
                        result.text += piece
                    if choice.get("finish_reason"):
                        result.finish_reason = choice["finish_reason"]
                if event.get("usage"):
                    read_usage(result, event["usage"])
        if done:
            result.ok = True
        else:
            result.error = "the stream ended before data: [DONE]"
    except httpx.HTTPError as e:
        result.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    except (json.JSONDecodeError, AttributeError, TypeError) as e:
        result.error = f"not an OpenAI stream chunk: {e}"
    return result


def list_models(base_url: str, timeout: float = 10.0) -> list[str]:
    """The model ids ``GET /v1/models`` lists; raises :class:`EndpointError` saying the URL and what came back."""
    url = server_root(base_url) + "/v1/models"
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as e:
        raise EndpointUnreachableError(
            f"cannot reach the server at {url} ({type(e).__name__}: {e or 'no answer'}); is it running? "
            "Start one with `minikv serve --model smollm2-135m --port 8000`, or fix --base-url") from None
    if response.status_code >= 400:
        raise EndpointError(f"GET {url} answered HTTP {response.status_code}: {response.text.strip()[:300]}")
    try:
        return [m["id"] for m in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise EndpointError(f"GET {url} did not answer an OpenAI model list: {response.text.strip()[:300]}") from None


def pick_model(base_url: str, model: str | None) -> str:
    """``model`` checked against the server's list, or the first one it serves when ``model`` is ``None``."""
    ids = list_models(base_url)
    if model is None:
        if not ids:
            raise EndpointError(f"{server_root(base_url)}/v1/models lists no model; pass --model NAME")
        return ids[0]
    if ids and model not in ids:
        raise EndpointError(f"the server at {server_root(base_url)} does not serve model {model!r}; it serves "
                            f"{', '.join(map(repr, ids))} (pass one of them to --model, or leave --model out)")
    return model


__all__ = ["ENDPOINTS", "RequestResult", "build_payload", "list_models", "pick_model", "read_usage",
           "send_request", "server_root"]

"""7.3 bug: an HTTP error is not raised: the error body has no usage, and the client reports 0 cached tokens."""

import httpx

TARGET = "7.3"
EXPECT = "call response.raise_for_status()"


def cached_tokens(base_url, model, prompts, cache_salt=None):
    out = []
    for prompt in prompts:
        body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0}
        if cache_salt is not None:
            body["cache_salt"] = cache_salt
        usage = httpx.post(f"{base_url}/completions", json=body, timeout=60.0).json().get("usage") or {}
        out.append((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0))
    return out

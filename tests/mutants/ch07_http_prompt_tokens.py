"""7.3 bug: reads usage.prompt_tokens (the whole prompt) instead of usage.prompt_tokens_details.cached_tokens."""

import httpx

TARGET = "7.3"
EXPECT = "those are usage.prompt_tokens"


def cached_tokens(base_url, model, prompts, cache_salt=None):
    out = []
    for prompt in prompts:
        body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0}
        if cache_salt is not None:
            body["cache_salt"] = cache_salt
        r = httpx.post(f"{base_url}/completions", json=body, timeout=60.0)
        r.raise_for_status()
        out.append(r.json()["usage"]["prompt_tokens"])
    return out

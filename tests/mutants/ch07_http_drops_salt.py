"""7.3 bug: the cache_salt is never sent, so a tenant's prompts hit what another tenant cached."""

import httpx

TARGET = "7.3"
EXPECT = "the cache_salt never reached the server"


def cached_tokens(base_url, model, prompts, cache_salt=None):
    out = []
    for prompt in prompts:
        r = httpx.post(f"{base_url}/completions", json={"model": model, "prompt": prompt, "max_tokens": 1,
                                                        "temperature": 0}, timeout=60.0)
        r.raise_for_status()
        out.append(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"])
    return out

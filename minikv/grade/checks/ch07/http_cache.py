"""Exercise 7.3, cached tokens over HTTP: the learner's ``cached_tokens`` client against
``ServerThread("tiny-llama", prefix_cache="radix")``, compared with what ``LLM("tiny-llama",
prefix_cache="radix")`` reports offline for the same prompts one at a time; then, last, the learner's
chapter-04 tree (``TreePrefixCache``) behind the server, measured with the learner's client."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

from minikv.grade import memo
from minikv.grade.checks.ch07.detok import MODULE
from minikv.grade.compare import CheckFailed, call, describe_exception, one_line
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner

ex73 = register(Exercise(
    "7.3", "cached tokens over HTTP", MODULE, ("cached_tokens",),
    hint='for each prompt: r = httpx.post(f"{base_url}/completions", json={"model": model, "prompt": prompt, '
         '"max_tokens": 1, "temperature": 0} (+ "cache_salt" when given), timeout=60); r.raise_for_status(); '
         'append r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]',
))

OPTIONS = {"device": "cpu", "block_size": 8, "num_blocks": 64}
SYSTEM = "You are a kind assistant for a tea shop. Answer in one short line. "
TRACE = (SYSTEM + "Q: green tea?", SYSTEM + "Q: black tea?", SYSTEM + "Q: green tea?",
         "Another shop, nothing shared.", SYSTEM + "Q: oolong, please, and quickly.")
SALT = "tenant-b"
SALTED = (SYSTEM + "Q: green tea?", SYSTEM + "Q: white tea?")

Case = tuple[tuple[str, ...], "str | None"]
CASES: tuple[Case, ...] = ((TRACE, None), (SALTED, SALT), (SALTED, None))


def reference() -> list[tuple[list[int], list[int]]]:
    """Per case: (cached tokens, prompt tokens) of each prompt, from LLM('tiny-llama', prefix_cache='radix')."""
    from minikv import LLM, SamplingParams

    def run() -> list[tuple[list[int], list[int]]]:
        llm = LLM("tiny-llama", prefix_cache="radix", **OPTIONS)
        out = []
        for prompts, salt in CASES:
            cached, lengths = [], []
            for p in prompts:
                (o,) = llm.generate([p], SamplingParams(max_tokens=1, temperature=0.0, cache_salt=salt))
                cached.append(int(o.num_cached_tokens))
                lengths.append(len(o.prompt_token_ids))
            out.append((cached, lengths))
        return out

    return memo.once("ch07:cached-tokens", run)


def _describe(prompts: Sequence[str], salt: str | None) -> str:
    names = {p: f"#{i}" for i, p in enumerate(dict.fromkeys(TRACE + SALTED))}
    listed = ", ".join(names[p] for p in prompts)
    return f"cached_tokens(srv.base_url, 'tiny-llama', prompts [{listed}]" + (f", cache_salt={salt!r}" if salt else "") + ")"


def serve_cases(fn: Callable[..., Any], prefix_cache: Any) -> list[Any]:
    """Start a server with ``prefix_cache``, run every case through ``fn`` (the learner's client), stop it."""
    from minikv.serve import ServerThread

    got = []
    with ServerThread("tiny-llama", prefix_cache=prefix_cache, **OPTIONS) as srv:
        for prompts, salt in CASES:
            args = (srv.base_url, srv.model_name, list(prompts)) + ((salt,) if salt is not None else ())
            got.append(call(fn, *args, context=_describe(prompts, salt)))
    return got


def compare(got: list[Any], want: list[tuple[list[int], list[int]]], server: str) -> int:
    """CheckFailed at the first case whose cached tokens differ; returns the hits."""
    for (prompts, salt), g, (w, lengths) in zip(CASES, got, want):
        desc = _describe(prompts, salt) + f" on {server}"
        if not isinstance(g, (list, tuple)) or len(g) != len(w):
            raise CheckFailed(one_line(f"{desc} returned {g!r}, expected a list of {len(w)} ints, one per prompt"))
        g = list(g)
        if g == w:
            continue
        if g == lengths:
            raise CheckFailed(one_line(f"{desc} returned {g}, expected {w}: those are usage.prompt_tokens, the whole "
                                       "prompt; the cache's part is usage.prompt_tokens_details.cached_tokens"))
        if salt is not None and g[0] > 0 and w[0] == 0:
            raise CheckFailed(one_line(f"{desc} returned {g}, expected {w}: the first salted prompt hit {g[0]} tokens "
                                       "cached without a salt, so the cache_salt never reached the server; put "
                                       '"cache_salt" in the JSON body'))
        raise CheckFailed(one_line(f"{desc} returned {g}, expected {w} (cached tokens as LLM('tiny-llama', "
                                   "prefix_cache='radix') reports them, one request at a time)"))
    return sum(sum(w) for w, _ in want)


@ex73.check("a shared-prefix trace, with and without a cache_salt, on ServerThread('tiny-llama', prefix_cache='radix')")
def _radix(learner: Learner) -> str:
    fn = learner.get("cached_tokens")
    want = reference()
    hits = compare(serve_cases(fn, "radix"), want, "ServerThread('tiny-llama', prefix_cache='radix')")
    assert hits > 0, "the trace has no cache hits: it no longer exercises the cache"
    return f"{sum(len(p) for p, _ in CASES)} requests: the cached tokens the offline engine reports"


@ex73.check("an HTTP error (a model the server does not serve: 404) raises instead of returning numbers")
def _http_error(learner: Learner) -> str:
    from minikv.serve import ServerThread

    fn = learner.get("cached_tokens")
    with ServerThread("tiny-llama", prefix_cache="radix", **OPTIONS) as srv:
        try:
            got = fn(srv.base_url, "no-such-model", [SYSTEM])
        except NotImplementedError:
            raise
        except Exception:  # noqa: BLE001 - any exception will do: the caller must not get numbers
            return "a 404 raises"
    raise CheckFailed(one_line(f"cached_tokens(srv.base_url, 'no-such-model', [...]) returned {got!r}, but the server "
                               "answered HTTP 404 with an error body: call response.raise_for_status()"))


def chapter04_cache(learner: Learner) -> tuple[Any, str]:
    """The learner's chapter-04 TreePrefixCache (minikv's pieces where theirs are not done), and a note."""
    from minikv.grade import layout
    from minikv.grade.checks.ch04.prefix_cache import _tree_prefix_cache
    from minikv.grade.runner import Learner as L

    here = Path(getattr(learner.module, "__file__", "") or "")
    sibling = here.with_name("ch04_radix_tree.py") if here.name else None
    path = sibling if sibling is not None and sibling.is_file() else layout.impl_path("ch04_radix_tree", layout.default_impl())
    try:
        module = layout.load_file(path)
    except Exception as exc:  # noqa: BLE001 - the learner's chapter-04 file does not import
        from minikv.prefix import RadixCache

        return (lambda n, bs: RadixCache(n, bs)), f" (with minikv's RadixCache: {layout.relative(path)} does not import: {describe_exception(exc)})"
    cls, note = _tree_prefix_cache(L(module, {}, layout.relative(path)))
    return (lambda n, bs: cls(n, bs)), note


@ex73.check("your chapter-04 TreePrefixCache behind the server, measured with your client", final=True, engine=True)
def _your_tree(learner: Learner) -> str:
    fn = learner.get("cached_tokens")
    factory, note = chapter04_cache(learner)
    want = reference()
    try:
        got = serve_cases(fn, factory)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as exc:  # noqa: BLE001 - the tree raised inside the engine
        raise CheckFailed(one_line(f"ServerThread('tiny-llama') with your TreePrefixCache: your code raised "
                                   f"{describe_exception(exc)}")) from exc
    hits = compare(got, want, "ServerThread('tiny-llama', prefix_cache=<your TreePrefixCache>)")
    return (f"{sum(len(p) for p, _ in CASES)} requests over HTTP match minikv's prefix_cache='radix': the same "
            f"{hits} cached tokens, with your TreePrefixCache and your cached_tokens{note}")

"""Exercise 7.4, hit rate between two /metrics scrapes: the learner's ``hit_rate_between`` against
:func:`minikv.bench.scrape.hit_rate_between` on hand-written scrapes (one rule each) and on real ones of
``ServerThread("tiny-llama", prefix_cache="radix")`` taken before and after shared-prefix traffic."""

from __future__ import annotations

from typing import Any

from minikv.bench.scrape import counter_totals
from minikv.bench.scrape import hit_rate_between as ref_hit_rate
from minikv.grade import memo
from minikv.grade.checks.ch07.detok import MODULE
from minikv.grade.compare import CheckFailed, call, one_line
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner

ex74 = register(Exercise(
    "7.4", "hit rate between two /metrics scrapes", MODULE, ("hit_rate_between",),
    hint="sum each sample's value by sample.name over text_string_to_metric_families(text); then "
         "(hits_after - hits_before) / (queries_after - queries_before) with the *_prefix_cache_hits_total and "
         "*_prefix_cache_queries_total samples; 0.0 when the queries did not grow",
))


def scrape(hits: float, queries: float, prompt: float, models: tuple[str, ...] = ("m",), prefix: str = "minikv:",
           created: bool = False) -> str:
    """A /metrics text as the server writes it (HELP, TYPE, one sample per model_name), values split over models."""
    lines = []
    for name, value, doc in (("prefix_cache_queries", queries, "Prompt tokens looked up in the prefix cache."),
                             ("prefix_cache_hits", hits, "Prompt tokens found in the prefix cache."),
                             ("prompt_tokens", prompt, "Prompt tokens of the requests that started.")):
        lines += [f"# HELP {prefix}{name}_total {doc}", f"# TYPE {prefix}{name}_total counter"]
        for k, model in enumerate(models):
            share = value / len(models) if k < len(models) - 1 else value - value / len(models) * (len(models) - 1)
            lines.append(f'{prefix}{name}_total{{model_name="{model}"}} {float(share)}')
            if created:
                lines.append(f'{prefix}{name}_created{{model_name="{model}"}} 1.7e9')
    lines += [f"# HELP {prefix}num_requests_running Requests in the running batch.",
              f"# TYPE {prefix}num_requests_running gauge", f'{prefix}num_requests_running{{model_name="m"}} 2.0']
    return "\n".join(lines) + "\n"


def expect_rate(fn: Any, before: str, after: str, what: str, prefix: str | None = None) -> float:
    args = (before, after) + ((prefix,) if prefix is not None else ())
    desc = f"hit_rate_between(<{what}: before>, <after>" + (f", prefix={prefix!r}" if prefix is not None else "") + ")"
    got = call(fn, *args, context=desc)
    want = ref_hit_rate(*args)
    if isinstance(got, (int, float)) and not isinstance(got, bool) and abs(got - want) <= 1e-9:
        return want
    p = prefix or "minikv:"
    b, a = counter_totals(before), counter_totals(after)
    hits, queries, prompt = (p + n for n in ("prefix_cache_hits_total", "prefix_cache_queries_total", "prompt_tokens_total"))
    guesses = []
    if a.get(queries):
        guesses.append(("the after scrape's totals, the hit rate since the server started; subtract the before "
                        "scrape's counters first", a.get(hits, 0.0) / a[queries]))
    d_prompt = a.get(prompt, 0.0) - b.get(prompt, 0.0)
    if d_prompt:
        guesses.append((f"Δ hits / Δ {prompt}; the denominator is {queries}, the tokens the cache was asked about",
                        (a.get(hits, 0.0) - b.get(hits, 0.0)) / d_prompt))
    for text, value in guesses:
        if isinstance(got, (int, float)) and abs(got - value) <= 1e-9 and abs(value - want) > 1e-9:
            raise CheckFailed(one_line(f"{desc} returned {got:.4g}, expected {want:.4g}: looks like {text}"))
    raise CheckFailed(one_line(f"{desc} returned {got!r}, expected {want:.4g} (Δ hits {a.get(hits, 0.0) - b.get(hits, 0.0):g}"
                               f" / Δ queries {a.get(queries, 0.0) - b.get(queries, 0.0):g})"))


@ex74.check("a busy server's counters and the docstring's example: the deltas, not the totals")
def _deltas(learner: Learner) -> None:
    fn = learner.get("hit_rate_between")
    expect_rate(fn, scrape(300, 1000, 1100), scrape(600, 1400, 1600), "a busy server")
    expect_rate(fn, "minikv:prefix_cache_hits_total 100.0\nminikv:prefix_cache_queries_total 400.0\n",
                "minikv:prefix_cache_hits_total 250.0\nminikv:prefix_cache_queries_total 600.0\n", "the docstring's")


@ex74.check("label sets summed, _created samples, nothing queried, vLLM's prefix")
def _hand(learner: Learner) -> str:
    fn = learner.get("hit_rate_between")
    expect_rate(fn, scrape(30, 90, 90, models=("a", "b")), scrape(130, 190, 260, models=("a", "b")),
                "two model_name label sets")
    expect_rate(fn, scrape(30, 90, 90, created=True), scrape(80, 190, 200, created=True), "counters with _created samples")
    expect_rate(fn, scrape(10, 50, 50), scrape(10, 50, 50), "nothing in between")
    expect_rate(fn, scrape(5, 40, 40, prefix="vllm:"), scrape(45, 120, 130, prefix="vllm:"), "vLLM's names", prefix="vllm:")
    return "the hit rate of what happened between the scrapes"


def real_scrapes() -> list[tuple[str, str]]:
    """(before, after) /metrics texts of a radix server around three rounds of shared-prefix requests."""
    import httpx

    from minikv.grade.checks.ch07.http_cache import OPTIONS, SYSTEM
    from minikv.serve import ServerThread

    def run() -> list[tuple[str, str]]:
        pairs = []
        with ServerThread("tiny-llama", prefix_cache="radix", **OPTIONS) as srv:
            rounds = [[SYSTEM + "Q: green tea?", SYSTEM + "Q: mint?"], [SYSTEM + "Q: green tea?"] * 2,
                      ["nothing shared here at all, a stranger"]]
            before = httpx.get(srv.url + "/metrics", timeout=30).text
            for prompts in rounds:
                for p in prompts:
                    httpx.post(srv.base_url + "/completions", timeout=60,
                               json={"model": srv.model_name, "prompt": p, "max_tokens": 1}).raise_for_status()
                after = httpx.get(srv.url + "/metrics", timeout=30).text
                pairs.append((before, after))
                before = after
        return pairs

    return memo.once("ch07:scrapes", run)


@ex74.check("real scrapes of ServerThread('tiny-llama', prefix_cache='radix') around each round of requests")
def _real(learner: Learner) -> str:
    fn = learner.get("hit_rate_between")
    rates = [expect_rate(fn, b, a, f"round {i + 1}") for i, (b, a) in enumerate(real_scrapes())]
    return "hit rate per round " + ", ".join(f"{r:.0%}" for r in rates)

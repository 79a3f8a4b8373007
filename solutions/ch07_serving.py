"""Chapter 07: serving (see chapters/07_serving.ipynb).

Exercises 7.1-7.4. What a server adds around the engine, and how to measure
it from the outside: stream text as tokens come without ever sending half a
character or a piece of a stop string (7.1); turn the arrival times of a
stream's chunks into the latency numbers every serving benchmark reports
(7.2); read the prefix cache's work over HTTP, the way a client sees it, and
serve your own chapter-04 radix tree behind minikv's OpenAI-compatible server
(7.3); and the server's hit rate over a run from two ``/metrics`` scrapes
(7.4). Check your work with ``minikv grade --chapter 7``, or
``minikv.grade.check("7.1")`` in the notebook.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from minikv.bench.latency import StreamLatency

REPLACEMENT = "\ufffd"  # what decoding gives for an unfinished UTF-8 character


class StreamDetokenizer:
    """Exercise 7.1: incremental detokenization with stop strings.

    The engine generates token ids one step at a time; the client should see
    text as soon as it is safe to show. ``push(ids)`` adds generated ids,
    ``take()`` returns the text not given out yet that is safe to give, and
    ``take(finished=True)`` (once, at the end) gives the rest. Joined, the
    pieces ``take`` returns are always a prefix of the final :attr:`text`,
    and at the end they are all of it.

    ``push(token_ids) -> bool`` (whether a stop string has appeared), one
    token at a time, in order, ignoring every token once stopped:

    1. append the token to :attr:`ids` and decode **all** of them,
       ``full = self.tokenizer.decode(self.ids, skip_special_tokens=True)``;
    2. if ``full`` ends with ``"\\ufffd"`` (U+FFFD: the last character's bytes
       are not all there yet), or is no longer than :attr:`text` (a special
       token decodes to nothing), keep waiting: nothing changes;
    3. else ``full`` becomes :attr:`text`, and the stop strings are looked
       for in the new part: each stop string's first occurrence that ends
       after the old text's end (it may begin inside the old text: a stop
       string can span tokens); if any, the one that begins earliest wins,
       :attr:`text` is cut just before it (just after it when
       ``include_stop_str_in_output``) and :attr:`stop_reason` is set to it.

    ``take(finished=False) -> str``: the characters of :attr:`text` after
    those already given (:attr:`sent`), **except** the last
    :attr:`holdback` ones, which could still turn out to begin a stop string
    (``len(longest stop) - 1``; 0 with ``include_stop_str_in_output`` or
    without stop strings). Once stopped, or when ``finished``, nothing is held
    back; ``finished`` first decodes what is left (like step 3, even if it
    ends with U+FFFD: the request is over and that is what it produced).

    (The engine, :class:`minikv.engine.detokenizer.IncrementalDetokenizer`,
    decodes only a short window of recent tokens instead of all of them, as
    vLLM does; the pieces come out the same.)

    >>> class Bytes:  # token i is byte i
    ...     def decode(self, ids, skip_special_tokens=True):
    ...         return bytes(ids).decode("utf-8", errors="replace")
    >>> d = StreamDetokenizer(Bytes(), stop=["END"])
    >>> ids = list("é!".encode())            # "é" is two bytes
    >>> d.push(ids[:1]), d.take()             # half a character: nothing yet
    (False, '')
    >>> d.push(ids[1:]), d.take()             # "é!" is whole, but the last 2 characters wait (len("END") - 1)
    (False, '')
    >>> d.push(list(b"ab")), d.take()
    (False, 'é!')
    >>> d.push(list(b"ENDzz")), d.take(finished=True), d.text, d.stop_reason
    (True, 'ab', 'é!ab', 'END')
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str] = (), include_stop_str_in_output: bool = False) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.include_stop = include_stop_str_in_output
        self.ids: list[int] = []
        self.text = ""  # whole characters decoded so far (cut at a stop string once one appears)
        self.sent = 0  # characters of text already given out by take
        self.stop_reason: str | None = None
        # holdback: how many of the text's last characters take() keeps back while the request runs
        ### BEGIN SOLUTION
        self.holdback = 0 if include_stop_str_in_output else max((len(s) for s in self.stop), default=1) - 1
        ### END SOLUTION

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def push(self, token_ids: Sequence[int]) -> bool:
        """Add generated token ids; True once a stop string has appeared."""
        ### BEGIN SOLUTION
        for token in token_ids:
            if self.stopped:
                break
            self.ids.append(int(token))
            full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            if full.endswith(REPLACEMENT) or len(full) <= len(self.text):
                continue
            self._grow(full)
        return self.stopped
        ### END SOLUTION

    def _grow(self, full: str) -> None:
        """``full`` becomes the text; cut it at the earliest stop string that ends in the new part."""
        ### BEGIN SOLUTION
        start = len(self.text)
        self.text = full
        best = None
        for s in self.stop:
            i = full.find(s, max(0, start - len(s) + 1))
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        if best is not None:
            i, s = best
            self.text = full[:i + len(s)] if self.include_stop else full[:i]
            self.stop_reason = s
        ### END SOLUTION

    def take(self, finished: bool = False) -> str:
        """The text not given out yet that is safe to give (all of it when ``finished`` or stopped)."""
        ### BEGIN SOLUTION
        if finished and not self.stopped:
            full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            if len(full) > len(self.text):
                self._grow(full)
        end = len(self.text) if finished or self.stopped else max(self.sent, len(self.text) - self.holdback)
        piece, self.sent = self.text[self.sent:end], max(self.sent, end)
        return piece
        ### END SOLUTION


def percentile(xs: Sequence[float], q: float) -> float:
    """Exercise 7.2: a stream's latency numbers.

    Part 1, ``percentile(xs, q)``: the ``q``-th percentile (0..100) of ``xs``
    by linear interpolation between closest ranks (numpy's default, what
    vLLM's and SGLang's benchmarks report): sort ``xs``, take the position
    ``pos = (len(xs) - 1) * q / 100`` and interpolate between the values at
    ``floor(pos)`` and the next one. ``nan`` (``float("nan")``) for no data.

    Part 2 is :func:`stream_latency`.

    >>> percentile([4.0, 1.0, 3.0, 2.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 90), percentile([5.0], 99)
    (2.5, 3.7, 5.0)
    """
    ### BEGIN SOLUTION
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
    ### END SOLUTION


def stream_latency(sent_at: float, chunk_times: Sequence[float], num_tokens: int) -> StreamLatency:
    """Exercise 7.2: a stream's latency numbers (part 2).

    ``sent_at``: when the request went out; ``chunk_times``: when each
    Server-Sent Events chunk that carried text arrived (at least one, in
    order); ``num_tokens``: the request's output tokens
    (``usage.completion_tokens``; a chunk may carry several). Return
    ``StreamLatency(ttft, e2e, tpot, itl)``, in seconds:

    * ``ttft``, time to first token: the first chunk minus ``sent_at``;
    * ``e2e``, end to end: the last chunk minus ``sent_at``;
    * ``itl``, inter-token latencies: the gaps between successive chunks
      (``len(chunk_times) - 1`` of them; the wait for the first chunk is
      the TTFT, not an ITL);
    * ``tpot``, time per output token after the first:
      ``(e2e - ttft) / (num_tokens - 1)``, ``None`` when ``num_tokens < 2``.

    >>> lat = stream_latency(10.0, [10.5, 10.6, 10.8, 11.0], num_tokens=5)
    >>> round(lat.ttft, 3), round(lat.e2e, 3), [round(g, 3) for g in lat.itl], round(lat.tpot, 3)
    (0.5, 1.0, [0.1, 0.2, 0.2], 0.125)
    """
    ### BEGIN SOLUTION
    ttft = chunk_times[0] - sent_at
    e2e = chunk_times[-1] - sent_at
    itl = [b - a for a, b in zip(chunk_times, chunk_times[1:])]
    tpot = (e2e - ttft) / (num_tokens - 1) if num_tokens > 1 else None
    return StreamLatency(ttft, e2e, tpot, itl)
    ### END SOLUTION


def cached_tokens(base_url: str, model: str, prompts: Sequence[str], cache_salt: str | None = None) -> list[int]:
    """Exercise 7.3: cached tokens over HTTP.

    Send each prompt, one after the other, to the OpenAI-compatible server at
    ``base_url`` (``"http://127.0.0.1:PORT/v1"``) as ``POST
    {base_url}/completions`` with the JSON body ``{"model": model, "prompt":
    prompt, "max_tokens": 1, "temperature": 0}`` plus ``"cache_salt":
    cache_salt`` when it is not None (vLLM's field: requests with different
    salts never share cached blocks). Return, for each prompt, the prompt
    tokens the server's prefix cache supplied: the response's
    ``usage.prompt_tokens_details.cached_tokens`` (OpenAI's field). Raise on
    an HTTP error (``response.raise_for_status()``). Use ``httpx.post`` with
    a timeout of a minute.

    The grader then serves your chapter-04 radix tree (``TreePrefixCache``)
    behind the server and checks the same trace with your function.

    >>> # cached_tokens(srv.base_url, srv.model_name, [system + "Hi.", system + "Bye."])  ->  [0, 48] or so
    """
    ### BEGIN SOLUTION
    out = []
    for prompt in prompts:
        body: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0}
        if cache_salt is not None:
            body["cache_salt"] = cache_salt
        response = httpx.post(f"{base_url}/completions", json=body, timeout=60.0)
        response.raise_for_status()
        out.append(int(response.json()["usage"]["prompt_tokens_details"]["cached_tokens"]))
    return out
    ### END SOLUTION


def hit_rate_between(before: str, after: str, prefix: str = "minikv:") -> float:
    """Exercise 7.4: hit rate between two /metrics scrapes.

    ``before`` and ``after`` are two texts of a server's ``GET /metrics``
    (Prometheus' text format). Its counters count from the server's start;
    return the prefix cache's hit rate **between** the two scrapes:

        (hits after - hits before) / (queries after - queries before)

    with hits the ``{prefix}prefix_cache_hits_total`` sample and queries the
    ``{prefix}prefix_cache_queries_total`` sample (both in prompt tokens;
    vLLM's are named ``vllm:...``), each summed over its label sets (one per
    ``model_name``). Return 0.0 when no tokens were queried in between.
    Parse with ``prometheus_client.parser.text_string_to_metric_families``:
    each family has ``.samples``, each sample a ``.name``, ``.labels`` and
    ``.value``.

    >>> before = 'minikv:prefix_cache_hits_total 100.0\\nminikv:prefix_cache_queries_total 400.0\\n'
    >>> after = 'minikv:prefix_cache_hits_total 250.0\\nminikv:prefix_cache_queries_total 600.0\\n'
    >>> hit_rate_between(before, after)
    0.75
    """
    ### BEGIN SOLUTION
    def totals(text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
        return out

    b, a = totals(before), totals(after)
    hits, queries = prefix + "prefix_cache_hits_total", prefix + "prefix_cache_queries_total"
    d_queries = a.get(queries, 0.0) - b.get(queries, 0.0)
    return (a.get(hits, 0.0) - b.get(hits, 0.0)) / d_queries if d_queries > 0 else 0.0
    ### END SOLUTION

"""Seeded synthetic request traces: the sharing patterns that make prefix caching pay.

A trace is a list of prompts, each a list of token ids, in arrival order.
Nothing here needs a tokenizer or a model: token ids are drawn at random from
``range(vocab)``, and what matters is *which prompts share which prefixes*.
Each generator's docstring says exactly what its prompts share.

Every fresh segment (a system prompt, a question, a message, an example)
starts with a token no earlier segment of the same trace started with (while
the vocabulary lasts), so two prompts share exactly the documented prefix and
never one more token by accident. The same arguments and ``seed`` always give
the same trace.

Lengths are an ``int`` or an inclusive ``(low, high)`` range drawn per segment.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from minikv.errors import InvalidRequestError

Trace = list[list[int]]
"""Prompts as token-id lists, in arrival order."""

Length = int | tuple[int, int]
"""A segment length: exact, or an inclusive ``(low, high)`` range drawn per segment."""

VOCAB = 49152
"""SmolLM2's vocabulary size: the default range of token ids."""


class _Segments:
    """Random token segments whose first tokens all differ (while the vocabulary lasts)."""

    def __init__(self, seed: int, vocab: int) -> None:
        if vocab < 1:
            raise InvalidRequestError(f"vocab must be >= 1, got {vocab}")
        self.rng = random.Random(seed)
        self.vocab = vocab
        self._population = range(vocab)
        self._heads: set[int] = set()

    def length(self, spec: Length, what: str) -> int:
        if isinstance(spec, int):
            lo = hi = spec
        else:
            lo, hi = spec
        if not 0 <= lo <= hi:
            raise InvalidRequestError(f"{what} must be >= 0 (or a range low <= high), got {spec!r}")
        return lo if lo == hi else self.rng.randint(lo, hi)

    def __call__(self, spec: Length, what: str = "a length") -> list[int]:
        toks = self.rng.choices(self._population, k=self.length(spec, what))
        if toks and len(self._heads) < self.vocab:
            while toks[0] in self._heads:
                toks[0] = self.rng.randrange(self.vocab)
            self._heads.add(toks[0])
        return toks


def _positive(**kw: int) -> None:
    for name, v in kw.items():
        if v < 1:
            raise InvalidRequestError(f"{name} must be >= 1, got {v}")


def system_prompt_trace(
    n: int,
    system_len: Length = 500,
    question_len: Length = (16, 96),
    vocab: int = VOCAB,
    seed: int = 0,
) -> Trace:
    """``n`` prompts: one system prompt shared by all, then a unique question each.

    Shares: every prompt starts with the same ``system_len`` tokens, and two
    prompts share nothing beyond them. An infinite cache misses the first
    prompt entirely and hits the system prompt in every later one.
    """
    seg = _Segments(seed, vocab)
    system = seg(system_len, "system_len")
    return [system + seg(question_len, "question_len") for _ in range(n)]


def multi_turn_trace(
    n_conversations: int,
    turns: int,
    user_len: Length = (16, 64),
    reply_len: Length = (32, 128),
    system_len: Length = 0,
    vocab: int = VOCAB,
    seed: int = 0,
    interleave: str = "random",
) -> Trace:
    """Chat: ``n_conversations * turns`` prompts, conversations interleaved at random (or in rounds).

    Turn ``t`` of a conversation is ``system + u1 + r1 + ... + r(t-1) + ut``:
    the whole previous prompt, the model's reply to it, and a new user
    message. Shares: each turn's prompt extends the same conversation's
    previous prompt (a cache of prompts misses the reply ``r(t-1)``, which
    only an engine that also caches generated tokens would hold); with
    ``system_len > 0`` all conversations also share a system prompt.
    Turns of one conversation arrive in order; which conversation speaks next
    is drawn uniformly among those with turns left (``interleave="random"``),
    or every conversation speaks once per round, always in the same order
    (``"round-robin"``: each conversation comes back after all the others,
    the loop that makes an LRU cache smaller than the conversations thrash).
    """
    _positive(turns=turns)
    if interleave not in ("random", "round-robin"):
        raise InvalidRequestError(f"interleave must be 'random' or 'round-robin', got {interleave!r}")
    seg = _Segments(seed, vocab)
    system = seg(system_len, "system_len")
    history = [list(system) for _ in range(n_conversations)]
    left = [turns] * n_conversations
    active = list(range(n_conversations))
    trace: Trace = []
    if interleave == "round-robin":
        for t in range(turns):
            for c in range(n_conversations):
                if t:
                    history[c] += seg(reply_len, "reply_len")
                history[c] += seg(user_len, "user_len")
                trace.append(list(history[c]))
        return trace
    while active:
        k = seg.rng.randrange(len(active))
        c = active[k]
        if left[c] < turns:
            history[c] += seg(reply_len, "reply_len")
        history[c] += seg(user_len, "user_len")
        trace.append(list(history[c]))
        left[c] -= 1
        if not left[c]:
            active[k] = active[-1]
            active.pop()
    return trace


def few_shot_trace(
    n: int,
    n_examples_pool: int = 64,
    shots: int = 8,
    n_orders: int = 4,
    example_len: Length = (32, 96),
    question_len: Length = (16, 64),
    header_len: Length = 64,
    vocab: int = VOCAB,
    seed: int = 0,
) -> Trace:
    """``n`` few-shot prompts: ``header + shots examples + question``.

    A pool of ``n_examples_pool`` examples is drawn once; ``n_orders`` fixed
    orders each pick ``shots`` distinct examples of the pool in a random
    order; each prompt uses one order (uniformly at random) and a unique
    question. Shares: all prompts share the instruction header; prompts with
    the same order share the header and all their examples; prompts with
    different orders share the header plus the leading examples the two
    orders happen to have in common.
    """
    _positive(n_examples_pool=n_examples_pool, n_orders=n_orders)
    if not 0 <= shots <= n_examples_pool:
        raise InvalidRequestError(
            f"shots must be between 0 and n_examples_pool={n_examples_pool}, got {shots}"
        )
    seg = _Segments(seed, vocab)
    header = seg(header_len, "header_len")
    pool = [seg(example_len, "example_len") for _ in range(n_examples_pool)]
    orders = [seg.rng.sample(range(n_examples_pool), shots) for _ in range(n_orders)]
    prefixes = [header + [t for i in order for t in pool[i]] for order in orders]
    return [
        prefixes[seg.rng.randrange(n_orders)] + seg(question_len, "question_len")
        for _ in range(n)
    ]


def shuffled_few_shot_trace(
    n: int,
    n_groups: int = 4,
    preamble_len: Length = 1024,
    question_len: Length = (16, 64),
    header_len: Length = 0,
    vocab: int = VOCAB,
    seed: int = 0,
) -> Trace:
    """``n`` prompts in ``n_groups`` groups, each group one long few-shot preamble, shuffled.

    Prompt ``i`` is ``header + preambles[g] + question``: ``n_groups``
    preambles of ``preamble_len`` tokens (think: one set of examples per
    task), a unique question each. Groups are as equal as they can be
    (``n // n_groups`` or one more) and arrive in a random order, so
    first-come-first-served interleaves them: with a cache that holds about
    one preamble, most prompts find another group's preamble there and miss,
    while an order that serves a group together hits on all but its first.
    Shares: all prompts share ``header``; a group shares its preamble;
    different groups share nothing else. The group of prompt ``i`` is
    ``shuffled_few_shot_groups(n, n_groups, seed)[i]``.

    >>> t = shuffled_few_shot_trace(8, n_groups=2, preamble_len=4, question_len=1, vocab=100)
    >>> [p[:4] == t[0][:4] for p in t]
    [True, False, True, False, True, True, False, False]
    """
    _positive(n_groups=n_groups)
    seg = _Segments(seed, vocab)
    header = seg(header_len, "header_len")
    preambles = [header + seg(preamble_len, "preamble_len") for _ in range(n_groups)]
    groups = shuffled_few_shot_groups(n, n_groups, seed)
    return [preambles[g] + seg(question_len, "question_len") for g in groups]


def shuffled_few_shot_groups(n: int, n_groups: int = 4, seed: int = 0) -> list[int]:
    """The group of each prompt of :func:`shuffled_few_shot_trace` with that ``n``, ``n_groups``, ``seed``.

    >>> shuffled_few_shot_groups(8, n_groups=2)
    [1, 0, 1, 0, 1, 1, 0, 0]
    """
    _positive(n_groups=n_groups)
    groups = [i % n_groups for i in range(n)]
    random.Random(f"groups-{seed}").shuffle(groups)
    return groups


def branching_trace(
    n_trees: int = 1,
    branches: int = 3,
    depth: int = 3,
    root_len: Length = 512,
    step_len: Length = (32, 128),
    order: str = "bfs",
    vocab: int = VOCAB,
    seed: int = 0,
) -> Trace:
    """Tree of thought / agents: each of ``n_trees`` roots grows ``branches`` children per node.

    A tree's first request is its root prompt (``root_len`` tokens); every
    other node's prompt is its parent's prompt plus a new step, down to
    ``depth`` levels below the root (``1 + b + ... + b**depth`` prompts a
    tree). ``order="bfs"`` sends a tree level by level (tree-of-thought
    search), ``"dfs"`` one branch to the bottom before the next (an agent
    backtracking). Trees are interleaved request by request. Shares: a
    prompt extends its parent's prompt, siblings share their parent's
    prompt, and different trees share nothing.
    """
    _positive(branches=branches)
    if depth < 0:
        raise InvalidRequestError(f"depth must be >= 0, got {depth}")
    if order not in ("bfs", "dfs"):
        raise InvalidRequestError(f"order must be 'bfs' or 'dfs', got {order!r}")
    seg = _Segments(seed, vocab)
    per_tree: list[Trace] = []
    for _ in range(n_trees):
        prompts: Trace = []
        frontier = deque([(seg(root_len, "root_len"), 0)])
        while frontier:
            prompt, level = frontier.popleft() if order == "bfs" else frontier.pop()
            prompts.append(prompt)
            if level < depth:
                kids = [(prompt + seg(step_len, "step_len"), level + 1) for _ in range(branches)]
                frontier.extend(kids if order == "bfs" else reversed(kids))
        per_tree.append(prompts)
    return _interleave(per_tree)


def _interleave(traces: list[Trace]) -> Trace:
    """One prompt of each trace in turn, skipping traces that ran out."""
    longest = max(map(len, traces), default=0)
    return [t[i] for i in range(longest) for t in traces if i < len(t)]


def skewed_trace(
    n: int,
    n_prefixes: int = 100,
    prefix_len: Length = (256, 1024),
    suffix_len: Length = (16, 64),
    alpha: float = 1.0,
    vocab: int = VOCAB,
    seed: int = 0,
) -> Trace:
    """``n`` prompts ``prefix + unique suffix``, prefixes drawn with Zipf popularity.

    Prefix ``i`` (0-based) is picked with probability proportional to
    ``(i + 1) ** -alpha``: with ``alpha = 1`` and 100 prefixes the most
    popular is asked for about 19% of the time, the least 0.2%. Shares:
    prompts with the same prefix share it, nothing else. The skew is what
    separates eviction policies when the cache is too small (LRU vs LFU).
    """
    _positive(n_prefixes=n_prefixes)
    if alpha < 0:
        raise InvalidRequestError(f"alpha must be >= 0, got {alpha}")
    seg = _Segments(seed, vocab)
    prefixes = [seg(prefix_len, "prefix_len") for _ in range(n_prefixes)]
    weights = [(i + 1) ** -alpha for i in range(n_prefixes)]
    picks = seg.rng.choices(range(n_prefixes), weights=weights, k=n)
    return [prefixes[i] + seg(suffix_len, "suffix_len") for i in picks]


TRACE_KINDS: dict[str, Callable[[int, int, int], Trace]] = {
    "system": lambda n, vocab, seed: system_prompt_trace(n, vocab=vocab, seed=seed),
    "multi-turn": lambda n, vocab, seed: multi_turn_trace(
        -(-n // 10), 10, vocab=vocab, seed=seed
    )[:n],
    "few-shot": lambda n, vocab, seed: few_shot_trace(n, vocab=vocab, seed=seed),
    "branching": lambda n, vocab, seed: branching_trace(
        -(-n // 121), branches=3, depth=4, vocab=vocab, seed=seed
    )[:n],
    "skewed": lambda n, vocab, seed: skewed_trace(n, vocab=vocab, seed=seed),
    "shuffled-few-shot": lambda n, vocab, seed: shuffled_few_shot_trace(n, vocab=vocab, seed=seed),
}
"""Each kind with its default shape, as ``(n_requests, vocab, seed) -> trace`` of that many prompts.

``multi-turn``: conversations of 10 turns; ``branching``: trees of 3 branches,
4 levels deep (121 prompts a tree); ``shuffled-few-shot``: 4 groups of 1,024-token preambles.
"""


def make_trace(kind: str, n_requests: int, vocab: int = VOCAB, seed: int = 0) -> Trace:
    """``n_requests`` prompts of one of :data:`TRACE_KINDS`, with its default shape.

    >>> len(make_trace("multi-turn", 25, seed=1))
    25
    """
    try:
        fn = TRACE_KINDS[kind]
    except (KeyError, TypeError):
        choices = ", ".join(repr(k) for k in TRACE_KINDS)
        raise InvalidRequestError(f"unknown trace {kind!r}; choose one of {choices}") from None
    return fn(n_requests, vocab, seed)


__all__ = [
    "TRACE_KINDS",
    "VOCAB",
    "Length",
    "Trace",
    "branching_trace",
    "few_shot_trace",
    "make_trace",
    "multi_turn_trace",
    "shuffled_few_shot_groups",
    "shuffled_few_shot_trace",
    "skewed_trace",
    "system_prompt_trace",
]

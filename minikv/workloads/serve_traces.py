"""Text workloads for benchmarking a server over HTTP: shared prefixes, as chat conversations.

A server benchmark sends *text* (any OpenAI-compatible endpoint tokenizes
it itself), so these workloads are words, not token ids
(:mod:`minikv.workloads.traces` is the token-id side). Lengths are counted
in words drawn from a list of short common English words, which a BPE
tokenizer such as SmolLM2's turns into about one token each (a little more
with punctuation); defaults are scaled so that a 2-core CPU serving
SmolLM2-135M finishes a run in seconds to a minute.

A workload is a list of :class:`Conversation`: a system prompt (or none)
and one or more user turns. A single-turn workload is conversations of one
turn; in ``multi-turn`` each next turn is sent with the server's real
previous answers in between (:meth:`Conversation.messages`), as a chat
client would. The same arguments and seed always give the same workload.

- ``system-prompt``: one long system prompt, a different short question per
  request (a chat product's traffic).
- ``multi-turn``: ``groups`` conversations of ``turns`` turns, each turn's
  prompt holds the whole conversation so far.
- ``few-shot``: ``groups`` few-shot preambles (``shots`` question/answer
  examples each), a new question after one of them per request.
- ``prefix-repetition``: the shape of vLLM's ``prefix_repetition`` dataset
  (``vllm/benchmarks/datasets``; its defaults are 10 prefixes of 256 tokens,
  suffixes of 256 tokens, 128 output tokens, the requests shuffled):
  ``groups`` prefixes of ``shared_len`` words, each continued by different
  suffixes of ``unique_len`` words, in a shuffled order.
- ``generated-shared-prefix``: the shape of SGLang's ``bench_serving``
  ``generated-shared-prefix`` dataset (``--gsp-num-groups`` 64,
  ``--gsp-prompts-per-group`` 16, ``--gsp-system-prompt-len`` 2048,
  ``--gsp-question-len`` 128, ``--gsp-output-len`` 256 by default; each prompt
  is the group's system prompt, a blank line, then the question, shuffled):
  ``groups`` groups of questions, each prompt one text that starts with its
  group's system prompt.

>>> w = make_workload("system-prompt", num_requests=3, shared_len=20, seed=1)
>>> len(w), len({c.system for c in w}), len({c.turns[0] for c in w})
(3, 1, 3)
>>> w == make_workload("system-prompt", num_requests=3, shared_len=20, seed=1)
True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable

from minikv.errors import InvalidRequestError

Length = int | tuple[int, int]
"""A length in words: exact, or an inclusive ``(low, high)`` range drawn per piece of text."""

WORDS = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city community name "
    "team minute idea kid body information back parent face others level office door health person art war "
    "history party result change morning reason research girl guy moment air teacher force education good new "
    "first last long great little own other old big high different small large next early young important few "
    "public bad same able make know take see come think look want give use find tell ask seem feel try leave "
    "call keep let begin help show hear play run move live believe bring happen write provide sit stand lose "
    "pay meet include continue set learn lead understand watch follow stop create speak read spend grow open "
    "walk win offer remember love consider appear buy wait serve die send expect build stay fall cut reach"
).split()
"""Short common English words: most are one token with a leading space in a BPE vocabulary."""


@dataclass(frozen=True)
class Conversation:
    """One client's requests: ``turns`` user messages, each sent once the answer to the one before is in.

    ``system``: the system message (``None``: none). ``group``: which shared
    prefix it uses (the system prompt, preamble or prefix number; the
    conversation number in ``multi-turn``), for reports and tests.
    """

    system: str | None
    turns: tuple[str, ...]
    max_tokens: int
    group: int = 0

    def messages(self, turn: int, answers: list[str]) -> list[dict[str, str]]:
        """The chat messages of request ``turn``: system, then each earlier turn and its real answer, then this turn.

        ``answers[j]`` is what the server answered to turn ``j``; it needs the
        ``turn`` answers before this one.

        >>> c = Conversation("Be brief.", ("Hi", "And then?"), max_tokens=8)
        >>> [m["role"] for m in c.messages(1, ["Hello!"])]
        ['system', 'user', 'assistant', 'user']
        >>> c.messages(1, ["Hello!"])[2]["content"]
        'Hello!'
        """
        if not 0 <= turn < len(self.turns):
            raise InvalidRequestError(f"turn must be in 0..{len(self.turns) - 1}, got {turn}")
        if len(answers) < turn:
            raise InvalidRequestError(f"turn {turn} needs the answers to the {turn} turns before it, "
                                      f"got {len(answers)}")
        out = [{"role": "system", "content": self.system}] if self.system is not None else []
        for j in range(turn):
            out += [{"role": "user", "content": self.turns[j]}, {"role": "assistant", "content": answers[j]}]
        return out + [{"role": "user", "content": self.turns[turn]}]


def render_prompt(messages: list[dict[str, str]]) -> str:
    """Chat messages as one plain-text prompt, for ``/v1/completions``.

    A lone user message is its text as it is (the prefix-repetition and
    shared-prefix shapes are plain prompts); otherwise each message is a
    ``Role: text`` paragraph and the prompt ends with ``Assistant:``. Two
    requests that share their first messages share the start of their prompts.

    >>> render_prompt([{"role": "user", "content": "2 + 2 ="}])
    '2 + 2 ='
    >>> render_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    'System: Be brief.\\n\\nUser: Hi\\n\\nAssistant:'
    """
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant:"


class _Words:
    """Seeded text: ``n`` words as sentences of 6 to 14 words, capitalised and full-stopped."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def length(self, spec: Length, what: str) -> int:
        lo, hi = (spec, spec) if isinstance(spec, int) else spec
        if isinstance(lo, bool) or not isinstance(lo, int) or not isinstance(hi, int) or not 0 <= lo <= hi:
            raise InvalidRequestError(f"{what} must be a whole number of words >= 0 or a range (low, high), "
                                      f"got {spec!r}")
        return lo if lo == hi else self.rng.randint(lo, hi)

    def __call__(self, spec: Length, what: str = "a length", end: str = ".") -> str:
        n = self.length(spec, what)
        words = self.rng.choices(WORDS, k=n)
        out, i = [], 0
        while i < n:
            k = min(n - i, self.rng.randint(6, 14))
            out.append(" ".join(words[i:i + k]).capitalize() + (end if i + k == n else "."))
            i += k
        return " ".join(out)


def _count(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidRequestError(f"{name} must be a whole number >= {low}, got {value!r}")
    return value


def system_prompt_workload(num_requests: int = 32, shared_len: Length = 384, unique_len: Length = (8, 24),
                           max_tokens: int = 32, seed: int = 0, **_: Any) -> list[Conversation]:
    """``num_requests`` one-turn conversations: the same system prompt of ``shared_len`` words, each its own question."""
    w = _Words(seed)
    system = ("You are the assistant of a help desk. Read the notes below, then answer the question in one short "
              "sentence. Notes: " + w(shared_len, "shared_len"))
    return [Conversation(system, (f"Question {i + 1}: {w(unique_len, 'unique_len', end='?')}",), max_tokens)
            for i in range(_count("num_requests", num_requests))]


def multi_turn_workload(num_requests: int = 32, groups: int | None = None, turns: int = 4,
                        shared_len: Length = 96, unique_len: Length = (8, 24), max_tokens: int = 32,
                        seed: int = 0, **_: Any) -> list[Conversation]:
    """Conversations of ``turns`` turns, ``num_requests`` turns in all (the last conversation may be shorter).

    Each conversation opens with its own message of ``shared_len`` words
    (a document to discuss) and goes on with follow-ups of ``unique_len``
    words; a short common system prompt. ``groups`` (default: as many as
    ``num_requests`` needs) fixes the number of conversations instead, then
    ``num_requests`` is ignored.
    """
    turns = _count("turns", turns)
    n = _count("groups", groups) * turns if groups is not None else _count("num_requests", num_requests)
    w = _Words(seed)
    system = "You are a patient tutor. Answer in two sentences at most."
    out = []
    for c in range(math.ceil(n / turns)):
        k = min(turns, n - c * turns)
        opening = f"Conversation {c + 1}. Here is my text: {w(shared_len, 'shared_len')} What is it about?"
        follow = [f"Follow-up {j}: {w(unique_len, 'unique_len', end='?')}" for j in range(1, k)]
        out.append(Conversation(system, (opening, *follow), max_tokens, group=c))
    return out


def few_shot_workload(num_requests: int = 32, groups: int = 2, shots: int = 8, shared_len: Length = (24, 40),
                      unique_len: Length = (8, 24), max_tokens: int = 32, seed: int = 0,
                      **_: Any) -> list[Conversation]:
    """One-turn prompts: one of ``groups`` preambles of ``shots`` Q/A examples (``shared_len`` words each), a new question.

    Request ``i`` uses preamble ``i % groups``; the order is shuffled.
    """
    groups, shots = _count("groups", groups), _count("shots", shots, low=0)
    w = _Words(seed)
    preambles = []
    for g in range(groups):
        examples = "".join(f"Q: {w((4, 12), 'question', end='?')}\nA: {w(shared_len, 'shared_len')}\n\n"
                           for _ in range(shots))
        preambles.append(f"Answer like the examples (set {g + 1}).\n\n{examples}")
    out = [Conversation(None, (f"{preambles[i % groups]}Q: {i + 1}. {w(unique_len, 'unique_len', end='?')}\nA:",),
                        max_tokens, group=i % groups) for i in range(_count("num_requests", num_requests))]
    w.rng.shuffle(out)
    return out


def prefix_repetition_workload(num_requests: int = 32, groups: int = 4, shared_len: Length = 256,
                               unique_len: Length = 32, max_tokens: int = 32, seed: int = 0,
                               **_: Any) -> list[Conversation]:
    """vLLM's prefix_repetition shape: ``groups`` prefixes, request ``i`` is prefix ``i % groups`` + its own suffix.

    vLLM gives each prefix ``num_requests // num_prefixes`` suffixes and drops
    the rest; here every request is kept, so the prefixes differ by at most one
    use. Plain prompts (one user message), shuffled.
    """
    groups = _count("groups", groups)
    w = _Words(seed)
    prefixes = [w(shared_len, "shared_len") for _ in range(groups)]
    out = [Conversation(None, (f"{prefixes[i % groups]} {w(unique_len, 'unique_len')}",), max_tokens, group=i % groups)
           for i in range(_count("num_requests", num_requests))]
    w.rng.shuffle(out)
    return out


def generated_shared_prefix_workload(num_requests: int = 32, groups: int = 4, shared_len: Length = 256,
                                     unique_len: Length = 32, max_tokens: int = 32, seed: int = 0,
                                     **_: Any) -> list[Conversation]:
    """SGLang's generated-shared-prefix shape: ``groups`` system prompts, each prompt ``system + "\\n\\n" + question``.

    ``num_requests`` is split over the groups as evenly as it goes (SGLang's
    is ``num_groups * prompts_per_group``); one text per request, shuffled.
    """
    groups = _count("groups", groups)
    w = _Words(seed)
    systems = [w(shared_len, "shared_len") for _ in range(groups)]
    out = [Conversation(None, (f"{systems[i % groups]}\n\n{w(unique_len, 'unique_len', end='?')}",), max_tokens,
                        group=i % groups) for i in range(_count("num_requests", num_requests))]
    w.rng.shuffle(out)
    return out


WORKLOADS: dict[str, Callable[..., list[Conversation]]] = {
    "system-prompt": system_prompt_workload,
    "multi-turn": multi_turn_workload,
    "few-shot": few_shot_workload,
    "prefix-repetition": prefix_repetition_workload,
    "generated-shared-prefix": generated_shared_prefix_workload,
}


def make_workload(name: str, **options: Any) -> list[Conversation]:
    """The workload ``name`` (a key of :data:`WORKLOADS`); options left out or ``None`` take its defaults.

    Options: ``num_requests``, ``shared_len``, ``unique_len``, ``groups``,
    ``turns`` (multi-turn), ``shots`` (few-shot), ``max_tokens``, ``seed``;
    each workload's docstring says what they mean for it.
    """
    if name not in WORKLOADS:
        raise InvalidRequestError(f"unknown workload {name!r}; choose one of {', '.join(WORKLOADS)}")
    if options.get("max_tokens") is not None:
        _count("max_tokens", options["max_tokens"])
    return WORKLOADS[name](**{k: v for k, v in options.items() if v is not None})


def num_requests(workload: list[Conversation]) -> int:
    """How many requests a workload sends (every turn of every conversation)."""
    return sum(len(c.turns) for c in workload)


__all__ = ["WORKLOADS", "WORDS", "Conversation", "make_workload", "num_requests", "render_prompt"]

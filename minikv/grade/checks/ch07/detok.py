"""Exercise 7.1, incremental detokenization with stop strings: the learner's ``StreamDetokenizer`` against
minikv's :class:`~minikv.engine.detokenizer.IncrementalDetokenizer`, push by push, on the byte-level
tokenizer of ``tiny-llama`` (every multi-byte character spans tokens) and on random texts and stops."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from minikv.engine.detokenizer import IncrementalDetokenizer
from minikv.grade.compare import CheckFailed, call, forall, one_line, short
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner

MODULE = "ch07_serving"
FFFD = "\ufffd"

ex71 = register(Exercise(
    "7.1", "incremental detokenization with stop strings", MODULE, ("StreamDetokenizer",),
    hint="in push, per token: decode all ids; skip while it ends with U+FFFD; else text = full and look for each "
         "stop from max(0, old_len - len(stop) + 1), cut before the earliest; take gives text[sent:len(text) - "
         "holdback] (everything when finished or stopped)",
))


@functools.cache
def tokenizer() -> Any:
    """tiny-llama's tokenizer: 256 byte tokens (so "é" is two tokens) plus ChatML specials."""
    from minikv.models.tiny import build_tokenizer

    return build_tokenizer(320)


def encode(text: str) -> list[int]:
    return list(tokenizer().encode(text, add_special_tokens=False))


EOS = 258  # <|im_end|>: a special token, decoded to nothing


def _stream(det: Any, ids: Sequence[int], sizes: Sequence[int], mine: bool) -> tuple[list[str], list[bool], Any]:
    """Push ``ids`` in pushes of ``sizes`` (cycled), take after each, stop when stopped; then take(finished=True)."""
    pieces, stops, i, k = [], [], 0, 0
    while i < len(ids):
        n = sizes[k % len(sizes)]
        chunk = list(ids[i:i + n])
        i, k = i + n, k + 1
        stopped = call(det.push, chunk, context="push") if mine else det.push(chunk)
        stops.append(bool(stopped))
        pieces.append(call(det.take, context="take") if mine else det.take())
        if stopped:
            break
    pieces.append(call(det.take, True, context="take(finished=True)") if mine else det.take(True))
    return pieces, stops, det


def expect_stream(cls: Any, text_or_ids: str | Sequence[int], stop: Sequence[str] = (), include: bool = False,
                  sizes: Sequence[int] = (1,), tok: Any = None, name: str = "tokenizer") -> tuple[list[str], str]:
    """Stream the same ids through the learner's class and minikv's (on ``tok``, tiny-llama's by default);
    CheckFailed naming the first difference."""
    tok = tok if tok is not None else tokenizer()
    ids = encode(text_or_ids) if isinstance(text_or_ids, str) else list(text_or_ids)
    shown = repr(text_or_ids) if isinstance(text_or_ids, str) else f"ids {short(ids)}"
    desc = (f"StreamDetokenizer({name}, stop={list(stop)!r}" + (", include_stop_str_in_output=True" if include else "")
            + f") pushed {shown} ({len(ids)} byte tokens) in pushes of {list(sizes)}")
    mine = call(cls, tok, list(stop), include, context=f"StreamDetokenizer({name}, stop, include_stop_str_in_output)")
    g_pieces, g_stops, _ = _stream(mine, ids, sizes, mine=True)
    w_pieces, w_stops, ref = _stream(IncrementalDetokenizer(tok, list(stop), include), ids, sizes, mine=False)
    final = ref.output_text
    if g_pieces == w_pieces and g_stops == w_stops and getattr(mine, "text", None) == final \
            and getattr(mine, "stop_reason", None) == ref.stop_reason:
        return w_pieces, final
    raise CheckFailed(one_line(f"{_diagnose(g_pieces, w_pieces, g_stops, w_stops, mine, ref, stop, include)}; {desc}"))


def _diagnose(g_pieces: list[str], w_pieces: list[str], g_stops: list[bool], w_stops: list[bool], mine: Any,
              ref: IncrementalDetokenizer, stop: Sequence[str], include: bool) -> str:
    """Name the rule broken, the most telling first: half characters, the stop, then what went out when."""
    final = ref.output_text

    def where(k: int) -> str:
        return "take(finished=True)" if k == len(g_pieces) - 1 else f"take() after push {k}"

    for k, g in enumerate(g_pieces):
        if not isinstance(g, str):
            return f"{where(k)} returned a {type(g).__name__}, expected a str"
        if FFFD in g and FFFD not in final:
            return (f"{where(k)} gave {g!r}: half a character (U+FFFD) went out; while decode(ids) ends with U+FFFD "
                    "the last character's bytes are not all there, so wait")
    got_text, got_reason = getattr(mine, "text", None), getattr(mine, "stop_reason", None)
    if ref.stop_reason is not None and got_reason is None:
        return (f"the stop string {ref.stop_reason!r} was never found (stop_reason is None): it may span tokens, "
                "so look for it from len(old text) - len(stop) + 1, not only in the new characters")
    if got_text != final:
        if ref.stop_reason is not None and not include and got_text == final + ref.stop_reason:
            return f"text is {got_text!r}: it keeps the stop string {ref.stop_reason!r}; cut just before it"
        return f"text is {got_text!r}, expected {final!r}"
    if got_reason != ref.stop_reason:
        return f"stop_reason is {got_reason!r}, expected {ref.stop_reason!r} (the stop string that begins earliest)"
    sent = ""
    for k, (g, w) in enumerate(zip(g_pieces, w_pieces)):
        sent += g
        if not final.startswith(sent):
            return (f"{where(k)} gave {g!r}, but the final text is {final!r}: part of a stop string leaked out "
                    f"before the stop was complete; hold back the last {ref.holdback} characters")
        if g != w:
            if k == len(w_pieces) - 1:
                return f"take(finished=True) gave {g!r}, expected {w!r}: at the end it gives all that is left"
            if len(g) > len(w):
                return (f"{where(k)} gave {g!r}, expected {w!r}: the last {ref.holdback} characters "
                        "(len(longest stop) - 1) must wait while they could begin a stop string")
            return (f"{where(k)} gave {g!r}, expected {w!r}: it held back more than the last {ref.holdback} "
                    "characters (len(longest stop) - 1), or waited for a character that was already whole")
    if len(g_pieces) != len(w_pieces) or g_stops != w_stops:
        k = next((i for i, (a, b) in enumerate(zip(g_stops, w_stops)) if a != b), min(len(g_stops), len(w_stops)))
        return (f"push {k} returned {g_stops[k] if k < len(g_stops) else '(not called)'}, expected "
                f"{w_stops[k] if k < len(w_stops) else '(no more pushes)'}: push returns whether a stop string has appeared")
    return f"took {short(g_pieces)}, expected {short(w_pieces)}"


TEXTS = ("héllo wörld", "emoji 👋🏽 and 世界, ünïcödé", "naïve café — “quotes” ½ €100")


class Bytes:
    """Token i is byte i (the docstring's tokenizer)."""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


@ex71.check("the docstring's example")
def _example(learner: Learner) -> None:
    cls = learner.get("StreamDetokenizer")
    expect_stream(cls, list("é!abENDzz".encode()), ["END"], sizes=(1, 1, 2, 5), tok=Bytes(), name="Bytes()")


@ex71.check("multi-byte characters never come out in halves (no stop strings)")
def _whole_characters(learner: Learner) -> str:
    cls = learner.get("StreamDetokenizer")
    for text in TEXTS:
        for sizes in ((1,), (2, 3), (5,)):
            expect_stream(cls, text, sizes=sizes)
    expect_stream(cls, encode("done 👋") + [EOS], sizes=(1,))          # a special token decodes to nothing
    expect_stream(cls, encode("cut 👋")[:-2], sizes=(1,))              # ends in half a character: given at the end
    return "every piece is whole characters; joined they are the text"


@ex71.check("stop strings: held back while they could begin, cut exactly, even across tokens")
def _stops(learner: Learner) -> None:
    cls = learner.get("StreamDetokenizer")
    expect_stream(cls, "Answer: 42.\n\nQuestion: next", stop=["\n\n"])
    expect_stream(cls, "Answer: 42.\n\nQuestion: next", stop=["\n\n"], include=True)
    expect_stream(cls, "one two END three", stop=["END", "two"], sizes=(1, 2))   # the earliest wins
    expect_stream(cls, "abcdef", stop=["bcd", "cd"])                              # the first to complete wins
    expect_stream(cls, "STOP at once", stop=["STOP"])
    expect_stream(cls, "no stop here, E, EN, END?", stop=["ENDING"], sizes=(3,))
    expect_stream(cls, "café😀stop", stop=["😀"], sizes=(1,))                   # a multi-byte stop string
    expect_stream(cls, "x<|y|>z", stop=["<|y|>", ""], sizes=(4,))


_ALPHABET = "ab \né👋世"


@st.composite
def _cases(draw: Any) -> tuple[str, list[str], bool, list[int]]:
    text = draw(st.text(alphabet=_ALPHABET, max_size=24))
    stop = draw(st.lists(st.text(alphabet=_ALPHABET, min_size=1, max_size=3), max_size=3))
    return text, stop, draw(st.booleans()), draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))


@ex71.check("random texts, stops and push sizes vs minikv's IncrementalDetokenizer")
def _random(learner: Learner) -> None:
    cls = learner.get("StreamDetokenizer")

    @forall(_cases(), max_examples=150)
    def prop(case: tuple[str, list[str], bool, list[int]]) -> None:
        text, stop, include, sizes = case
        expect_stream(cls, text, stop, include, sizes)

    prop()

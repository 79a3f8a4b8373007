"""IncrementalDetokenizer: a growing token stream as text, released piece by piece (streaming).

Two things make streaming text harder than ``tokenizer.decode(all_ids)`` at
the end:

1. **A token is not a character.** Byte-level BPE (SmolLM2, GPT-2, Llama 3)
   may cut one UTF-8 character (an emoji, a CJK sign, "é") across two or
   three tokens; decoding the first alone gives U+FFFD, "�". So text is
   released only once the window decodes to whole characters. Decoding a
   window that starts a few tokens back (``prefix_offset``) rather than the
   new token alone also keeps SentencePiece's leading spaces right.
2. **A stop string may span tokens.** ``stop=["\\n\\n"]`` can arrive as "\\n"
   then "\\n"; once the first is streamed it cannot be taken back. So while
   the request runs, the last ``len(longest stop) - 1`` characters are held
   back; when a stop string appears the text ends just before it (or after
   it with ``include_stop_str_in_output``) and the request finishes with
   ``finish_reason="stop"``.

Invariant: the pieces :meth:`take` returns, joined, are always a prefix of
the final :attr:`output_text`; at the end they are all of it.

    >>> class Bytes:  # a byte-level tokenizer: token i is byte i
    ...     def decode(self, ids, skip_special_tokens=True):
    ...         return bytes(ids).decode("utf-8", errors="replace")
    >>> d = IncrementalDetokenizer(Bytes(), stop=["END"])
    >>> ids = list("é!".encode())          # "é" is two bytes
    >>> d.push(ids[:1]), d.take()           # half a character: nothing yet
    (False, '')
    >>> d.push(ids[1:]), d.take()           # "é!" whole, but the last 2 characters wait (len("END") - 1)
    (False, '')
    >>> d.push(list(b"ab")), d.take()
    (False, 'é!')
    >>> d.push(list(b"ENDzz")), d.take(finished=True), d.output_text
    (True, 'ab', 'é!ab')
"""

from __future__ import annotations

from typing import Any, Sequence

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Decodes ``push`` ed token ids into :attr:`output_text`; :meth:`take` returns the new, safe part."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = (), include_stop_str_in_output: bool = False,
                 skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.include_stop = include_stop_str_in_output
        self.skip_special_tokens = skip_special_tokens
        self.holdback = 0 if include_stop_str_in_output else max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.prefix_offset = 0  # the decode window starts here (context for the next token's text)
        self.read_offset = 0  # ids before this are in ``text``
        self.text = ""  # whole characters decoded so far (up to a stop string, if one was found)
        self.stop_reason: str | None = None  # the stop string that ended the text
        self.sent = 0  # characters of the output already given out by ``take``
        self.num_pushed = 0  # token ids pushed (the engine pushes each token once)

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    @property
    def output_text(self) -> str:
        return self.text

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_ids: Sequence[int]) -> bool:
        """Add generated ids; returns whether a stop string has appeared (later ids are then ignored)."""
        self.num_pushed += len(token_ids)
        for token in token_ids:
            if self.stopped:
                break
            self.ids.append(int(token))
            self._advance(flush=False)
        return self.stopped

    def _advance(self, flush: bool) -> None:
        before = self._decode(self.ids[self.prefix_offset:self.read_offset])
        window = self._decode(self.ids[self.prefix_offset:])
        if len(window) <= len(before) or (window.endswith(REPLACEMENT) and not flush):
            return  # no new whole character yet
        start = len(self.text)
        self.text += window[len(before):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        self._check_stop(start)

    def _check_stop(self, start: int) -> None:
        best = None
        for s in self.stop:  # the earliest stop string that ends in the new text
            i = self.text.find(s, max(0, start - len(s) + 1))
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        if best is not None:
            i, s = best
            self.text = self.text[:i + len(s)] if self.include_stop else self.text[:i]
            self.stop_reason = s

    def take(self, finished: bool = False) -> str:
        """The text not yet given out that is safe to give: all of it when ``finished`` (a partial character too)."""
        if finished and not self.stopped and self.read_offset < len(self.ids):
            self._advance(flush=True)
        end = len(self.text) if finished or self.stopped else max(self.sent, len(self.text) - self.holdback)
        piece, self.sent = self.text[self.sent:end], max(self.sent, end)
        return piece

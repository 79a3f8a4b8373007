"""SamplingParams: how to pick each next token and when to stop (vLLM's names)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from minikv.errors import InvalidRequestError
from minikv.validation import check_bool, check_int, check_number, check_seed, check_token_ids, describe


@dataclass
class SamplingParams:
    """Per-request generation settings.

    ``temperature=0`` is greedy (argmax). Otherwise logits are divided by the
    temperature, cut to the ``top_k`` most likely tokens (-1: all) and to the
    smallest set whose probability reaches ``top_p``, then sampled with a
    generator seeded by ``seed`` (None: the engine's own seeded generator).
    Generation stops at ``max_tokens`` or at an end-of-sequence token
    (the model's EOS ids plus ``stop_token_ids``) unless ``ignore_eos``.
    ``stop``: strings that end generation where they appear (a string or a
    list); the text ends before the stop string unless
    ``include_stop_str_in_output`` (see :mod:`minikv.engine.detokenizer`).
    ``cache_salt`` isolates a request's cached prefix from other salts.

    Every field is checked on creation (:class:`~minikv.errors.InvalidRequestError`
    naming the field and what to give): ints are ints, not bools or floats;
    numbers are finite; ``stop_token_ids`` is a list of ids >= 0.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    cache_salt: str | None = None
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        """Check every field and normalise it (plain ``int``/``float``, a ``list`` of stop ids).

        Wrong values are refused here, when the request is made, rather than
        deep inside sampling: ``top_k=2.5`` or ``temperature=nan`` would
        otherwise fail in torch at the first sampled token.
        """
        self.max_tokens = check_int("max_tokens", self.max_tokens, 1,
                                    hint="give how many tokens to generate, e.g. max_tokens=16")
        self.temperature = check_number("temperature", self.temperature,
                                        hint="use 0 for greedy decoding, or e.g. 0.7 to sample")
        if self.temperature < 0:
            raise InvalidRequestError(f"temperature must be >= 0; use 0 for greedy decoding (got {self.temperature})")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, numbers.Real) or not 0 < self.top_p <= 1:
            raise InvalidRequestError(f"top_p must be a number in (0, 1]; 1 keeps every token (got {self.top_p!r})")
        self.top_p = float(self.top_p)
        self.top_k = check_int("top_k", self.top_k, hint="give -1 (all tokens) or an int >= 1")
        if self.top_k == 0 or self.top_k < -1:
            raise InvalidRequestError(f"top_k must be -1 (all tokens) or at least 1 (got {self.top_k})")
        self.seed = check_seed("seed", self.seed, none_means="use the engine's generator")
        self.stop_token_ids = check_token_ids("stop_token_ids", self.stop_token_ids,
                                              hint="e.g. stop_token_ids=[2], or [] for none")
        self.ignore_eos = check_bool("ignore_eos", self.ignore_eos)
        self.stop = check_stop(self.stop)
        self.include_stop_str_in_output = check_bool("include_stop_str_in_output", self.include_stop_str_in_output)
        if self.cache_salt is not None and not isinstance(self.cache_salt, str):
            raise InvalidRequestError(f"cache_salt must be a string or None, got {describe(self.cache_salt)}; "
                                      "e.g. cache_salt=str(user_id)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def check_stop(stop: object) -> list[str]:
    """``stop`` as a list of non-empty strings (None: none; one string: a list of one)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
        raise InvalidRequestError(f"stop must be a string or a list of non-empty strings, got {describe(stop)}; "
                                  'e.g. stop=["\\n\\n"]')
    return list(stop)

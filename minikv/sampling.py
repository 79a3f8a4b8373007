"""SamplingParams: how to pick each next token and when to stop (vLLM's names)."""

from __future__ import annotations

from dataclasses import dataclass, field

from minikv.errors import InvalidRequestError


@dataclass
class SamplingParams:
    """Per-request generation settings.

    ``temperature=0`` is greedy (argmax). Otherwise logits are divided by the
    temperature, cut to the ``top_k`` most likely tokens (-1: all) and to the
    smallest set whose probability reaches ``top_p``, then sampled with a
    generator seeded by ``seed`` (None: the engine's own seeded generator).
    Generation stops at ``max_tokens`` or at an end-of-sequence token
    (the model's EOS ids plus ``stop_token_ids``) unless ``ignore_eos``.
    ``cache_salt`` isolates a request's cached prefix from other salts.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    cache_salt: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be at least 1 (got {self.max_tokens})")
        if self.temperature < 0:
            raise InvalidRequestError(f"temperature must be >= 0; use 0 for greedy decoding (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.top_k == 0 or self.top_k < -1:
            raise InvalidRequestError(f"top_k must be -1 (all tokens) or at least 1 (got {self.top_k})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

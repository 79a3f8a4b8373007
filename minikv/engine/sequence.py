"""Sequence: one request's tokens and state as it moves through the engine."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from minikv.kv.block_table import BlockTable
from minikv.outputs import RequestMetrics
from minikv.prefix.report import MissReport
from minikv.sampling import SamplingParams


@dataclass
class Sequence:
    """A request in flight.

    ``num_computed_tokens``: how many of ``token_ids`` already have their K/V in
    the cache (the next forward feeds the rest). ``block_table``: where those
    K/V live in the paged pool, set while the sequence holds blocks (``None``
    otherwise). ``kv_row``: its row of the padded contiguous cache instead,
    set while it holds one.
    """

    request_id: int
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    output_token_ids: list[int] = field(default_factory=list)
    num_cached_tokens: int = 0
    finish_reason: str | None = None
    generator: torch.Generator | None = None
    metrics: RequestMetrics = field(default_factory=RequestMetrics)
    num_computed_tokens: int = 0
    block_table: BlockTable | None = None
    kv_row: int | None = None
    external_id: object = None
    admitted: bool = False
    num_preemptions: int = 0
    num_emitted: int = 0
    counted: bool = False  # its prompt is in the engine's stats
    miss: MissReport | None = None
    detok: Any = None  # its IncrementalDetokenizer (set by the engine): streamed text, stop strings

    def __post_init__(self) -> None:
        if self.external_id is None:
            self.external_id = self.request_id
        if not self.metrics.arrival_time:
            self.metrics.arrival_time = time.perf_counter()
        self.metrics.num_prompt_tokens = len(self.prompt_token_ids)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def __len__(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def max_length(self, max_model_len: int) -> int:
        """The most tokens (prompt + generated) this sequence can reach."""
        return min(len(self.prompt_token_ids) + self.params.max_tokens, max_model_len)

    def finish(self, reason: str) -> None:
        """End the sequence now (a stop string, an abort): ``finish_reason`` and the finish time."""
        self.finish_reason = reason
        self.metrics.finished_time = time.perf_counter()
        self.metrics.num_generated_tokens = len(self.output_token_ids)

    def append(self, token: int, eos_ids: set[int], max_model_len: int | None = None) -> None:
        """Record a sampled token and decide whether the sequence is done.

        Stops on an end-of-sequence token ("stop", unless ``ignore_eos``), at
        ``max_tokens`` or when the sequence fills the model's context ("length").
        """
        now = time.perf_counter()
        if not self.output_token_ids:
            self.metrics.first_token_time = now
        self.output_token_ids.append(token)
        if not self.params.ignore_eos and (token in eos_ids or token in self.params.stop_token_ids):
            self.finish_reason = "stop"
        elif len(self.output_token_ids) >= self.params.max_tokens:
            self.finish_reason = "length"
        elif max_model_len is not None and len(self) >= max_model_len:
            self.finish_reason = "length"
        if self.finished:
            self.metrics.finished_time = now
            self.metrics.num_generated_tokens = len(self.output_token_ids)

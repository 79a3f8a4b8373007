"""SchedulerConfig: the online engine's scheduling options, checked on creation (vLLM's names).

Given to :class:`~minikv.engine.llm_engine.LLMEngine` (and ``LLM``) as
keyword arguments; a wrong one raises :class:`~minikv.errors.InvalidRequestError`
naming the option and what to give, before the model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from minikv.engine.policies import make_policy
from minikv.errors import InvalidRequestError
from minikv.validation import check_bool, check_int, describe

SCHEDULERS = ("continuous", "waves")


@dataclass
class SchedulerConfig:
    """How each step is filled (see :mod:`minikv.engine.scheduler`)."""

    max_num_batched_tokens: int = 8192
    """The step's token budget (decode tokens plus prefill chunks), >= 1. Default 8192. With chunked
    prefill off, a request whose prompt + ``max_tokens`` exceed it is refused (it could never be scheduled)."""

    max_num_seqs: int = 256
    """At most this many requests run (hold KV blocks) at once, >= 1. Default 256, vLLM's."""

    enable_chunked_prefill: bool = True
    """Split a long prefill over several steps so running requests keep decoding. Default on."""

    long_prefill_token_threshold: int = 0
    """With chunked prefill: no request computes more than this many tokens in one step (0: no cap
    beyond the budget). A small value keeps inter-token latency low when long prompts arrive."""

    scheduler: str = "continuous"
    """``"continuous"`` (vLLM v1's token-budget scheduler: requests join and leave every step, blocks on
    demand, preemption by recompute) or ``"waves"`` (the closed-batch baseline of chapters 01-04:
    blocks for prompt + ``max_tokens`` reserved at admission, prefill steps apart from decode steps)."""

    policy: Any = "fcfs"
    """Which waiting request goes first: ``"fcfs"`` (arrival order), ``"lpm"`` (longest cached prefix
    first) or ``"dfs-weight"`` (SGLang's tree order), or a :class:`~minikv.engine.policies.SchedulingPolicy`.
    The waves scheduler is FCFS only."""

    schedule_fn: Callable[..., dict[int, int]] | None = None
    """Chapter 05: your :func:`~minikv.engine.step_plan.fill_budget` in place of the engine's."""

    def __post_init__(self) -> None:
        self.max_num_batched_tokens = check_int("max_num_batched_tokens", self.max_num_batched_tokens, 1,
                                                hint="give the step's token budget, e.g. 2048")
        self.max_num_seqs = check_int("max_num_seqs", self.max_num_seqs, 1,
                                      hint="give how many requests may run at once, e.g. 256")
        self.enable_chunked_prefill = check_bool("enable_chunked_prefill", self.enable_chunked_prefill)
        self.long_prefill_token_threshold = check_int(
            "long_prefill_token_threshold", self.long_prefill_token_threshold, 0,
            hint="give 0 (no cap) or the most tokens one request may prefill per step, e.g. 256")
        if self.scheduler not in SCHEDULERS:
            raise InvalidRequestError(f"scheduler must be one of {', '.join(map(repr, SCHEDULERS))}, "
                                      f"got {describe(self.scheduler)}")
        make_policy(self.policy)  # an unknown name or an object without order() is refused here
        if self.schedule_fn is not None and not callable(self.schedule_fn):
            raise InvalidRequestError(f"schedule_fn must be a function like minikv.engine.step_plan.fill_budget, "
                                      f"got {describe(self.schedule_fn)}")
        if self.scheduler == "waves" and (self.policy != "fcfs" or self.schedule_fn is not None):
            raise InvalidRequestError("the waves scheduler is first-come, first-served with no plug-in; "
                                      "use scheduler='continuous' for policy= and schedule_fn=")

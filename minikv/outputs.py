"""What ``LLM.generate`` returns for each prompt."""

from __future__ import annotations

from dataclasses import dataclass, field

from minikv.prefix.report import MissReport


@dataclass
class RequestMetrics:
    """Times in seconds (``time.perf_counter``): when the request started, got its first token, finished."""

    arrival_time: float = 0.0
    first_token_time: float | None = None
    finished_time: float | None = None
    num_prompt_tokens: int = 0
    num_generated_tokens: int = 0

    @property
    def ttft(self) -> float | None:
        """Time to first token: prefill of the uncached part plus the first sampling."""
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def e2e(self) -> float | None:
        return None if self.finished_time is None else self.finished_time - self.arrival_time


@dataclass(frozen=True)
class CompletionOutput:
    """vLLM's per-choice output (``RequestOutput.outputs[0]``); minikv makes one choice per request."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    stop_reason: str | None = None
    cumulative_logprob: float | None = None
    logprobs: None = None

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """A request's output: the generated ``text`` and ``token_ids`` so far, why it stopped, cache use.

    ``LLM.generate`` returns one per prompt, finished. ``LLMEngine.step``
    returns one for each request that got tokens this step (``new_token_ids``)
    or ended: ``finished`` then, with ``finish_reason`` "stop" (an
    end-of-sequence or stop token), "length" (``max_tokens`` or the model's
    context) or "abort"; ``finish_reason`` is None while it runs.
    ``num_cached_tokens``: prompt tokens found in the prefix cache at
    admission; ``miss`` says why the rest missed (a
    :class:`~minikv.prefix.report.MissReport`, None when the cache cannot
    tell). ``num_preemptions``: how often it was preempted and recomputed.
    ``text`` is the text given out so far and ``delta_text`` what this output
    added to it (whole characters; while a request with ``stop`` strings runs,
    its last few characters wait until they cannot begin a stop string).
    ``stop_reason``: the stop string that ended it, if one did.
    """

    request_id: int | str
    prompt: str | None
    prompt_token_ids: list[int]
    text: str
    token_ids: list[int]
    finish_reason: str | None  # "stop", "length", "abort"; None while running
    num_cached_tokens: int = 0
    metrics: RequestMetrics = field(default_factory=RequestMetrics)
    new_token_ids: list[int] = field(default_factory=list)
    finished: bool = True
    miss: MissReport | None = None
    num_preemptions: int = 0
    delta_text: str = ""
    stop_reason: str | None = None

    @property
    def outputs(self) -> list[CompletionOutput]:
        """vLLM's shape: ``out.outputs[0].text`` / ``.token_ids`` / ``.finish_reason`` (the same as ``out.text``...)."""
        return [CompletionOutput(0, self.text, list(self.token_ids), self.finish_reason, self.stop_reason)]

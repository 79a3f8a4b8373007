"""LLMEngine: the online engine (vLLM's name and shape): requests come and go, one step at a time.

    engine = LLMEngine("tiny-llama", prefix_cache="radix")
    engine.add_request("a", "Hello", SamplingParams(max_tokens=8, temperature=0))
    while engine.has_unfinished_requests():
        for out in engine.step():  # one forward pass
            print(out.request_id, out.new_token_ids, out.finished)

A request's road: ``add_request`` checks and tokenizes it in the caller's
thread and drops it in an inbox; ``step`` moves the inbox into the
:class:`~minikv.engine.scheduler.Scheduler` 's waiting queue, which plans the
step's token budget, takes KV blocks from the
:class:`~minikv.engine.block_manager.BlockManager` (whose one ledger is the
prefix cache), preempting when the pool runs dry; the
:class:`~minikv.engine.model_runner.ModelRunner` runs one varlen forward
over the decode tokens and prefill chunks and samples; the scheduler
advances each request, frees the finished ones (their blocks stay cached),
and ``step`` returns a :class:`~minikv.outputs.RequestOutput` for each
request that got tokens or ended.

Threads: one thread drives ``step`` (the server's engine loop) while others
call ``add_request`` / ``abort_request`` / ``get_stats``; those only touch
the inbox under a lock and never wait for a forward pass. If a step raises
(the model, a plugged-in cache), every request is aborted, all blocks are
given back, and the error propagates.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any, Hashable

from minikv.engine.detokenizer import IncrementalDetokenizer
from minikv.engine.inputs import PromptLike, check_prompt_ids, parse_prompt
from minikv.engine.model_runner import ModelRunner
from minikv.engine.parts import EngineParts
from minikv.engine.sched_config import SchedulerConfig
from minikv.engine.scheduler import Scheduler, SchedulerOutput
from minikv.engine.sequence import Sequence
from minikv.engine.waves import WavesScheduler
from minikv.errors import InvalidRequestError, KVCacheFull
from minikv.outputs import RequestOutput
from minikv.prefix import CacheStats, NoPrefixCache
from minikv.prefix.report import MissReport
from minikv.sampling import SamplingParams
from minikv.validation import describe


@dataclass(frozen=True)
class StepInfo:
    """What the last ``step`` did: tokens per request (by the caller's ids), who was preempted."""

    scheduled: dict[Hashable, int] = field(default_factory=dict)
    preempted: list[Hashable] = field(default_factory=list)
    num_batched_tokens: int = 0
    kv_blocks_used: int = 0


@dataclass(frozen=True)
class EngineStats:
    """The engine now, and counters since it was built."""

    num_running: int
    num_waiting: int
    num_preemptions: int
    steps: int
    kv_usage: float  # blocks in use by running requests / blocks in the pool
    cache: CacheStats
    miss: MissReport  # summed over every admitted request's prompt
    num_prompt_tokens: int = 0
    num_generation_tokens: int = 0


class LLMEngine:
    """An online engine over one model: ``add_request``, ``step``, ``abort_request``.

    Takes every option of :class:`~minikv.engine.llm.LLM` (checked by
    :class:`~minikv.engine.config.EngineConfig`) and the scheduling options of
    :class:`~minikv.engine.sched_config.SchedulerConfig`: ``max_num_batched_tokens``,
    ``max_num_seqs``, ``enable_chunked_prefill``, ``long_prefill_token_threshold``,
    ``scheduler`` ("continuous" or the "waves" baseline), ``policy``, ``schedule_fn``.
    Needs the paged KV layout. One scheduler, block manager and prefix cache live as long as the engine.
    """

    def __init__(self, model: str = "smollm2-135m", *, max_num_batched_tokens: int = 8192, max_num_seqs: int = 256,
                 enable_chunked_prefill: bool = True, long_prefill_token_threshold: int = 0,
                 scheduler: str = "continuous", policy: Any = "fcfs", schedule_fn: Any = None,
                 parts: EngineParts | None = None, **options: Any) -> None:
        self.scheduler_config = SchedulerConfig(max_num_batched_tokens, max_num_seqs, enable_chunked_prefill,
                                                long_prefill_token_threshold, scheduler, policy, schedule_fn)
        self.parts = parts if parts is not None else EngineParts(model, **options)
        p = self.parts
        self.tokenizer, self.config, self.cache, self.max_model_len = p.tokenizer, p.config, p.cache, p.max_model_len
        self._ids = itertools.count()
        self._lock = threading.Lock()  # guards the inbox, the aborts and the live ids
        self._step_lock = threading.Lock()  # one step at a time
        self._inbox: list[Sequence] = []
        self._aborts: list[Hashable] = []
        self._live: dict[Hashable, Sequence] = {}  # caller's id -> its sequence, from add to its last output
        self.scheduler: Scheduler | WavesScheduler | None = None
        self.runner: ModelRunner | None = None
        self.last_step = StepInfo()
        self.steps = 0
        self._miss = MissReport()
        self._num_prompt_tokens = self._num_generation_tokens = 0
        if p.block_manager is not None and not p.plugged:
            self.runner = ModelRunner(p.model, p.kv_pool, p.scale, p.device, p.paged_decode_attention,
                                      attention=p.attention, cuda_graphs=p.cuda_graphs,
                                      max_model_len=p.max_model_len)
            self.scheduler = self._make_scheduler()

    def _make_scheduler(self) -> Scheduler | WavesScheduler:
        c, p = self.scheduler_config, self.parts
        sharing = not isinstance(p.cache, NoPrefixCache)
        if c.scheduler == "waves":
            return WavesScheduler(p.block_manager, p.eos_ids, p.max_model_len, max_num_seqs=c.max_num_seqs,
                                  max_num_batched_tokens=c.max_num_batched_tokens, share_in_batch=sharing,
                                  block_size=p.block_size)
        return Scheduler(p.block_manager, p.eos_ids, p.max_model_len, max_num_batched_tokens=c.max_num_batched_tokens,
                         max_num_seqs=c.max_num_seqs, enable_chunked_prefill=c.enable_chunked_prefill,
                         long_prefill_token_threshold=c.long_prefill_token_threshold, policy=c.policy,
                         schedule_fn=c.schedule_fn, share_in_batch=sharing)

    def __getattr__(self, name: str) -> Any:  # model, kv_pool, block_manager, device, ... live on the parts
        if name == "parts":
            raise AttributeError(name)
        return getattr(self.parts, name)

    # ---- requests in ------------------------------------------------------------------------------------
    def make_sequence(self, prompt: PromptLike, params: SamplingParams, chat: bool = False,
                      where: str = "the prompt", external_id: Hashable = None,
                      arrival_time: float | None = None) -> Sequence:
        """A checked prompt as a :class:`Sequence` (forms: :mod:`minikv.engine.inputs`); raises before any work."""
        if not isinstance(params, SamplingParams):
            raise InvalidRequestError(f"params must be a SamplingParams, got {describe(params)}; "
                                      "e.g. SamplingParams(max_tokens=16)")
        parsed = parse_prompt(prompt, where)
        ids = parsed.token_ids if parsed.token_ids is not None else self.parts.encode(parsed.text, chat)
        check_prompt_ids(ids, self.config.vocab_size, self.max_model_len, where)
        seq = Sequence(next(self._ids), parsed.text, ids, params, generator=self.parts.generator_for(params),
                       external_id=external_id)
        self._detok(seq)
        if arrival_time is not None:
            seq.metrics.arrival_time = float(arrival_time)
        return seq

    def check_fits(self, seq: Sequence, what: str = "the request") -> None:
        """Refuse (:class:`KVCacheFull` / :class:`InvalidRequestError`) a request that could never run."""
        self._require_online()
        self.parts.block_manager.check_fits(seq, what)
        c = self.scheduler_config
        need = seq.max_length(self.max_model_len)
        if c.scheduler == "continuous" and not c.enable_chunked_prefill and need > c.max_num_batched_tokens:
            raise InvalidRequestError(
                f"{what} may need {need} tokens computed in one step ({len(seq.prompt_token_ids)} prompt + up "
                f"to {seq.params.max_tokens} new, recomputed whole after a preemption), over "
                f"max_num_batched_tokens={c.max_num_batched_tokens} with chunked prefill off; raise "
                f"max_num_batched_tokens to {need} or set enable_chunked_prefill=True")

    def _require_online(self) -> None:
        if self.scheduler is None:
            raise InvalidRequestError("the online engine needs the paged KV layout and no chapter-01 plug-ins; "
                                      "LLM.generate runs the contiguous layout")

    def add_request(self, request_id: Hashable, prompt: PromptLike, params: SamplingParams | None = None,
                    arrival_time: float | None = None, *, chat: bool = False) -> None:
        """Queue a request; it joins the next step. ``request_id``: any hashable, unique among live requests.

        ``arrival_time`` (``time.perf_counter`` seconds; default now) is where its TTFT is counted from.
        Everything is checked here, in the caller's thread: the id, the prompt, the params, and that it
        fits an empty KV pool (:class:`~minikv.errors.KVCacheFull` otherwise). Nothing is allocated until a step.
        """
        try:
            hash(request_id)
        except TypeError:
            raise InvalidRequestError(f"request_id must be hashable (a str or an int), got {describe(request_id)}")
        seq = self.make_sequence(prompt, params if params is not None else SamplingParams(), chat,
                                 external_id=request_id, arrival_time=arrival_time)
        self.check_fits(seq)
        with self._lock:
            if request_id in self._live:
                raise InvalidRequestError(f"request id {request_id!r} is already running; give each live "
                                          "request its own id")
            self._live[request_id] = seq
            self._inbox.append(seq)

    def enqueue(self, seqs: list[Sequence]) -> None:
        """Queue sequences already checked (``make_sequence`` + ``check_fits``), under their own ids."""
        with self._lock:
            for seq in seqs:
                if seq.external_id in self._live:
                    raise InvalidRequestError(f"request id {seq.external_id!r} is already running")
            for seq in seqs:
                self._live[seq.external_id] = seq
                self._inbox.append(seq)

    def abort_request(self, request_id: Hashable | list | tuple | set) -> None:
        """Stop a request (or a list of them) at the next step and free its blocks.

        Unknown or finished ids are ignored (as vLLM). Its last output (``finish_reason="abort"``)
        comes from that step.
        """
        ids = list(request_id) if isinstance(request_id, (list, tuple, set)) else [request_id]
        with self._lock:
            for rid in ids:
                if rid in self._live:
                    self._aborts.append(rid)

    def has_unfinished_requests(self) -> bool:
        with self._lock:
            return bool(self._live)

    def num_unfinished_requests(self) -> int:
        with self._lock:
            return len(self._live)

    # ---- one step -------------------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Run one forward over the scheduled tokens; outputs for requests that got tokens or ended."""
        self._require_online()
        with self._step_lock:
            sched = self.scheduler
            outputs = self._take_inbox()
            if sched.is_finished:
                self.last_step = StepInfo()
                return outputs
            try:
                out = sched.schedule()
                tokens = self.runner.run(out.scheduled) if out.scheduled else {}
                finished = sched.postprocess(out, tokens)
                finished += self._stop_strings(out)
            except BaseException:
                self._abort_everything()
                raise
            self.steps += 1
            self._record(out)
            for seq, n in out.scheduled:
                if seq.num_emitted < len(seq.output_token_ids) or seq.finished:
                    outputs.append(self._output(seq))
            with self._lock:
                for seq in finished:
                    self._live.pop(seq.external_id, None)
                    self._num_generation_tokens += len(seq.output_token_ids)
            return outputs

    def _detok(self, seq: Sequence) -> IncrementalDetokenizer:
        """The sequence's detokenizer (made on first use, so sequences built by hand work too)."""
        if seq.detok is None:
            seq.detok = IncrementalDetokenizer(self.tokenizer, seq.params.stop, seq.params.include_stop_str_in_output)
        return seq.detok

    def _stop_strings(self, out: SchedulerOutput) -> list[Sequence]:
        """Feed each new token to its sequence's detokenizer; finish those whose text reached a stop string."""
        done = []
        for seq, _ in out.scheduled:
            detok = self._detok(seq)
            new = seq.output_token_ids[detok.num_pushed:]
            if new and detok.push(new) and not seq.finished:
                self.scheduler.finish(seq, "stop")
                done.append(seq)
        return done

    def _take_inbox(self) -> list[RequestOutput]:
        """New requests into the waiting queue; aborted ones out (with their last output)."""
        with self._lock:
            inbox, self._inbox = self._inbox, []
            aborts, self._aborts = self._aborts, []
        for seq in inbox:
            self.scheduler.add(seq)
        outputs = []
        for rid in aborts:
            with self._lock:
                seq = self._live.pop(rid, None)
            if seq is None:
                continue
            self.scheduler.abort(seq)
            seq.finish("abort")
            outputs.append(self._output(seq))
        return outputs

    def _record(self, out: SchedulerOutput) -> None:
        for seq, _ in out.scheduled:
            if not seq.counted:  # its first step: count its prompt (and why it missed) once
                seq.counted = True
                self._num_prompt_tokens += len(seq.prompt_token_ids)
                if seq.miss is not None:
                    self._miss = self._miss + seq.miss
        self.last_step = StepInfo({s.external_id: n for s, n in out.scheduled}, [s.external_id for s in out.preempted],
                                  out.num_batched_tokens, len(self.parts.block_manager.held_blocks()))

    def _abort_everything(self) -> None:
        with self._lock:
            self._live.clear()
            self._inbox.clear()
            self._aborts.clear()
        self.scheduler.abort_all()

    def _output(self, seq: Sequence) -> RequestOutput:
        new = seq.output_token_ids[seq.num_emitted:]
        seq.num_emitted = len(seq.output_token_ids)
        detok = self._detok(seq)
        if detok.num_pushed < len(seq.output_token_ids):  # the closed-batch paths: the text at the end
            detok.push(seq.output_token_ids[detok.num_pushed:])
        delta = detok.take(finished=seq.finished)
        return RequestOutput(
            request_id=seq.external_id, prompt=seq.prompt, prompt_token_ids=seq.prompt_token_ids,
            text=detok.text[:detok.sent], token_ids=list(seq.output_token_ids), finish_reason=seq.finish_reason,
            num_cached_tokens=seq.num_cached_tokens, metrics=seq.metrics, new_token_ids=new,
            finished=seq.finished, miss=seq.miss, num_preemptions=seq.num_preemptions, delta_text=delta,
            stop_reason=detok.stop_reason)

    # ---- stats ------------------------------------------------------------------------------------------------
    def get_stats(self) -> EngineStats:
        """A snapshot, taken between steps (it waits for a running forward to end)."""
        with self._step_lock:
            return self._stats()

    def _stats(self) -> EngineStats:
        sched = self.scheduler
        cache = self.cache.stats()
        used = len(self.parts.block_manager.held_blocks()) if self.parts.block_manager is not None else 0
        with self._lock:
            pending = len(self._inbox)
        return EngineStats(
            num_running=len(sched.running) if sched else 0, num_waiting=(len(sched.waiting) if sched else 0) + pending,
            num_preemptions=sched.num_preemptions if sched else 0, steps=self.steps,
            kv_usage=used / cache.num_blocks if cache.num_blocks else 0.0, cache=cache, miss=self._miss,
            num_prompt_tokens=self._num_prompt_tokens, num_generation_tokens=self._num_generation_tokens)

    def cache_stats(self) -> CacheStats:
        return self.cache.stats()

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix and zero the cache's counters (no request may be running)."""
        self.cache.reset()

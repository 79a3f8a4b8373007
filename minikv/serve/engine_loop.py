"""EngineLoop: one thread steps the :class:`~minikv.LLMEngine`; each request's outputs reach its coroutine.

The HTTP side is asyncio (FastAPI on uvicorn); the engine is a blocking loop
of forward passes. They meet here:

- ``generate`` (a coroutine, on the event loop) checks the queue bound,
  calls ``LLMEngine.add_request`` (which checks and tokenizes the request
  and never waits for a forward pass), and then yields that request's
  :class:`~minikv.outputs.RequestOutput` s from its own ``asyncio.Queue``;
- the engine thread calls ``LLMEngine.step`` while any request is
  unfinished (and sleeps on an event otherwise), hands each output to its
  request's queue with ``loop.call_soon_threadsafe``, updates the metrics,
  and keeps a :class:`~minikv.engine.llm_engine.EngineStats` snapshot for
  ``/metrics`` and ``/stats`` (so a scrape never waits for a step);
- when the consumer goes away before the end (the client disconnected, the
  handler was cancelled), ``generate``'s ``finally`` aborts the request;
  the next step frees its blocks (what it computed stays in the cache).

If a step raises, the engine has already aborted every request and given
back every block; each waiting coroutine gets :class:`EngineStepError`
and the loop goes on serving new requests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import Any, AsyncIterator, Callable

from minikv.engine.llm_engine import EngineStats, LLMEngine
from minikv.engine.inputs import PromptLike
from minikv.errors import MinikvError
from minikv.outputs import RequestOutput
from minikv.sampling import SamplingParams

log = logging.getLogger("minikv.serve")


class ServerBusy(MinikvError):
    """The waiting queue is full; the client should retry later (HTTP 503)."""


class EngineStepError(MinikvError):
    """A forward pass failed; the request was aborted (HTTP 500)."""


class ServerStopping(MinikvError):
    """The server stopped while the request ran; it was aborted (HTTP 503)."""


class EngineLoop:
    """Steps ``engine`` in a background thread; ``generate`` streams one request's outputs to a coroutine.

    ``max_waiting``: requests accepted but not yet running, at most; one more is
    refused with :class:`ServerBusy` instead of growing the queue without limit.
    ``on_outputs(outputs, now)``: called in the engine thread after each step (the metrics).
    """

    def __init__(self, engine: LLMEngine, max_waiting: int = 256,
                 on_outputs: Callable[[list[RequestOutput], float], None] | None = None) -> None:
        if engine.scheduler is None:
            raise MinikvError("the server needs the online engine (paged KV layout, no chapter-01 plug-ins)")
        self.engine = engine
        self.max_waiting = max_waiting
        self.on_outputs = on_outputs
        self._queues: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._queues_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.snapshot: EngineStats = engine.get_stats()
        self.num_step_errors = 0

    # ---- the engine thread ----------------------------------------------------------------------------
    def start(self) -> None:
        """Step the engine in a background thread (what :class:`~minikv.serve.ServerThread` does)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="minikv-engine-loop", daemon=True)
            self._thread.start()

    def run(self) -> None:
        """Step the engine in the calling thread until :meth:`request_stop` (``minikv serve`` runs it in the main
        thread: torch's CPU kernels ran about 30% slower in a second thread on the 2-core machine, see
        docs/benchmarks.md); then abort what is left, as :meth:`stop` does."""
        self._thread = threading.current_thread()
        try:
            self._run()
        finally:
            self._thread = None
            self.stop()

    def request_stop(self) -> None:
        """Ask the loop to end after its current step (safe from a signal handler or another thread)."""
        self._stopping.set()
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """End the thread after its current step; every request still in flight is aborted and its blocks freed."""
        self.request_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            self._thread = None
        engine = self.engine
        with engine._step_lock:
            engine._abort_everything()
        self.snapshot = engine.get_stats()
        self._fail_all(ServerStopping("the server is stopping; the request was aborted"))

    def _run(self) -> None:
        engine = self.engine
        while not self._stopping.is_set():
            if not engine.has_unfinished_requests():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                outputs = engine.step()
            except Exception as e:  # the engine aborted everything and freed its blocks
                self.num_step_errors += 1
                log.exception("a step failed; every request in flight was aborted")
                self._fail_all(e)
                self.snapshot = engine.get_stats()
                continue
            now = time.perf_counter()
            self.snapshot = engine.get_stats()
            if self.on_outputs is not None:
                try:
                    self.on_outputs(outputs, now)
                except Exception:  # metrics must never stop the engine
                    log.exception("recording metrics failed")
            for out in outputs:
                self._deliver(str(out.request_id), out)

    def _deliver(self, request_id: str, item: RequestOutput | BaseException) -> None:
        with self._queues_lock:
            target = self._queues.get(request_id)
        if target is None:  # its consumer has gone (aborted)
            return
        loop, queue = target
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed (shutting down)
            pass

    def _fail_all(self, error: BaseException) -> None:
        """Every waiting coroutine gets ``error`` (a :class:`MinikvError`; others are wrapped in EngineStepError)."""
        if not isinstance(error, MinikvError):
            error = EngineStepError(f"the engine failed on this request's step: {error}")
        with self._queues_lock:
            ids = list(self._queues)
        for request_id in ids:
            self._deliver(request_id, error)

    # ---- the event loop side ----------------------------------------------------------------------------
    def num_waiting(self) -> int:
        """Requests accepted and not yet running (an estimate: read without stopping the engine)."""
        running = len(self.engine.scheduler.running)
        return max(0, self.engine.num_unfinished_requests() - running)

    async def generate(self, prompt: PromptLike, params: SamplingParams,
                       request_id: str | None = None) -> AsyncIterator[RequestOutput]:
        """Add a request and yield its outputs until the finished one; closing early aborts it.

        Raises (before yielding anything) what ``add_request`` raises for a bad
        request, :class:`ServerBusy` when the waiting queue is full, and
        :class:`EngineStepError` if a step fails on it.
        """
        if not self.alive:
            raise MinikvError("the engine loop is not running (the server is stopping)")
        if self.num_waiting() >= self.max_waiting:
            raise ServerBusy(f"the server has {self.max_waiting} requests waiting already (max_waiting); "
                             "retry in a moment")
        request_id = request_id or uuid.uuid4().hex
        queue: asyncio.Queue = asyncio.Queue()
        with self._queues_lock:
            self._queues[request_id] = (asyncio.get_running_loop(), queue)
        finished = False
        try:
            self.engine.add_request(request_id, prompt, params)
            self._wake.set()
            while not finished:
                item = await queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
        finally:
            with self._queues_lock:
                self._queues.pop(request_id, None)
            if not finished:
                self.engine.abort_request(request_id)
                self._wake.set()

    def stats(self) -> dict[str, Any]:
        """The latest snapshot as plain JSON data (what ``GET /stats`` returns)."""
        s = self.snapshot
        c = s.cache
        return {
            "num_running": s.num_running, "num_waiting": s.num_waiting, "num_preemptions": s.num_preemptions,
            "steps": s.steps, "kv_usage": s.kv_usage, "num_blocks": c.num_blocks, "num_blocks_held": c.num_used,
            "num_prompt_tokens": s.num_prompt_tokens, "num_generation_tokens": s.num_generation_tokens,
            "num_step_errors": self.num_step_errors,
            "cache": {"query_tokens": c.query_tokens, "hit_tokens": c.hit_tokens, "hit_rate": c.hit_rate,
                      "num_blocks": c.num_blocks, "block_size": c.block_size, "num_used": c.num_used,
                      "num_evictable": c.num_evictable, "num_free": c.num_free, "num_cached": c.num_cached,
                      "evictions": c.evictions, "offload_hit_tokens": getattr(c, "offload_hit_tokens", 0)},
        }

"""The OpenAI-compatible HTTP API over an :class:`~minikv.serve.engine_loop.EngineLoop` (FastAPI).

=========================== ====================================================================
``POST /v1/completions``    a prompt (text or token ids); ``stream`` for Server-Sent Events
``POST /v1/chat/completions`` messages through the model's chat template; ``stream`` too
``GET /v1/models``          the one served model
``GET /health``             200 while the engine loop runs
``GET /metrics``            Prometheus text (:mod:`minikv.serve.metrics`)
``GET /stats``              the engine's state as JSON (running, waiting, blocks held, cache counters)
=========================== ====================================================================

Streams are ``data: {chunk}`` events in OpenAI's chunk format, then
``data: [DONE]``; ``stream_options.include_usage`` adds a last chunk with
``usage`` and no choices. ``usage.prompt_tokens_details.cached_tokens`` is
the prompt tokens the prefix cache supplied. Bad requests get HTTP 400 (404
for an unknown model, 503 when the waiting queue is full) with OpenAI's
error body, and the server goes on serving. A client that disconnects
aborts its request: its blocks go back to the cache at the next step.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from minikv.errors import InvalidRequestError, KVCacheFull, MinikvError
from minikv.outputs import RequestOutput
from minikv.serve.engine_loop import EngineLoop, EngineStepError, ServerBusy, ServerStopping
from minikv.serve.metrics import ServerMetrics
from minikv.serve.protocol import (ChatCompletionRequest, CompletionRequest, describe_validation_error,
                                   error_body)


class ModelNotServed(MinikvError):
    """The request names a model this server does not serve (HTTP 404)."""


def _error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
           code: str | int | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status)


def _error_for(e: BaseException) -> JSONResponse:
    if isinstance(e, ModelNotServed):
        return _error(404, str(e), code="model_not_found", param="model")
    if isinstance(e, ServerStopping):
        return _error(503, str(e), type_="server_error", code="stopping")
    if isinstance(e, ServerBusy):
        return _error(503, str(e), type_="server_busy", code="queue_full")
    if isinstance(e, EngineStepError):
        return _error(500, str(e), type_="server_error")
    if isinstance(e, (InvalidRequestError, KVCacheFull)):
        return _error(400, str(e))
    if isinstance(e, MinikvError):
        return _error(400, str(e))
    return _error(500, f"internal error: {type(e).__name__}: {e}", type_="server_error")


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def _usage(out: RequestOutput) -> dict[str, Any]:
    p, c = len(out.prompt_token_ids), len(out.token_ids)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": out.num_cached_tokens}}


async def _until_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read, so the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _next_unless_gone(request: Request, gen: AsyncIterator[RequestOutput]) -> RequestOutput | None:
    """The request's next output, or None if the client disconnects first (a handler is not cancelled then)."""
    work = asyncio.ensure_future(gen.__anext__())
    gone = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if work.done():
        return work.result()
    work.cancel()
    try:
        await work
    except (asyncio.CancelledError, StopAsyncIteration):
        pass
    return None


class OpenAIServer:
    """Routes and the work behind them; ``app`` is the FastAPI application."""

    def __init__(self, loop: EngineLoop, model_name: str, metrics: ServerMetrics | None = None) -> None:
        self.loop, self.model_name = loop, model_name
        self.engine = loop.engine
        self.metrics = metrics
        self.created = int(time.time())
        self.app = self._build()

    # ---- requests to engine inputs ----------------------------------------------------------------------
    async def _parse(self, request: Request, cls: type[BaseModel]) -> Any:
        body = await request.body()
        try:
            req = cls.model_validate_json(body or b"")
        except ValidationError as e:
            message, param = describe_validation_error(e.errors(include_url=False))
            raise _BadRequest(message, param) from None
        if req.model != self.model_name:
            raise ModelNotServed(f"model {req.model!r} is not served here; this server serves "
                                 f"{self.model_name!r} (GET /v1/models)")
        return req

    def _chat_prompt(self, req: ChatCompletionRequest) -> dict[str, list[int]]:
        return {"prompt_token_ids": self.engine.parts.encode_messages(req.message_dicts())}

    def _default_max_tokens(self, prompt_len: int) -> int:
        """Chat's default (OpenAI: as many as fit): the rest of the context, within an empty KV pool."""
        e = self.engine
        pool_tokens = e.kv_pool.num_blocks * e.kv_pool.block_size
        return max(1, min(e.max_model_len, pool_tokens) - prompt_len)

    # ---- responses --------------------------------------------------------------------------------------
    async def _respond(self, request: Request, kind: str, prompt: Any, req: Any, max_tokens: int) -> Response:
        params = req.sampling_params(max_tokens)
        request_id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        gen = self.loop.generate(prompt, params, request_id)
        try:  # errors in the request surface at the first output, before any byte is sent
            first = await _next_unless_gone(request, gen)
        except BaseException:
            await gen.aclose()
            raise
        if first is None:  # the client left before its first token
            await gen.aclose()
            return Response(status_code=499)
        if req.stream:
            return StreamingResponse(self._stream(kind, request_id, first, gen, req.include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        out = first
        try:
            while out is not None and not out.finished:
                out = await _next_unless_gone(request, gen)
        finally:
            await gen.aclose()  # aborts the request if it did not finish
        if out is None:
            return Response(status_code=499)
        choice: dict[str, Any] = {"index": 0, "finish_reason": out.finish_reason, "logprobs": None}
        if kind == "chat":
            choice["message"] = {"role": "assistant", "content": out.text}
            obj = "chat.completion"
        else:
            choice["text"] = out.text
            obj = "text_completion"
        if out.stop_reason is not None:
            choice["stop_reason"] = out.stop_reason
        return JSONResponse({"id": request_id, "object": obj, "created": int(time.time()),
                             "model": self.model_name, "choices": [choice], "usage": _usage(out)})

    async def _stream(self, kind: str, request_id: str, first: RequestOutput, gen: AsyncIterator[RequestOutput],
                      include_usage: bool) -> AsyncIterator[str]:
        created = int(time.time())
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def chunk(text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
            if kind == "chat":
                delta: dict[str, Any] = {"role": "assistant"} if role else {}
                if text is not None:
                    delta["content"] = text
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
            return {"id": request_id, "object": obj, "created": created, "model": self.model_name,
                    "choices": [choice]}

        try:
            if kind == "chat":
                yield _sse(chunk("", None, role=True))
            out = first
            while True:
                if out.finished:
                    if out.delta_text:
                        yield _sse(chunk(out.delta_text, None))
                    yield _sse(chunk(None if kind == "chat" else "", out.finish_reason))
                    break
                if out.delta_text:
                    yield _sse(chunk(out.delta_text, None))
                out = await gen.__anext__()
            if include_usage:
                yield _sse({"id": request_id, "object": obj, "created": created, "model": self.model_name,
                            "choices": [], "usage": _usage(out)})
        except MinikvError as e:  # a failed step, the server stopping
            yield _sse(error_body(str(e), "server_error"))
        finally:
            await gen.aclose()  # a client that left: this aborts the request
        yield _sse("[DONE]")

    # ---- the app ----------------------------------------------------------------------------------------
    def _build(self) -> FastAPI:
        app = FastAPI(title="minikv", version="0.1.0", docs_url=None, redoc_url=None)

        @app.exception_handler(_BadRequest)
        async def bad_request(_: Request, e: _BadRequest) -> JSONResponse:
            return _error(400, e.message, param=e.param)

        @app.exception_handler(MinikvError)
        async def minikv_error(_: Request, e: MinikvError) -> JSONResponse:
            return _error_for(e)

        @app.exception_handler(StarletteHTTPException)
        async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
            return _error(e.status_code, str(e.detail), type_="not_found" if e.status_code == 404 else "http_error")

        @app.get("/health")
        async def health() -> Response:
            if not self.loop.alive:
                return _error(503, "the engine loop is not running", type_="server_error")
            return JSONResponse({"status": "ok"})

        @app.get("/v1/models")
        async def models() -> JSONResponse:
            return JSONResponse({"object": "list", "data": [{
                "id": self.model_name, "object": "model", "created": self.created, "owned_by": "minikv",
                "max_model_len": self.engine.max_model_len}]})

        @app.get("/metrics")
        async def metrics() -> Response:
            body = self.metrics.render() if self.metrics is not None else b""
            return Response(body, media_type=CONTENT_TYPE_LATEST)

        @app.get("/stats")
        async def stats() -> JSONResponse:
            return JSONResponse(self.loop.stats())

        @app.post("/v1/completions")
        async def completions(request: Request) -> Response:
            req: CompletionRequest = await self._parse(request, CompletionRequest)
            return await self._respond(request, "completion", req.prompt_input(), req,
                                       16 if req.max_tokens is None else req.max_tokens)

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            req: ChatCompletionRequest = await self._parse(request, ChatCompletionRequest)
            prompt = self._chat_prompt(req)
            max_tokens = req.requested_max_tokens
            if max_tokens is None:
                max_tokens = self._default_max_tokens(len(prompt["prompt_token_ids"]))
            return await self._respond(request, "chat", prompt, req, max_tokens)

        return app


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message, self.param = message, param

"""minikv.serve: an OpenAI-compatible HTTP server over the online engine (chapter 07).

- :mod:`~minikv.serve.protocol`: the request bodies, checked, as ``SamplingParams``;
- :mod:`~minikv.serve.engine_loop`: one thread steps the engine, each request's outputs reach its coroutine;
- :mod:`~minikv.serve.app`: the routes (FastAPI), streaming, errors;
- :mod:`~minikv.serve.metrics`: Prometheus metrics with vLLM's names under ``minikv:``;
- :mod:`~minikv.serve.server`: :class:`ServerThread` and ``minikv serve``.
"""

from minikv.serve.engine_loop import EngineLoop, EngineStepError, ServerBusy
from minikv.serve.server import ServerThread, build_server

__all__ = ["EngineLoop", "EngineStepError", "ServerBusy", "ServerThread", "build_server"]

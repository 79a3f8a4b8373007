"""Running the server: :class:`ServerThread` (tests, notebooks, demos) and ``minikv serve`` (the command).

    from minikv.serve import ServerThread
    with ServerThread("tiny-llama", prefix_cache="radix") as srv:   # 127.0.0.1, a free port
        client = openai.OpenAI(base_url=srv.base_url, api_key="unused")
        client.completions.create(model=srv.model_name, prompt="Hello", max_tokens=8)
    # here the port is closed, the engine loop has ended and every block is back

The socket is bound before uvicorn starts, so the port is known at once
(``port=0`` picks a free one) and no other process can take it in between.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from minikv.engine.llm_engine import LLMEngine
from minikv.errors import MinikvError
from minikv.serve.app import OpenAIServer
from minikv.serve.engine_loop import EngineLoop
from minikv.serve.metrics import ServerMetrics


def build_server(engine: LLMEngine, model_name: str, max_waiting: int = 256,
                 start_engine: bool = True) -> OpenAIServer:
    """The app over ``engine``: an :class:`EngineLoop` (started in a thread unless ``start_engine=False``:
    then the caller runs ``server.loop.run()``) with its metrics."""
    holder: dict[str, EngineLoop] = {}
    metrics = ServerMetrics(lambda: holder["loop"].snapshot, model_name)
    loop = EngineLoop(engine, max_waiting=max_waiting, on_outputs=metrics.observe)
    holder["loop"] = loop
    if start_engine:
        loop.start()
    return OpenAIServer(loop, model_name, metrics)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: a free port), with a clear error when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise MinikvError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port, or 0 for a free one")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class ServerThread:
    """The OpenAI-compatible server in a background thread; a context manager that always stops it.

    Give a model name and engine options (``prefix_cache="radix"``,
    ``num_blocks=...``, ``max_num_seqs=...``: everything ``LLMEngine``
    takes), or an ``engine`` already built. ``served_model_name`` defaults to
    the model argument as given (as vLLM does).
    """

    def __init__(self, model: str = "smollm2-135m", *, engine: LLMEngine | None = None, host: str = "127.0.0.1",
                 port: int = 0, served_model_name: str | None = None, max_waiting: int = 256,
                 log_level: str = "warning", **engine_options: Any) -> None:
        self.engine = engine if engine is not None else LLMEngine(model, **engine_options)
        self.model_name = served_model_name or (model if engine is None else str(self.engine.parts.model_name))
        self.host, self.max_waiting, self.log_level = host, max_waiting, log_level
        self._requested_port = port
        self.port: int | None = None
        self.server: OpenAIServer | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self, timeout: float = 60.0, start_engine: bool = True) -> "ServerThread":
        """Listen and serve. ``start_engine=False``: the engine loop is not started; the caller runs
        ``self.server.loop.run()`` in its own thread (``minikv serve`` does, in the main thread)."""
        self._sock = bind_socket(self.host, self._requested_port)
        self.port = self._sock.getsockname()[1]
        self.server = build_server(self.engine, self.model_name, self.max_waiting, start_engine)
        config = uvicorn.Config(self.server.app, log_level=self.log_level, access_log=self.log_level == "debug",
                                timeout_graceful_shutdown=5, lifespan="off")
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self._sock]},
                                        name="minikv-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive():
                self.stop()
                raise MinikvError(f"the HTTP server on {self.url} failed to start (see the log above)")
            if time.monotonic() > deadline:
                self.stop()
                raise MinikvError(f"the HTTP server on {self.url} did not start within {timeout:.0f} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Close the port, end the HTTP thread and the engine loop (requests in flight are aborted)."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True  # no new connections
        if self.server is not None:
            self.server.loop.stop()  # requests in flight end now (aborted), so their streams close
        if self._thread is not None:
            self._thread.join(15)
            if self._thread.is_alive() and self._uvicorn is not None:
                self._uvicorn.force_exit = True
                self._thread.join(5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(srv: ServerThread) -> None:
    """Serve until Ctrl-C or SIGTERM, the engine loop in this (the main) thread and HTTP in another; then stop."""
    import signal

    srv.start(start_engine=False)
    loop = srv.server.loop
    previous = signal.signal(signal.SIGTERM, lambda *_: loop.request_stop())
    logging.getLogger("minikv.serve").info("serving %s", srv.model_name)
    print(f"minikv serve: listening on {srv.url} (model {srv.model_name!r}; OpenAI base URL {srv.base_url})",
          flush=True)
    try:
        loop.run()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
        signal.signal(signal.SIGTERM, previous)

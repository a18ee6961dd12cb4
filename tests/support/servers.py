"""Run an ASGI app under a real uvicorn server in a background thread (loopback only)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, Literal

import uvicorn

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def _bind(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def free_port() -> int:
    """A port that was free a moment ago (racy by nature; ServerThread avoids the race)."""
    with _bind() as sock:
        return int(sock.getsockname()[1])


class ServerThread:
    def __init__(
        self,
        app: Any,
        *,
        port: int = 0,
        lifespan: Literal["auto", "on", "off"] = "on",
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """``options`` replace uvicorn settings (say, those ``interocc serve`` uses); the
        server always listens on 127.0.0.1 and ``port``. The defaults print no access log:
        uvicorn's names every client's address."""
        self.app = app
        self.port = port
        self.lifespan = lifespan
        self.options = {k: v for k, v in (options or {}).items() if k not in {"host", "port"}}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._sock = _bind(self.port)
        self.port = int(self._sock.getsockname()[1])
        config_options: dict[str, Any] = {
            "log_level": "warning",
            "access_log": False,
            "loop": "asyncio",
            "ws": "none",
            "timeout_graceful_shutdown": 5,
        }
        config_options.update(self.options)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, lifespan=self.lifespan, **config_options
        )
        self._server = server = uvicorn.Server(config)
        sock = self._sock

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # SystemExit on startup failure too
                self._error = exc

        self._thread = threading.Thread(target=run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server on port {self.port} failed to start: {self._error!r}")
            time.sleep(0.005)
        return self

    def request_stop(self) -> None:
        """Ask the server to shut down without waiting (lets several stop in parallel)."""
        if self._server is not None:
            self._server.should_exit = True

    def stop(self) -> None:
        self.request_stop()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(STOP_TIMEOUT)
            if thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not stop")
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ServerThread:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""uvicorn inside the caller's asyncio loop: bind, serve, stop gracefully.

Owns `HttpServer`. The listening socket is bound by `start` itself, so a taken port fails
there with `BindError` naming host:port (uvicorn would `sys.exit`), port 0 works (`.port` is
the port the kernel chose) and `start` returns only once the app's lifespan startup ran and
the socket accepts connections. uvicorn's own signal handlers are never installed (the
process's lifecycle code owns SIGTERM/SIGINT); uvicorn's log config is not applied (its loggers
go through `dex.runtime.logging`, at the library level: its "Started server process" lines
are not shown by default), uvicorn's access log is off, and the server logs its port at debug
level only: the service logs its own start line.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

import uvicorn

from dex.runtime.logging import get_logger

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to its end on a new event loop: uvloop's where it is installed, else
    asyncio's. Why: on the order path the event loop itself (tasks, futures, timers, socket
    callbacks) was about a third of a request's CPU on asyncio's pure-Python loop.

    Not for a process that forks (a sharded service's background snapshots): uvloop
    resolves addresses on libuv's threads, which stay, and a process with threads does not
    fork (`dex.services.shard.threads_besides_this`)."""
    try:
        import uvloop
    except ImportError:  # not on this platform (Windows): asyncio's own loop
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


class BindError(OSError):
    """The server could not listen on host:port (taken, not allowed, unknown address)."""


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals alone and reports when it has started."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.started_event = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn >= 0.29 installs SIGINT/SIGTERM handlers here; the service owns them.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.started_event.set()


class HttpServer:
    """Serve one ASGI app with uvicorn in the running loop; `start`, then `stop`."""

    def __init__(self, app: Any, *, stop_timeout: int = 10, **options: Any) -> None:
        """`stop_timeout`: seconds open requests get to finish on `stop` (uvicorn takes whole
        seconds); `options` go to `uvicorn.Config` (e.g. `proxy_headers`)."""
        self._app = app
        self._stop_timeout = stop_timeout
        self._options = options
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int:
        """The port actually bound (also when 0 was asked)."""
        if self._sock is None:
            raise RuntimeError("the server is not started")
        return int(self._sock.getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Bind host:port and serve; return once requests are accepted."""
        if self._task is not None:
            raise RuntimeError("the server is already started")
        sock = await _bind(host, port)
        config = uvicorn.Config(
            self._app,
            host=host,
            port=port,
            lifespan="on",
            log_config=None,
            access_log=False,  # process-wide in uvicorn; request logs belong to the app
            timeout_graceful_shutdown=self._stop_timeout,
            **self._options,
        )
        server = _EmbeddedServer(config)
        task = asyncio.create_task(_serve(server, sock, f"{host}:{port}"))
        started = asyncio.create_task(server.started_event.wait())
        try:
            await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            server.should_exit = True
            for pending in (started, task):
                pending.cancel()
            sock.close()
            raise
        if not server.started_event.is_set():
            started.cancel()
            sock.close()
            await task  # raises the startup failure
            raise RuntimeError(f"the HTTP server on {host}:{port} stopped during startup")
        self._server, self._task, self._sock = server, task, sock
        get_logger().debug("http server listening", host=host, port=self.port)

    async def stop(self) -> None:
        """Stop accepting, let open requests finish (up to `stop_timeout`), run shutdown.

        Releases the port. Does nothing if the server was never started or already stopped.
        """
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await task
        finally:
            self._server = self._task = None
            if self._sock is not None:
                self._sock.close()
            self._sock = None


async def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, made the way asyncio's `create_server` makes it.

    The protocol must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted
    connections only then, and without it each response waits for a delayed ACK (~40 ms).
    """
    loop = asyncio.get_running_loop()
    sock: socket.socket | None = None
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        if sock is not None:
            sock.close()
        reason = exc.strerror or str(exc)
        raise BindError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from exc
    return sock


async def _serve(server: _EmbeddedServer, sock: socket.socket, where: str) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        # uvicorn exits the process when the app's lifespan startup fails; we only stop.
        raise RuntimeError(f"the HTTP server on {where} failed to start (see the logs)") from exc

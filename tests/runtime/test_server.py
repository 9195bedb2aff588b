"""HttpServer: binds in start (port 0 included), refuses a taken port, stops and frees it."""

from __future__ import annotations

import asyncio
import errno
import signal
import socket

import httpx
import pytest
from litestar import Litestar, get

from dex.runtime.server import BindError, HttpServer


@get("/ping")
async def ping() -> str:
    return "pong"


def ping_app() -> Litestar:
    return Litestar([ping], logging_config=None)


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_port_zero_binds_a_free_port_and_serves_once_start_returns() -> None:
    async def main() -> None:
        server = HttpServer(ping_app())
        await server.start("127.0.0.1", 0)
        try:
            assert server.port > 0
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{server.port}/ping")
            assert (response.status_code, response.text) == (200, "pong")
        finally:
            await server.stop()

    asyncio.run(main())


def test_a_taken_port_is_a_bind_error_naming_host_and_port() -> None:
    taken = listening_socket()
    port = taken.getsockname()[1]

    async def main() -> None:
        with pytest.raises(BindError) as caught:
            await HttpServer(ping_app()).start("127.0.0.1", port)
        assert isinstance(caught.value, OSError)
        assert caught.value.errno == errno.EADDRINUSE
        assert f"127.0.0.1:{port}" in str(caught.value)

    try:
        asyncio.run(main())
    finally:
        taken.close()


def test_stop_releases_the_port() -> None:
    async def main() -> None:
        first = HttpServer(ping_app())
        await first.start("127.0.0.1", 0)
        port = first.port
        await first.stop()

        second = HttpServer(ping_app())
        await second.start("127.0.0.1", port)
        assert second.port == port
        await second.stop()

    asyncio.run(main())


def test_stop_is_safe_before_start_and_twice() -> None:
    async def main() -> None:
        server = HttpServer(ping_app())
        await server.stop()
        await server.start("127.0.0.1", 0)
        await server.stop()
        await server.stop()
        with pytest.raises(RuntimeError, match="not started"):
            _ = server.port

    asyncio.run(main())


def test_uvicorn_installs_no_signal_handlers() -> None:
    async def main() -> None:
        before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        server = HttpServer(ping_app())
        await server.start("127.0.0.1", 0)
        try:
            during = {sig: signal.getsignal(sig) for sig in before}
            assert during == before
        finally:
            await server.stop()

    asyncio.run(main())


def test_a_failing_app_startup_fails_start_and_frees_the_port() -> None:
    def explode() -> None:
        raise RuntimeError("cannot recover state")

    async def main() -> None:
        server = HttpServer(Litestar([ping], on_startup=[explode], logging_config=None))
        probe = listening_socket()
        port = probe.getsockname()[1]
        probe.close()

        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port} failed to start"):
            await server.start("127.0.0.1", port)

        again = HttpServer(ping_app())
        await again.start("127.0.0.1", port)
        await again.stop()

    asyncio.run(main())


def test_an_unknown_host_is_a_bind_error() -> None:
    async def main() -> None:
        with pytest.raises(BindError, match=r"no-such-host\.invalid:0"):
            await HttpServer(ping_app()).start("no-such-host.invalid", 0)

    asyncio.run(main())

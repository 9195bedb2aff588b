"""Serving units in one process. `run_units` owns the process lifecycle: bind every port,
start every unit, mark them started, wait for SIGTERM or SIGINT, then stop taking work
(`/readyz` 503), stop the units in order (each shard finishes its batch, snapshots and
deletes its lease) within `stop_timeout`, close the ports, return.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dex.app.units import START_ORDER, Unit
from dex.runtime.http import build_app
from dex.runtime.logging import get_logger
from dex.runtime.server import HttpServer
from dex.runtime.settings import Settings
from dex.runtime.wsframes import FrameProtocol


def _local_upstreams(units: list[Unit], servers: dict[str, HttpServer], settings: Settings) -> None:
    """A gateway in the same process as persistence / market-data talks to their bound ports."""
    gw = next((u.extra["gateway"] for u in units if "gateway" in u.extra), None)
    if gw is None:
        return
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    if "persistence" in servers:
        gw.persistence_url = f"http://{host}:{servers['persistence'].port}"
    if "market-data" in servers:
        gw.market_data_url = f"http://{host}:{servers['market-data'].port}"


@dataclass
class Running:
    """What `run_units` started, for callers that print URLs or drive tests."""

    units: list[Unit]
    servers: dict[str, HttpServer]
    stop: asyncio.Event


async def run_units(
    units: list[Unit],
    settings: Settings,
    *,
    on_ready: Callable[[Running], Awaitable[None] | None] | None = None,
    stop: asyncio.Event | None = None,
    ports: dict[str, int] | None = None,
) -> None:
    """Serve `units` until SIGTERM/SIGINT (or `stop` is set), then stop them gracefully.

    `ports` overrides the units' ports (0: any free port, as tests use)."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    servers: dict[str, HttpServer] = {}
    log = get_logger()
    ordered = sorted(units, key=lambda u: START_ORDER.index(u.name))
    try:
        for u in ordered:
            app = build_app(
                u.name,
                u.health,
                u.metrics,
                route_handlers=u.routes,
                admin_token=settings.admin_token,
                openapi=u.openapi,
                **u.app_options,
            )
            if u.wrap is not None:
                app = u.wrap(app)
            srv = HttpServer(
                app,
                stop_timeout=max(1, settings.stop_timeout_ms // 1000),
                ws_ping_interval=settings.ws_ping_ms / 1000,  # the feed's heartbeat
                ws_ping_timeout=settings.ws_ping_ms / 1000,
                ws=FrameProtocol,  # the feed's fan-out writes whole frames (dex.runtime.wsframes)
                ws_per_message_deflate=False,
            )
            await srv.start(settings.host, u.port if ports is None else ports.get(u.name, u.port))
            servers[u.name] = srv
        _local_upstreams(ordered, servers, settings)
        for u in ordered:
            await u.start()
            u.health.started = True
            log.info("service_started", service=u.name, port=servers[u.name].port)
        if on_ready is not None:
            res = on_ready(Running(ordered, servers, stop))
            if res is not None:
                await res
        await stop.wait()
    finally:
        log.info("stopping")
        for u in ordered:
            u.health.stopping = True
        for u in reversed(ordered):
            try:
                await asyncio.wait_for(u.stop(), settings.stop_timeout_ms / 1000)
            except Exception as e:
                log.error("stop_failed", service=u.name, error=f"{type(e).__name__}: {e}")
        for srv in servers.values():
            await srv.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        log.info("stopped")

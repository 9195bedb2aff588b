"""One embedded exchange per test module, on its own event loop in a background thread, so
the blocking `Client` and `asyncio.run`-driven async tests can both talk to it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dex.app.demo import add_demo_markets
from dex.app.run import Running, run_units
from dex.app.units import BUILDERS
from dex.bus.sqlite import SqliteBus
from dex.runtime.settings import Settings
from tests.support.polling import wait_until

WAIT = 30.0
NAMES = ("persistence", "market-data", "matching-engine", "risk-engine", "gateway")


@dataclass
class Exchange:
    url: str
    ws_url: str


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    yield from embedded_exchange(tmp_path_factory.mktemp("dex"))


def embedded_exchange(tmp: Path) -> Iterator[Exchange]:
    """Every service of `dex up` in a thread of this process, on free ports, until closed."""
    loop = asyncio.new_event_loop()
    started: dict[str, object] = {}
    ready = threading.Event()

    async def main() -> None:
        bus = SqliteBus(tmp / "bus.sqlite3")
        settings = Settings(data_dir=str(tmp), stop_timeout_ms=5000)
        await add_demo_markets(bus)
        units = [BUILDERS[n](bus, settings) for n in NAMES]
        stop = asyncio.Event()
        started["stop"] = stop

        def on_ready(running: Running) -> None:
            started["port"] = running.servers["gateway"].port
            ready.set()

        try:
            await run_units(
                units, settings, on_ready=on_ready, stop=stop, ports=dict.fromkeys(NAMES, 0)
            )
        finally:
            bus.close()
            ready.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(WAIT) and "port" in started, "the exchange did not start"
    url = f"http://127.0.0.1:{started['port']}"
    wait_until(
        "the gateway ready",
        lambda: httpx.get(f"{url}/readyz").status_code == 200,
        timeout=WAIT,
        retry_on=(httpx.HTTPError,),
    )
    yield Exchange(url, f"ws://127.0.0.1:{started['port']}/v1/ws")
    stop = started["stop"]
    assert isinstance(stop, asyncio.Event)
    loop.call_soon_threadsafe(stop.set)
    thread.join(WAIT)

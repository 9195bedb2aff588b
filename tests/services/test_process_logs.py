"""The logs of a real `dex up`: one start record per service, no library chatter (httpx's line
per proxied GET, uvicorn's "Started server process" per port) at the default levels, and
library records back when DEX_LIBRARY_LOG_LEVEL asks for them. Records are parsed JSON lines
and checked by their fields."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from dex.runtime.settings import SERVICES
from tests.services.test_smoke import free_base
from tests.support.dex_process import DexProcess, wait_on_process
from tests.support.trading import settled, trader

PROXIED_GETS = 20


def _run_and_get(
    tmp_path: Path, extra: dict[str, str]
) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
    """Start `dex up`, send proxied GETs through the gateway, stop; the records and pid."""
    base = free_base()
    ports = {s: base + i for i, s in enumerate(SERVICES)}
    dex = DexProcess.start(
        ["up", "--data-dir", str(tmp_path / "data")], {"DEX_PORT": str(base), **extra}, tmp_path
    )
    try:
        for s in SERVICES:
            url = f"http://127.0.0.1:{ports[s]}/readyz"
            wait_on_process(
                f"{s} ready", lambda url=url: httpx.get(url, timeout=2).status_code == 200
            )
        # half public reads proxied to market data, half a trader's signed balance reads
        # proxied to persistence (retried while the history catches up with its key)
        with trader(f"http://127.0.0.1:{ports['gateway']}") as c:
            for i in range(PROXIED_GETS):
                if i % 2:
                    assert c.ticker("ETH-USDC")["market"] == "ETH-USDC"
                else:
                    settled("the trader's balances", lambda c=c: c.balances() == [])
    finally:
        code = dex.stop()
    assert code == 0, dex.output()[-4000:]
    return dex.records(), dex.pid, ports


def test_one_start_record_per_service_and_no_library_info_records(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k == "DEX_LIBRARY_LOG_LEVEL"}
    assert env == {}, "the default level is under test"
    records, pid, ports = _run_and_get(tmp_path, {"DEX_LOG_LEVEL": "info"})

    library = Counter((r["logger"], r["level"]) for r in records if "logger" in r)
    assert not [k for k in library if k[1] in ("debug", "info")], library
    starts = [r for r in records if r["event"] == "service_started"]
    assert sorted((r["service"], r["port"], r["pid"]) for r in starts) == sorted(
        (s, ports[s], pid) for s in SERVICES
    )


def test_library_records_are_there_when_asked(tmp_path: Path) -> None:
    records, _, _ = _run_and_get(
        tmp_path, {"DEX_LOG_LEVEL": "info", "DEX_LIBRARY_LOG_LEVEL": "info"}
    )

    by_logger = Counter(r["logger"] for r in records if r.get("level") == "info" and "logger" in r)
    assert by_logger["httpx"] >= PROXIED_GETS
    assert by_logger["uvicorn.error"] >= len(SERVICES)

"""`dex up --distributed` supervises its children: every exit is reaped and logged, the child
restarted with back-off; SIGTERM stops them all (SIGKILL for one that will not stop), exit 0.

The first test is a real run (a private durable redis-server, free ports); the others run the
`Supervisor` in this process with small commands as children and read its JSON log records.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dex.app.launch import Child, Supervisor
from dex.runtime.logging import configure_logging, reset_logging
from dex.runtime.settings import SERVICES
from tests.services.test_smoke import free_base
from tests.support.dex_process import DexProcess, children, cmdline, ready, state, wait_on_process
from tests.support.polling import eventually


def _child_serving(parent: int, service: str) -> int | None:
    """The pid of the live child of `parent` that runs `dex serve <service>`."""
    for pid in children(parent):
        if cmdline(pid)[-2:] == ["serve", service] and state(pid) not in (None, "Z"):
            return pid
    return None


def test_a_killed_child_is_reaped_reported_restarted_and_all_stop_on_sigterm(
    tmp_path: Path, durable_redis: str
) -> None:
    base = free_base()
    ports = {s: base + i for i, s in enumerate(SERVICES)}
    env = {
        "DEX_PORT": str(base),
        "DEX_REDIS_URL": durable_redis,
        "DEX_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'history.sqlite3'}",
        "DEX_LEASE_TTL_MS": "1000",
        "DEX_STOP_TIMEOUT_MS": "5000",
    }
    dex = DexProcess.start(["up", "--distributed"], env, tmp_path)
    stopped = False
    try:
        for s in SERVICES:
            wait_on_process(
                f"{s} ready", lambda s=s: ready(f"http://127.0.0.1:{ports[s]}"), timeout=30
            )
        started = Counter(r["service"] for r in dex.records() if r["event"] == "service_started")
        assert started == Counter(SERVICES)  # `dex serve`: one start line each

        victim = wait_on_process(
            "the market-data child", lambda: _child_serving(dex.pid, "market-data")
        )
        os.kill(victim, signal.SIGKILL)

        wait_on_process("the killed child reaped", lambda: state(victim) is None, timeout=10)
        exits = [r for r in dex.records() if r["event"] == "child_exited"]
        assert [(r["service"], r["pid"], r["signal"]) for r in exits] == [
            ("market-data", victim, "SIGKILL")
        ]
        assert exits[0]["status"] == -signal.SIGKILL
        again = wait_on_process(
            "a new market-data child", lambda: _child_serving(dex.pid, "market-data")
        )
        assert again != victim
        wait_on_process(
            "market-data ready again",
            lambda: ready(f"http://127.0.0.1:{ports['market-data']}"),
            timeout=30,
        )
        restarted = [
            r for r in dex.records() if r["event"] == "child_started" and r["pid"] == again
        ]
        assert [(r["service"], r["restarts"]) for r in restarted] == [("market-data", 1)]

        tree = children(dex.pid)
        assert len(tree) == len(SERVICES)
        begin = time.monotonic()
        code = dex.stop(timeout=30)
        stopped = True
        assert code == 0, dex.output()[-4000:]
        assert time.monotonic() - begin < 30
        left = [pid for pid in tree if state(pid) is not None]
        assert left == [], f"children left after the supervisor exited: {left}"
        exits = [r for r in dex.records() if r["event"] == "child_exited"]
        assert sorted(r["pid"] for r in exits) == sorted([victim, *tree])
    finally:
        if not stopped:
            dex.kill()


# ---------------------------------------------------------------------- in process


@pytest.fixture
def log_records() -> Iterator[Any]:
    stream = io.StringIO()
    configure_logging("dex", "info", stream)

    def read(event: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        return [r for r in lines if event is None or r["event"] == event]

    yield read
    reset_logging()


def _python(code: str, service: str = "probe") -> Child:
    return Child(service, 0, 0, (sys.executable, "-c", code), dict(os.environ))


def test_a_child_that_keeps_exiting_is_restarted_with_a_doubling_capped_backoff(
    log_records: Any,
) -> None:
    sup = Supervisor([_python("import sys; sys.exit(3)")], kill_after=5, backoff=(0.02, 0.08, 60.0))

    async def main() -> None:
        run = asyncio.create_task(sup.run())
        await eventually(
            "five restarts", lambda: len(log_records("child_restarting")) >= 5, timeout=10
        )
        sup.stopping.set()
        await asyncio.wait_for(run, 10)

    asyncio.run(main())
    restarting = log_records("child_restarting")
    assert [r["delay_s"] for r in restarting[:5]] == [0.02, 0.04, 0.08, 0.08, 0.08]
    assert [r["restarts"] for r in restarting[:5]] == [1, 2, 3, 4, 5]
    exits = log_records("child_exited")
    assert {(r["service"], r["status"], r["signal"], r["level"]) for r in exits} == {
        ("probe", 3, None, "error")
    }
    starts = log_records("child_started")
    assert [r["restarts"] for r in starts] == list(range(len(starts)))
    assert len({r["pid"] for r in starts}) == len(starts) == len(exits)
    assert all(state(r["pid"]) is None for r in starts)  # every one reaped


def test_the_backoff_starts_over_after_a_child_stayed_up(log_records: Any) -> None:
    # each run lasts 0.2 s, longer than the 0.1 s after which a child counts as healthy
    sup = Supervisor(
        [_python("import time; time.sleep(0.2)")], kill_after=5, backoff=(0.01, 1.0, 0.1)
    )

    async def main() -> None:
        run = asyncio.create_task(sup.run())
        await eventually(
            "three restarts", lambda: len(log_records("child_restarting")) >= 3, timeout=10
        )
        sup.stopping.set()
        await asyncio.wait_for(run, 10)

    asyncio.run(main())
    assert {r["delay_s"] for r in log_records("child_restarting")} == {0.01}


def test_sigterm_stops_every_child_and_kills_one_that_ignores_it(
    log_records: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "ignoring"
    stubborn = _python(
        "import pathlib, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "time.sleep(60)\n",
        service="stubborn",
    )
    polite = _python("import time; time.sleep(60)", service="polite")
    sup = Supervisor([stubborn, polite], kill_after=0.5)

    async def main() -> float:
        run = asyncio.create_task(sup.run())
        await eventually("the stubborn child ignoring SIGTERM", marker.exists, timeout=10)
        await eventually("both started", lambda: len(log_records("child_started")) == 2, timeout=10)
        begin = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's own handler takes it
        await asyncio.wait_for(run, 10)
        return time.monotonic() - begin

    took = asyncio.run(main())
    assert took < 5
    exits = {r["service"]: r for r in log_records("child_exited")}
    assert (exits["stubborn"]["signal"], exits["polite"]["signal"]) == ("SIGKILL", "SIGTERM")
    assert [r["service"] for r in log_records("child_killed")] == ["stubborn"]
    assert log_records("child_restarting") == []
    assert all(state(r["pid"]) is None for r in log_records("child_started"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers removed

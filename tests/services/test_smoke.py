"""Smoke tests of both run modes, as real processes: start, become ready, place crossing
orders through the gateway (two fresh wallets onboarded with dex.client, signed requests),
see the trade and the settled balances, stop cleanly (exit 0).

Embedded: `dex up` (SQLite-kept embedded bus, no Redis). Distributed: `dex up --distributed`
with two matching-engine replicas against a private `redis-server --appendonly yes
--appendfsync always` (never the shared one), and SQLite history (PostgreSQL when
DEX_DATABASE_URL is set).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from dex.client import Client, Credentials, InvalidRequest
from dex.runtime.settings import SERVICES
from tests.support.dex_process import ready, wait_on_process
from tests.support.redis_server import private_redis_or_skip
from tests.support.trading import Holdings, holdings, settled, trader


def free_base(span: int = 30) -> int:
    """A port such that base .. base + span are free right now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + span > 65000:
            continue
        socks = []
        try:
            for p in range(base, base + span):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free port range")


@pytest.fixture
def ports() -> dict[str, int]:
    base = free_base()
    return {s: base + i for i, s in enumerate(SERVICES)}


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dex.cli", *args],
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(
            "did not stop within 30 s of SIGTERM:\n" + out.decode()[-4000:]
        ) from None
    return proc.returncode, out.decode()


def trade_and_settle(ports: dict[str, int]) -> Credentials:
    """Two fresh traders cross on ETH-USDC; the buyer's credentials (to trade again)."""
    gw = f"http://127.0.0.1:{ports['gateway']}"
    for s in SERVICES:
        wait_on_process(f"{s} ready", lambda s=s: ready(f"http://127.0.0.1:{ports[s]}"))
    seller, buyer = trader(gw), trader(gw)
    assert {m["market"] for m in seller.markets()} >= {"ETH-USDC", "BTC-USDC"}
    funded = seller.faucet("ETH", "2")
    assert funded["asset"] == "ETH" and Decimal(funded["available"]) == 2, funded
    funded = buyer.faucet("USDC", "10000")
    assert funded["asset"] == "USDC" and Decimal(funded["available"]) == 10000, funded
    # bad input: named field, nothing sent
    with pytest.raises(InvalidRequest) as bad:
        buyer.place("ETH-USDC", "buy", "limit", size="1.00001", price="2000")
    assert bad.value.status == 400 and bad.value.field == "size", bad.value
    sell = seller.place("ETH-USDC", "sell", "limit", size="1.5", price="2000")
    assert sell.status == "open", sell
    buy = buyer.place("ETH-USDC", "buy", "limit", size="1", price="2000.5")
    assert buy.status == "filled" and buy.filled == 1, buy
    [fill] = buy.fills
    # the trade at the resting price, both amounts at the market's precision
    assert (str(fill.price), str(fill.size), fill.liquidity) == ("2000.00", "1.0000", "taker")

    settled("settled balances", lambda: _balances_ok(holdings(buyer), holdings(seller)))
    assert buyer.credentials is not None
    return buyer.credentials


def _balances_ok(b: Holdings, s: Holdings) -> bool:
    """Buyer got 1 ETH and paid 2000 USDC (its 0.5 limit excess released); seller sold 1 of 2 ETH,
    0.5 still locked on its resting order, and got 2000 USDC. No fees are set."""
    zero = Decimal(0)
    return (
        b.get("ETH") == (1, zero)
        and b.get("USDC") == (8000, zero)
        and s.get("ETH") == (Decimal("0.5"), Decimal("0.5"))
        and s.get("USDC") == (2000, zero)
    )


def test_embedded_dex_up_trades_and_stops_cleanly(tmp_path: Path, ports: dict[str, int]) -> None:
    proc = start(
        ["up", "--data-dir", str(tmp_path / "data")], {"DEX_PORT": str(ports["gateway"])}, tmp_path
    )
    try:
        buyer = trade_and_settle(ports)
    finally:
        code, out = stop(proc)
    assert code == 0, out[-4000:]
    assert "dex is up" in out
    assert (tmp_path / "data" / "bus.sqlite3").exists()

    # a restarted `dex up` resumes where it stopped: the buyer's key, its balances, and the
    # resting 0.5 ETH ask
    proc = start(
        ["up", "--data-dir", str(tmp_path / "data")], {"DEX_PORT": str(ports["gateway"])}, tmp_path
    )
    try:
        for s in SERVICES:
            wait_on_process(f"{s} ready again", lambda s=s: ready(f"http://127.0.0.1:{ports[s]}"))
        c = Client(f"http://127.0.0.1:{ports['gateway']}", buyer, timeout=15)
        settled("the buyer's balances kept", lambda: holdings(c).get("USDC") == (8000, 0))
        buy = c.place("ETH-USDC", "buy", "limit", size="0.5", price="2000")
        assert buy.status == "filled", buy
        assert [f.trade_id for f in buy.fills] == [2]  # numbering goes on from the first run
    finally:
        code, out = stop(proc)
    assert code == 0, out[-4000:]
    verified = db_verify(["--data-dir", str(tmp_path / "data")], {})
    assert "verified: the ledger, the balances and the flows agree" in verified


def db_verify(args: list[str], env: dict[str, str]) -> str:
    """`dex db verify` (the system tests end with it): its output; exit 0 required."""
    # the store and bus of the run checked, never those the environment names for other tests
    clean = {k: v for k, v in os.environ.items() if k not in ("DEX_DATABASE_URL", "DEX_REDIS_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "dex.cli", "db", "verify", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_distributed_dex_up_trades_and_stops_cleanly(
    tmp_path: Path, ports: dict[str, int], durable_redis: str
) -> None:
    env = {
        "DEX_PORT": str(ports["gateway"]),
        "DEX_REDIS_URL": durable_redis,
        "DEX_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'history.sqlite3'}",
        "DEX_LEASE_TTL_MS": "1000",
    }
    proc = start(["up", "--distributed", "--replicas", "matching-engine=2"], env, tmp_path)
    try:
        trade_and_settle(ports)
    finally:
        code, out = stop(proc)
    assert code == 0, out[-4000:]
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    started = Counter(r["service"] for r in records if r["event"] == "child_started")
    assert started == Counter({**dict.fromkeys(SERVICES, 1), "matching-engine": 2})
    verified = db_verify([], env)  # the history against the risk shards' snapshots on Redis
    assert "verified: the ledger, the balances and the flows agree" in verified
    assert "risk snapshots not compared" not in verified


@pytest.mark.parametrize(
    "config",
    [
        {"appendonly": "no"},
        {"appendfsync": "everysec"},
        {"maxmemory-policy": "allkeys-lru"},
    ],
    ids=["no-aof", "fsync-everysec", "evicting"],
)
def test_distributed_refuses_a_redis_that_may_lose_writes(
    tmp_path: Path, config: dict[str, str]
) -> None:
    with private_redis_or_skip(config) as redis_server:
        proc = subprocess.run(
            [sys.executable, "-m", "dex.cli", "up", "--distributed"],
            env={**os.environ, "DEX_REDIS_URL": redis_server.url},
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert b"--allow-unsafe-redis" in proc.stderr
    [(setting, value)] = config.items()
    assert f"{setting} is {value!r}".encode() in proc.stderr  # it names what is unsafe


def test_a_second_dex_up_on_the_same_data_folder_stops_with_one_line(
    tmp_path: Path, ports: dict[str, int]
) -> None:
    first = start(
        ["up", "--data-dir", str(tmp_path / "data")], {"DEX_PORT": str(ports["gateway"])}, tmp_path
    )
    try:
        wait_on_process("first ready", lambda: ready(f"http://127.0.0.1:{ports['gateway']}"))
        base = free_base()
        second = subprocess.run(
            [sys.executable, "-m", "dex.cli", "up", "--data-dir", str(tmp_path / "data")],
            env={**os.environ, "DEX_PORT": str(base)},
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
        )
        assert second.returncode == 2
        err = second.stderr.decode().strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: cannot use the data folder"), err
        taken = subprocess.run(
            [sys.executable, "-m", "dex.cli", "up", "--data-dir", str(tmp_path / "other")],
            env={**os.environ, "DEX_PORT": str(ports["gateway"])},
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
        )
        assert taken.returncode == 2
        assert b"another dex up running?" in taken.stderr
    finally:
        code, out = stop(first)
    assert code == 0, out[-3000:]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DEX_MAX_LAG": "abc"}, "DEX_MAX_LAG"),
        ({"DEX_ENV": "production", "DEX_FAUCET": "true"}, "DEX_FAUCET"),
        ({"DEX_REDIS_URL": ""}, "DEX_REDIS_URL"),
        ({"DEX_REDIS_URL": "redis://127.0.0.1:1/0"}, "DEX_REDIS_URL"),
    ],
)
def test_serve_stops_with_one_line_naming_a_bad_setting(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEX_")}
    proc = subprocess.run(
        [sys.executable, "-m", "dex.cli", "serve", "matching-engine"],
        env={**base, "DEX_REDIS_URL": "redis://127.0.0.1:1/0", **env},
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2, proc.stderr.decode()
    assert len(lines) == 1 and lines[0].startswith(f"error: {named}"), lines

"""Operator controls on a running embedded exchange: the admin token guards every endpoint
(401 and nothing changes), and `dex admin ...` drives the kill switches, market status, new
markets, test funds and snapshots, each visible in what the exchange then does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dex.runtime.settings import SERVICES
from dex.services.layout import ADMIN_STREAM
from tests.services.test_smoke import free_base, start, stop, wait_until

TOKEN = "s3cret-admin-token"
ALICE = "0x" + "a" * 40
BOB = "0x" + "b" * 40


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    tmp = tmp_path_factory.mktemp("admin")
    base = free_base()
    ports = {s: base + i for i, s in enumerate(SERVICES)}
    proc = start(
        ["up", "--data-dir", str(tmp / "data")],
        {"DEX_PORT": str(base), "DEX_ADMIN_TOKEN": TOKEN},
        tmp,
    )
    try:
        for s in SERVICES:
            wait_until(
                f"{s} ready",
                lambda s=s: (
                    httpx.get(f"http://127.0.0.1:{ports[s]}/readyz", timeout=2).status_code == 200
                ),
            )
        yield ports
    finally:
        code, out = stop(proc)
        assert code == 0, out[-3000:]


def admin(ports: dict[str, int], *args: str, token: str = TOKEN) -> tuple[int, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dex.cli",
            "admin",
            "--matching-url",
            f"http://127.0.0.1:{ports['matching-engine']}",
            "--risk-url",
            f"http://127.0.0.1:{ports['risk-engine']}",
            *args,
        ],
        env={**os.environ, "DEX_ADMIN_TOKEN": token},
        capture_output=True,
        timeout=60,
    )
    out = proc.stdout.decode()
    return proc.returncode, json.loads(out) if out.strip() else proc.stderr.decode()


def order(
    ports: dict[str, int],
    account: str,
    side: str,
    price: str,
    size: str = "0.1",
    market: str = "ETH-USDC",
) -> dict[str, Any]:
    r = httpx.post(
        f"http://127.0.0.1:{ports['gateway']}/v1/orders",
        timeout=15,
        json={
            "market": market,
            "account": account,
            "side": side,
            "type": "limit",
            "price": price,
            "size": size,
        },
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def shards(ports: dict[str, int], service: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(
        f"http://127.0.0.1:{ports[service]}/internal/shards", timeout=5
    ).json()
    return body


def test_admin_endpoints_refuse_a_missing_or_wrong_token_and_change_nothing(
    exchange: dict[str, int],
) -> None:
    before = shards(exchange, "matching-engine")
    url = f"http://127.0.0.1:{exchange['risk-engine']}/admin/halt"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.post(url, headers=headers, timeout=5)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
    code, out = admin(exchange, "market-status", "ETH-USDC", "halted", token="nope")
    assert code == 1 and out["error"]["code"] == "unauthorized"
    assert shards(exchange, "matching-engine")["shards"].keys() == before["shards"].keys()
    # nothing reached the admin stream: orders still trade normally
    admin(exchange, "credit", ALICE, "USDC", "100000")
    assert order(exchange, ALICE, "buy", "1950")["status"] == "open"


def test_kill_switches_market_status_and_new_markets_take_effect(exchange: dict[str, int]) -> None:
    for who, asset, amount in ((ALICE, "USDC", "100000"), (BOB, "ETH", "10")):
        code, out = admin(exchange, "credit", who, asset, amount)
        assert code == 0 and out["accepted"] is True, out

    code, _ = admin(exchange, "freeze", BOB)
    assert code == 0
    frozen = order(exchange, BOB, "sell", "2000")
    assert frozen["status"] == "rejected" and frozen["code"] == "account_frozen"
    assert admin(exchange, "unfreeze", BOB)[0] == 0
    assert order(exchange, BOB, "sell", "2000")["status"] == "open"

    assert admin(exchange, "disable", ALICE, "--market", "ETH-USDC")[0] == 0
    assert order(exchange, ALICE, "buy", "1900")["code"] == "trading_disabled"
    assert admin(exchange, "enable", ALICE, "--market", "ETH-USDC")[0] == 0

    assert admin(exchange, "halt")[0] == 0
    assert order(exchange, ALICE, "buy", "1900")["code"] == "global_halt"
    assert admin(exchange, "resume")[0] == 0

    code, out = admin(exchange, "market-status", "ETH-USDC", "cancel_only")
    assert code == 0 and out["stream"] == ADMIN_STREAM
    wait_until(
        "risk sees cancel_only",
        lambda: order(exchange, ALICE, "buy", "1900").get("code") == "market_unavailable",
    )
    assert admin(exchange, "market-status", "ETH-USDC", "active")[0] == 0
    wait_until(
        "risk sees active", lambda: order(exchange, ALICE, "buy", "1900")["status"] == "open"
    )
    filled = order(exchange, ALICE, "buy", "2000")
    assert filled["status"] == "filled", filled

    spec = {
        "market": "SOL-USDC",
        "base": "SOL",
        "quote": "USDC",
        "tick_size": "0.001",
        "lot_size": "0.01",
        "min_size": "0.01",
        "min_notional": "1",
        "price_band_bps": 500,
    }
    code, out = admin(exchange, "add-market", json.dumps(spec))
    assert code == 0, out
    bad = dict(spec, market="BAD-USDC", base="BAD", lot_size="0.0000000001")
    code, out = admin(exchange, "add-market", json.dumps(bad))
    assert code == 1 and out["error"]["field"] == "lot_size", out
    markets = httpx.get(f"http://127.0.0.1:{exchange['gateway']}/v1/markets", timeout=5).json()
    assert "SOL-USDC" in {m["market"] for m in markets}
    assert "BAD-USDC" not in {m["market"] for m in markets}

    code, out = admin(exchange, "snapshot")
    assert code == 0 and out["snapshots"], out
    info = shards(exchange, "matching-engine")["shards"]
    for tag, seq in out["snapshots"].items():
        assert info[tag]["snapshot_log_seq"] >= seq

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
from dex.wire.layout import ADMIN_STREAM
from tests.services.test_smoke import free_base, start, stop
from tests.support.dex_process import wait_on_process

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
            wait_on_process(
                f"{s} ready",
                lambda s=s: (
                    httpx.get(f"http://127.0.0.1:{ports[s]}/readyz", timeout=2).status_code == 200
                ),
            )
        yield ports
    finally:
        code, out = stop(proc)
        assert code == 0, out[-3000:]


def admin(
    ports: dict[str, int], *args: str, token: str = TOKEN, raw: bool = True
) -> tuple[int, Any]:
    """Run `dex admin ...`: (exit code, the JSON it printed, or what it wrote to stderr).
    `raw`: with `--json`, so an error reply is printed as the server's JSON body."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dex.cli",
            "admin",
            *(["--json"] if raw else []),
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
    wait_on_process(
        "risk sees cancel_only",
        lambda: order(exchange, ALICE, "buy", "1900").get("code") == "market_unavailable",
    )
    assert admin(exchange, "market-status", "ETH-USDC", "active")[0] == 0
    wait_on_process(
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


def usdc_units(ports: dict[str, int], account: str) -> int:
    body = httpx.get(
        f"http://127.0.0.1:{ports['gateway']}/v1/accounts/{account}/balances", timeout=5
    ).json()
    return sum(b["available_units"] for b in body["balances"] if b["asset"] == "USDC")


def test_admin_commands_refuse_an_unknown_market_with_the_reason(exchange: dict[str, int]) -> None:
    commands = [
        ("fees", "NOPE-USDC", "10", "20"),
        ("market-status", "NOPE-USDC", "halted"),
        ("disable", ALICE, "--market", "NOPE-USDC"),
        ("enable", ALICE, "--market", "NOPE-USDC"),
    ]
    for args in commands:
        code, out = admin(exchange, *args)
        assert code == 1, (args, out)
        assert out["error"]["code"] == "unknown_market" and out["error"]["field"] == "market"
        assert "NOPE-USDC" in out["error"]["message"], out
        # without --json: one line naming the market, on stderr
        code, line = admin(exchange, *args, raw=False)
        assert code == 1 and isinstance(line, str), (args, line)
        assert len(line.strip().splitlines()) == 1 and "NOPE-USDC" in line, line
    # the same commands on a known market still pass
    assert admin(exchange, "fees", "ETH-USDC", "-1", "5")[0] == 0
    assert admin(exchange, "disable", ALICE, "--market", "BTC-USDC")[0] == 0
    assert admin(exchange, "enable", ALICE, "--market", "BTC-USDC")[0] == 0
    assert admin(exchange, "fees", "ETH-USDC", "0", "0")[0] == 0


def test_a_repeated_chain_deposit_is_reported_as_a_duplicate(exchange: dict[str, int]) -> None:
    carol = "0x" + "c" * 40
    tx = "0x" + "5e" * 32
    code, out = admin(exchange, "credit", carol, "USDC", "5", "--tx-id", tx)
    assert code == 0 and out["accepted"] is True and out["available_units"] == 5_000_000, out
    assert out["cmd"]["tx_id"] == tx
    code, out = admin(exchange, "credit", carol, "USDC", "5", "--tx-id", tx)
    assert code == 1 and out["error"]["code"] == "duplicate_deposit", out
    assert tx in out["error"]["message"]
    # another log index of the same transaction is another deposit
    code, out = admin(exchange, "credit", carol, "USDC", "5", "--tx-id", tx, "--log-index", "1")
    assert code == 0 and out["available_units"] == 10_000_000, out
    wait_on_process("the history shows 10 USDC", lambda: usdc_units(exchange, carol) == 10_000_000)
    # an operator's transaction id is checked at the edge
    url = f"http://127.0.0.1:{exchange['risk-engine']}/admin/accounts/{carol}/credit"
    for bad in ("", "a\x00b", "0xab\n", "x" * 200, "faucet:12ab", "faucet:\uff11\uff12"):
        r = httpx.post(
            url,
            json={"asset": "USDC", "amount": "5", "tx_id": bad},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=15,
        )
        assert r.status_code == 400 and r.json()["error"]["field"] == "tx_id", (bad, r.text)
    code, out = admin(exchange, "credit", carol, "USDC", "5", "--tx-id", "faucet:12ab")
    assert code == 1 and out["error"]["field"] == "tx_id", out


def test_credits_count_across_a_restart_on_the_same_data_folder(tmp_path: Any) -> None:
    dave = "0x" + "d" * 40
    base = free_base()
    ports = {s: base + i for i, s in enumerate(SERVICES)}
    answers = []
    for _ in range(2):
        proc = start(
            ["up", "--data-dir", str(tmp_path / "data")],
            {"DEX_PORT": str(base), "DEX_ADMIN_TOKEN": TOKEN},
            tmp_path,
        )
        try:
            for s in SERVICES:
                wait_on_process(
                    f"{s} ready",
                    lambda s=s: (
                        httpx.get(f"http://127.0.0.1:{ports[s]}/readyz", timeout=2).status_code
                        == 200
                    ),
                )
            code, out = admin(ports, "credit", dave, "USDC", "7")
            assert code == 0, out
            answers.append(out)
            want = 7_000_000 * len(answers)
            wait_on_process(
                f"the history shows {want} units",
                lambda want=want: usdc_units(ports, dave) == want,
            )
        finally:
            code, log = stop(proc)
            assert code == 0, log[-3000:]
    assert [a["available_units"] for a in answers] == [7_000_000, 14_000_000]
    assert answers[0]["cmd"]["tx_id"] != answers[1]["cmd"]["tx_id"]

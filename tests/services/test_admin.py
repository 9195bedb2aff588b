"""Operator controls on a running embedded exchange: the admin token guards every endpoint
(401 and nothing changes), and `dex admin ...` drives the kill switches, market status, new
markets, test funds and snapshots, each visible in what the exchange then does: the orders
of traders (fresh wallets trading through dex.client) and the balances persistence keeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from dex.client import AccountFrozen, Client, DexError
from dex.runtime.settings import SERVICES
from dex.wire.layout import ADMIN_STREAM
from tests.services.test_smoke import free_base, start, stop
from tests.support.dex_process import wait_on_process
from tests.support.trading import account_of, internal_balances, trader

TOKEN = "s3cret-admin-token"


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


@pytest.fixture(scope="module")
def alice(exchange: dict[str, int]) -> Iterator[Client]:
    """A trader of the module's exchange (a fresh wallet, its key; funds by admin credit)."""
    with trader(f"http://127.0.0.1:{exchange['gateway']}") as c:
        yield c


@pytest.fixture(scope="module")
def bob(exchange: dict[str, int]) -> Iterator[Client]:
    with trader(f"http://127.0.0.1:{exchange['gateway']}") as c:
        yield c


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
    client: Client, side: str, price: str, size: str = "0.1", market: str = "ETH-USDC"
) -> str:
    """A limit order's outcome: its status, or the code of the refusal."""
    try:
        placed = client.place(market, side, "limit", price=price, size=size)
    except DexError as e:
        return e.code
    assert placed.status is not None, placed
    return placed.status


def shards(ports: dict[str, int], service: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(
        f"http://127.0.0.1:{ports[service]}/internal/shards", timeout=5
    ).json()
    return body


def test_admin_endpoints_refuse_a_missing_or_wrong_token_and_change_nothing(
    exchange: dict[str, int], alice: Client
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
    assert admin(exchange, "credit", account_of(alice), "USDC", "100000")[0] == 0
    assert order(alice, "buy", "1950") == "open"


def test_kill_switches_market_status_and_new_markets_take_effect(
    exchange: dict[str, int], alice: Client, bob: Client
) -> None:
    alice_acct, bob_acct = account_of(alice), account_of(bob)
    for who, asset, amount in ((alice_acct, "USDC", "100000"), (bob_acct, "ETH", "10")):
        code, out = admin(exchange, "credit", who, asset, amount)
        assert code == 0 and out["accepted"] is True, out

    code, _ = admin(exchange, "freeze", bob_acct)
    assert code == 0
    with pytest.raises(AccountFrozen) as frozen:
        bob.place("ETH-USDC", "sell", "limit", price="2000", size="0.1")
    assert frozen.value.status == 403, frozen.value
    assert admin(exchange, "unfreeze", bob_acct)[0] == 0
    assert order(bob, "sell", "2000") == "open"

    assert admin(exchange, "disable", alice_acct, "--market", "ETH-USDC")[0] == 0
    assert order(alice, "buy", "1900") == "trading_disabled"
    assert admin(exchange, "enable", alice_acct, "--market", "ETH-USDC")[0] == 0

    assert admin(exchange, "halt")[0] == 0
    assert order(alice, "buy", "1900") == "global_halt"
    assert admin(exchange, "resume")[0] == 0

    code, out = admin(exchange, "market-status", "ETH-USDC", "cancel_only")
    assert code == 0 and out["stream"] == ADMIN_STREAM
    wait_on_process(
        "risk sees cancel_only",
        lambda: order(alice, "buy", "1900") == "market_unavailable",
    )
    assert admin(exchange, "market-status", "ETH-USDC", "active")[0] == 0
    wait_on_process("risk sees active", lambda: order(alice, "buy", "1900") == "open")
    assert order(alice, "buy", "2000") == "filled"  # Bob's ask

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
    markets = alice.markets()
    assert "SOL-USDC" in {m["market"] for m in markets}
    assert "BAD-USDC" not in {m["market"] for m in markets}

    code, out = admin(exchange, "snapshot")
    assert code == 0 and out["snapshots"], out
    info = shards(exchange, "matching-engine")["shards"]
    for tag, seq in out["snapshots"].items():
        assert info[tag]["snapshot_log_seq"] >= seq


def usdc(ports: dict[str, int], account: str) -> Decimal:
    """The available USDC of `account` as the operator sees it (persistence's own route)."""
    got = internal_balances(f"http://127.0.0.1:{ports['persistence']}", account)
    return got.get("USDC", (Decimal(0), Decimal(0)))[0]


def test_admin_commands_refuse_an_unknown_market_with_the_reason(
    exchange: dict[str, int], alice: Client
) -> None:
    alice_acct = account_of(alice)
    commands = [
        ("fees", "NOPE-USDC", "10", "20"),
        ("market-status", "NOPE-USDC", "halted"),
        ("disable", alice_acct, "--market", "NOPE-USDC"),
        ("enable", alice_acct, "--market", "NOPE-USDC"),
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
    assert admin(exchange, "disable", alice_acct, "--market", "BTC-USDC")[0] == 0
    assert admin(exchange, "enable", alice_acct, "--market", "BTC-USDC")[0] == 0
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
    wait_on_process("the history shows 10 USDC", lambda: usdc(exchange, carol) == 10)
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
            want = 7 * len(answers)
            wait_on_process(
                f"the history shows {want} USDC", lambda want=want: usdc(ports, dave) == want
            )
        finally:
            code, log = stop(proc)
            assert code == 0, log[-3000:]
    assert [a["available_units"] for a in answers] == [7_000_000, 14_000_000]
    assert answers[0]["cmd"]["tx_id"] != answers[1]["cmd"]["tx_id"]

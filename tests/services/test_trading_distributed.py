"""The trading API across processes: `dex up --distributed` with two gateway replicas on a
private durable Redis, and `dex up` stopped and started again.

- A key registered through one gateway works on the other; revoked on one, it is refused by
  the other within a second.
- The order-entry rate limit is one bucket for both gateways (one Redis script per check).
- Fresh wallets trade across the two gateways: the fills and balances of both sides agree.
- Keys survive a restart: they are state of the risk shards (snapshot + log), not of a gateway.
- No secret reaches the logs.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from dex.app.launch import REPLICA_PORT_STEP
from dex.client import Client, Wallet
from dex.client.errors import KeyRevoked, RateLimited
from dex.wire import signing
from tests.services.test_smoke import free_base
from tests.support.dex_process import DexProcess, ready, wait_on_process
from tests.support.polling import wait_until


def _markets(url: str) -> bool:
    try:
        return bool(httpx.get(f"{url}/v1/markets", timeout=2).json())
    except (httpx.HTTPError, ValueError):
        return False


def _connect_and_drop(gateway: str, creds: Any) -> None:
    """Authenticate a WebSocket on `gateway` with cancel_on_disconnect, then drop it."""
    from websockets.sync.client import connect

    ts = str(int(time.time() * 1000))
    signature = creds.sign(signing.request_payload(ts, "GET", "/v1/ws", b""))
    with connect(gateway.replace("http", "ws", 1) + "/v1/ws") as ws:
        ws.send(
            json.dumps(
                {
                    "op": "auth",
                    "api_key": creds.api_key,
                    "timestamp": ts,
                    "signature": signature,
                    "cancel_on_disconnect": True,
                }
            )
        )
        answer = json.loads(ws.recv(timeout=10))
        assert answer["type"] == "authenticated" and answer["cancel_on_disconnect"], answer


def _secrets_absent(dex: DexProcess, secrets: list[str]) -> None:
    out = dex.output()
    for secret in secrets:
        assert secret not in out, "a secret reached the logs"


def test_two_gateways_share_keys_revocations_and_rate_limits(
    tmp_path: Path, durable_redis: str
) -> None:
    base = free_base()
    gw1 = f"http://127.0.0.1:{base}"
    gw2 = f"http://127.0.0.1:{base + REPLICA_PORT_STEP}"
    env = {
        "DEX_PORT": str(base),
        "DEX_REDIS_URL": durable_redis,
        "DEX_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'history.sqlite3'}",
        "DEX_RATE_LIMIT_ORDERS": "6/1",
        "DEX_STOP_TIMEOUT_MS": "5000",
    }
    dex = DexProcess.start(["up", "--distributed", "--replicas", "gateway=2"], env, tmp_path)
    try:
        for url in (gw1, gw2):
            wait_on_process(f"{url} ready", lambda url=url: ready(url), timeout=60)
            wait_on_process(f"{url} markets", lambda url=url: _markets(url), timeout=30)
        one, two = Client(gw1), Client(gw2)
        seller = one.onboard(Wallet.generate())
        buyer = two.onboard(Wallet.generate())
        one.faucet("ETH", "3")
        two.faucet("USDC", "10000")

        # the seller's key, registered on gateway 1, works on gateway 2
        seller_on_two = Client(gw2, seller)
        wait_until(
            "gateway 2 to know the seller's key",
            seller_on_two.api_keys,
            timeout=10,
            retry_on=(Exception,),
        )
        sell = seller_on_two.place("ETH-USDC", "sell", "limit", size="1", price="2000")
        assert sell.status == "open"
        buy = two.place("ETH-USDC", "buy", "limit", size="0.4", price="2000")
        assert buy.status == "filled"
        assert [(f.price, f.size, f.liquidity) for f in buy.fills] == [
            (Decimal("2000.00"), Decimal("0.4000"), "taker")
        ]
        got = wait_until(
            "the seller's fill in its history",
            lambda: one.fills().items,
            timeout=10,
            retry_on=(Exception,),
        )
        assert [(f.order_id, f.size, f.liquidity) for f in got] == [
            (sell.order_id, Decimal("0.4000"), "maker")
        ]
        balances = {b.asset: b for b in two.balances()}
        assert balances["ETH"].available == Decimal("0.4")
        assert balances["USDC"].available == Decimal("9200")

        # the order-entry bucket (6, refilled 1/s) is one for both gateways
        allowed = refused = 0
        for i in range(10):
            client = one if i % 2 else Client(gw2, seller)
            try:
                client.place("ETH-USDC", "sell", "limit", size="0.01", price="2100")
                allowed += 1
            except RateLimited as e:
                refused += 1
                assert e.retry_after is not None and e.retry_after >= 1
        assert refused >= 1
        assert allowed <= 6 + 2  # the bucket, and what refilled while the loop ran

        # cancel on disconnect: orders placed through the seller's key on gateway 1, the
        # connection on gateway 2 drops, every one of them is cancelled (risk knows the key
        # each order came through), the buyer's are not
        def placed(client: Client, side: str, price: str) -> int:
            """An order, as soon as the order bucket (just emptied above) allows it."""
            return int(
                wait_until(
                    f"a {side} at {price} within the rate limit",
                    lambda: client.place("ETH-USDC", side, "limit", size="0.01", price=price),
                    timeout=15,
                    retry_on=(RateLimited,),
                ).order_id
            )

        resting = [placed(one, "sell", p) for p in ("2101", "2102")]
        mine = placed(two, "buy", "1900")
        _connect_and_drop(gw2, seller)
        wait_until(
            "the seller's orders cancelled",
            lambda: not {o.order_id for o in one.orders(status="open").items} & set(resting),
            timeout=10,
            retry_on=(Exception,),
        )
        assert two.order(mine).status == "open"

        # revoked on gateway 1, refused on gateway 2 within a second
        spare = Client(gw1).onboard(Wallet.generate())
        spare_on_two = Client(gw2, spare)
        wait_until(
            "gateway 2 to know the spare key",
            spare_on_two.api_keys,
            timeout=10,
            retry_on=(Exception,),
        )
        one.revoke_key(seller.api_key)
        revoked_at = time.monotonic()
        deadline = revoked_at + 1.0
        while True:
            try:
                Client(gw2, seller).api_keys()
            except KeyRevoked:
                break
            assert time.monotonic() < deadline, "gateway 2 still takes a key revoked 1 s ago"
            time.sleep(0.05)
        assert spare_on_two.api_keys()  # other keys unaffected
        _secrets_absent(dex, [c.secret for c in (seller, buyer, spare) if c.secret])
    finally:
        assert dex.stop(timeout=60) == 0, dex.output()[-3000:]


def test_keys_survive_a_restart_of_the_embedded_exchange(tmp_path: Path) -> None:
    base = free_base()
    url = f"http://127.0.0.1:{base}"
    env = {"DEX_PORT": str(base), "DEX_DATA_DIR": str(tmp_path / "data")}

    def start() -> DexProcess:
        dex = DexProcess.start(["up"], env, tmp_path)
        wait_on_process("dex up ready", lambda: ready(url), timeout=60)
        return dex

    dex = start()
    try:
        client = Client(url)
        creds = client.onboard(Wallet.generate(), key_type="ed25519")
        hmac = Client(url).onboard(Wallet.generate())
        client.faucet("USDC", "100")
        placed = client.place("ETH-USDC", "buy", "limit", size="0.01", price="1990")
    finally:
        assert dex.stop(timeout=60) == 0, dex.output()[-3000:]
    dex = start()
    try:
        again = Client(url, creds)
        assert [k.api_key for k in again.api_keys()] == [creds.api_key]
        assert Client(url, hmac).api_keys()[0].api_key == hmac.api_key  # the sealed secret too
        order = wait_until(
            "the order in the history",
            lambda: again.order(placed.order_id),
            timeout=10,
            retry_on=(Exception,),
        )
        assert order.status == "open"
        _secrets_absent(dex, [hmac.secret or ""])
    finally:
        assert dex.stop(timeout=60) == 0, dex.output()[-3000:]

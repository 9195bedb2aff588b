"""`/v1/ws` end to end against an embedded exchange: the private channels (orders, fills,
balances) of two traders over real sockets, auth refusals, a revoked key's connection
closed, the reconnecting `Subscriber`, cancel_on_disconnect after a SIGKILLed client
process, and `AsyncClient` placing, reading and cancelling."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from dex.client import AsyncClient, Client, Credentials, NotCaughtUp, Wallet
from dex.client.wallet import now_ms
from dex.client.ws import BookView, Subscriber
from dex.wire import signing
from tests.client.conftest import Exchange
from tests.support.polling import eventually, wait_until

M = "ETH-USDC"
WAIT = 15.0
# Prices: the one crossing trade of this module is at 2000; every other order rests at
# 2100 and above (sells), so no test's order crosses another's.


def trader(ex: Exchange, wallet: Wallet | None = None, **funds: str) -> Client:
    c = Client(ex.url)
    c.onboard(wallet or Wallet.generate())
    for asset, amount in funds.items():
        c.faucet(asset, amount)
    return c


def creds(c: Client) -> Credentials:
    assert c.credentials is not None
    return c.credentials


def auth_request(credentials: Credentials, **extra: Any) -> str:
    ts = str(now_ms())
    payload = signing.request_payload(ts, "GET", "/v1/ws", b"")
    req = {
        "op": "auth",
        "api_key": credentials.api_key,
        "timestamp": ts,
        "signature": credentials.sign(payload),
        **extra,
    }
    return json.dumps(req)


class Inbox:
    """Every message of one connection, read in the background."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                assert isinstance(raw, str)
                self.raw.append(raw)
                self.messages.append(json.loads(raw))
        except ConnectionClosed:
            pass

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == type_]

    async def first(self, what: str, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        return await eventually(  # type: ignore[no-any-return]
            what, lambda: next((m for m in self.messages if match(m)), None), timeout=WAIT
        )

    async def request(self, req: dict[str, Any] | str, answer: str) -> dict[str, Any]:
        """Send `req` and wait for the next message of type `answer` or `error`."""
        start = len(self.messages)
        await self.ws.send(req if isinstance(req, str) else json.dumps(req))
        return await eventually(  # type: ignore[no-any-return]
            f"an answer {answer} to {req}",
            lambda: next(
                (m for m in self.messages[start:] if m.get("type") in (answer, "error")), None
            ),
            timeout=WAIT,
        )


async def private_inbox(ex: Exchange, c: Client, *channels: str) -> Inbox:
    inbox = Inbox(await connect(ex.ws_url))
    ok = await inbox.request(auth_request(creds(c)), "authenticated")
    assert ok == {
        "type": "authenticated",
        "account": creds(c).account,
        "cancel_on_disconnect": False,
    }
    for ch in channels:
        assert await inbox.request({"op": "subscribe", "channel": ch}, "subscribed") == {
            "type": "subscribed",
            "channel": ch,
        }
    return inbox


def settled(what: str, condition: Callable[[], Any]) -> Any:
    return wait_until(what, condition, timeout=WAIT, retry_on=(NotCaughtUp,))


# ---------------------------------------------------------------- private channels


def test_private_channels_carry_each_own_event_once_in_order(exchange: Exchange) -> None:
    a = trader(exchange, ETH="2")
    b = trader(exchange, USDC="10000")

    async def main() -> None:
        seen_a = await private_inbox(exchange, a, "orders", "fills", "balances")
        seen_b = await private_inbox(exchange, b, "orders", "fills", "balances")

        sell = await asyncio.to_thread(a.place, M, "sell", "limit", size="1", price="2000")
        buy = await asyncio.to_thread(b.place, M, "buy", "limit", size="1", price="2000")
        assert sell.status == "open" and buy.status == "filled"

        await seen_a.first("A's filled", lambda m: m.get("status") == "filled")
        await seen_a.first("A's fill", lambda m: m.get("type") == "fill")
        await seen_b.first("B's filled", lambda m: m.get("status") == "filled")
        await seen_b.first("B's fill", lambda m: m.get("type") == "fill")

        orders = seen_a.of("order")
        assert {o["order_id"] for o in orders} == {sell.order_id}
        assert [o["status"] for o in orders][:2] == ["pending", "open"]
        assert [o["status"] for o in orders][-1] == "filled"
        assert set([o["status"] for o in orders][2:-1]) <= {"partially_filled"}

        (fill,) = seen_a.of("fill")
        assert fill["order_id"] == sell.order_id and fill["channel"] == "fills"
        assert fill["liquidity"] == "maker" and fill["side"] == "sell"
        assert fill["market"] == M and Decimal(fill["size"]) == 1
        assert Decimal(fill["price"]) == 2000 and fill["fee_asset"] == "USDC"
        assert Decimal(fill["fee"]) >= 0

        (b_fill,) = seen_b.of("fill")
        assert b_fill["order_id"] == buy.order_id and b_fill["liquidity"] == "taker"
        assert b_fill["trade_id"] == fill["trade_id"]
        assert {o["order_id"] for o in seen_b.of("order")} == {buy.order_id}

        # each event once: no message repeated on either connection
        for inbox in (seen_a, seen_b):
            assert len(inbox.raw) == len(set(inbox.raw)), "\n".join(inbox.raw)

        # the last balance message of each asset is what the API answers once settled
        def last_balances(inbox: Inbox) -> dict[str, tuple[Decimal, Decimal]]:
            return {
                m["asset"]: (Decimal(m["available"]), Decimal(m["locked"]))
                for m in inbox.of("balance")
            }

        def api_balances(c: Client) -> dict[str, tuple[Decimal, Decimal]]:
            return {x.asset: (x.available, x.locked) for x in c.balances()}

        # A balance change is pushed by risk's settlement, which may reach the connection after
        # the fill: wait until both assets were pushed and the last of each is what the API says.
        def agree(c: Client, inbox: Inbox) -> bool:
            pushed = last_balances(inbox)
            if not {"ETH", "USDC"} <= set(pushed):
                return False
            return {k: v for k, v in api_balances(c).items() if k in pushed} == pushed

        for c, inbox in ((a, seen_a), (b, seen_b)):
            await asyncio.to_thread(
                settled,
                "both assets pushed, the API's balances agreeing with the last pushed ones",
                lambda c=c, inbox=inbox: agree(c, inbox),
            )
        assert last_balances(seen_a)["ETH"] == (Decimal(1), Decimal(0))
        await seen_a.ws.close()
        await seen_b.ws.close()

    asyncio.run(main())


def test_private_subscribe_needs_auth_and_a_good_signature(exchange: Exchange) -> None:
    c = trader(exchange)

    async def main() -> None:
        inbox = Inbox(await connect(exchange.ws_url))
        err = await inbox.request({"op": "subscribe", "channel": "orders"}, "subscribed")
        assert err["type"] == "error" and err["code"] == "missing_credentials"
        # the connection stays open: a public subscription still works on it
        ok = await inbox.request(
            {"op": "subscribe", "channel": "trades", "market": M}, "subscribed"
        )
        assert ok == {"type": "subscribed", "channel": "trades", "market": M}

        cr = creds(c)
        wrong = Credentials(cr.api_key, cr.account, secret="0" * 64)
        err = await inbox.request(auth_request(wrong), "authenticated")
        assert err["type"] == "error" and err["code"] == "bad_signature"
        err = await inbox.request({"op": "subscribe", "channel": "fills"}, "subscribed")
        assert err["code"] == "missing_credentials"
        await inbox.ws.close()

    asyncio.run(main())


def test_a_revoked_keys_connections_are_closed_4001(exchange: Exchange) -> None:
    c = trader(exchange)

    async def main() -> None:
        subscribed = await private_inbox(exchange, c, "orders")
        only_authed = await private_inbox(exchange, c)
        await asyncio.to_thread(c.revoke_key, creds(c).api_key)
        for name, inbox in (("subscribed", subscribed), ("only authenticated", only_authed)):
            await eventually(f"the {name} connection closed", inbox.task.done, timeout=WAIT)
            assert inbox.ws.close_code == 4001, name

    asyncio.run(main())


# ---------------------------------------------------------------- Subscriber


def test_subscriber_reconnects_and_resubscribes(exchange: Exchange) -> None:
    c = trader(exchange, ETH="1")

    async def main() -> None:
        sub = Subscriber(exchange.ws_url, creds(c), max_backoff=0.5)
        sub.subscribe("book", M)
        sub.subscribe("orders")
        got: list[dict[str, Any]] = []

        async def read() -> None:
            async for m in sub:
                got.append(m)

        reader = asyncio.get_running_loop().create_task(read())
        await eventually(
            "a first snapshot", lambda: any(m["type"] == "snapshot" for m in got), timeout=WAIT
        )
        await eventually(
            "orders subscribed",
            lambda: {"type": "subscribed", "channel": "orders"} in got,
            timeout=WAIT,
        )
        first = sub.connection
        assert first is not None
        first.transport.abort()  # the connection drops without a close handshake

        await eventually("reconnected", lambda: {"type": "reconnected"} in got, timeout=WAIT)

        def since_reconnect(type_: str) -> list[dict[str, Any]]:
            after = got[got.index({"type": "reconnected"}) :]
            return [m for m in after if m.get("type") == type_]

        snapshot = await eventually(
            "a new snapshot", lambda: since_reconnect("snapshot"), timeout=WAIT
        )
        assert BookView().apply(snapshot[0])  # a whole book whose checksum holds
        await eventually(
            "orders subscribed again",
            lambda: {"type": "subscribed", "channel": "orders"} in since_reconnect("subscribed"),
            timeout=WAIT,
        )
        assert sub.connection is not first and sub.connects == 2
        order = await asyncio.to_thread(c.place, M, "sell", "limit", size="0.1", price="2150")
        await eventually(
            "the new order's message",
            lambda: any(m["order_id"] == order.order_id for m in since_reconnect("order")),
            timeout=WAIT,
        )
        await sub.close()
        await asyncio.wait_for(reader, WAIT)

    asyncio.run(main())


# ---------------------------------------------------------------- cancel_on_disconnect

CLIENT = """
import asyncio, json, sys
from websockets.asyncio.client import connect

async def main():
    ws = await connect(sys.argv[1])
    await ws.send(sys.argv[2])
    print(await ws.recv(), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_cancel_on_disconnect_cancels_that_keys_orders_when_the_client_dies(
    exchange: Exchange,
) -> None:
    wallet = Wallet.generate()
    c = trader(exchange, wallet, ETH="5")
    other_key = Client(exchange.url)
    other_key.onboard(wallet)
    other = trader(exchange, ETH="1")

    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLIENT,
            exchange.ws_url,
            auth_request(creds(c), cancel_on_disconnect=True),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert proc.stdout is not None
        answer = json.loads(proc.stdout.readline())
        assert answer == {
            "type": "authenticated",
            "account": creds(c).account,
            "cancel_on_disconnect": True,
        }
        mine = {
            c.place(M, "sell", "limit", size="0.5", price=p).order_id
            for p in ("2100", "2110", "2120")
        }
        same_account = other_key.place(M, "sell", "limit", size="0.5", price="2130").order_id
        other_account = other.place(M, "sell", "limit", size="0.5", price="2130").order_id
        settled("the orders open", lambda: mine | {same_account} <= open_ids(c))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(WAIT)

    settled("the key's orders cancelled", lambda: not mine & open_ids(c))
    assert {c.order(oid).status for oid in mine} == {"cancelled"}
    assert same_account in open_ids(c) and other_account in open_ids(other)


def open_ids(c: Client) -> set[int]:
    return {o.order_id for o in c.orders(status="open").items}


# ---------------------------------------------------------------- AsyncClient


def test_async_client_places_reads_balances_and_cancels(exchange: Exchange) -> None:
    async def main() -> None:
        async with AsyncClient(exchange.url) as c:
            await c.onboard(Wallet.generate())
            await c.faucet("ETH", "2")
            order = await c.place(M, "sell", "limit", size="0.5", price="2200")
            assert order.status == "open"

            async def eth() -> tuple[Decimal, Decimal] | None:
                try:
                    b = {x.asset: x for x in await c.balances()}.get("ETH")
                except NotCaughtUp:
                    return None
                return (b.available, b.locked) if b else None

            await eventually(
                "ETH locked", lambda: _is(eth, (Decimal("1.5"), Decimal("0.5"))), timeout=WAIT
            )
            assert (await c.cancel(order.order_id)).status == "cancelled"
            await eventually(
                "ETH released", lambda: _is(eth, (Decimal(2), Decimal(0))), timeout=WAIT
            )

    asyncio.run(main())


async def _is(read: Callable[[], Any], expected: Any) -> bool:
    return bool(await read() == expected)


def test_subscriber_retries_a_refused_handshake() -> None:
    """A gateway answering the upgrade with an HTTP error (starting, overloaded) is retried
    like one not listening; the subscriptions are sent once it accepts."""

    async def main() -> None:
        refused = 0
        received: list[str] = []

        def gate(conn: ServerConnection, request: Request) -> Response | None:
            nonlocal refused
            if refused < 2:
                refused += 1
                return conn.respond(503, "starting\n")
            return None

        async def echo(conn: ServerConnection) -> None:
            async for raw in conn:
                assert isinstance(raw, str)
                received.append(raw)
                await conn.send(json.dumps({"type": "subscribed", "channel": "trades"}))

        async with serve(echo, "127.0.0.1", 0, process_request=gate) as server:
            port = server.sockets[0].getsockname()[1]
            sub = Subscriber(f"ws://127.0.0.1:{port}/v1/ws", max_backoff=0.1)
            sub.subscribe("trades", M)
            first = await asyncio.wait_for(anext(aiter(sub)), WAIT)
            assert first == {"type": "subscribed", "channel": "trades"}
            assert refused == 2
            assert [json.loads(r) for r in received] == [
                {"op": "subscribe", "channel": "trades", "market": M}
            ]
            await sub.close()

    asyncio.run(main())

"""The private channels of `/v1/ws`: an account's orders, fills and balances, pushed as they
happen (docs/trading-api.md has the protocol).

A connection authenticates once with `{"op": "auth", "api_key", "timestamp", "signature"}`
signed like a request over `timestamp + "GET" + "/v1/ws"` (no body), with any permission;
`"cancel_on_disconnect": true` there makes the gateway cancel, when the connection drops,
every open order placed through that key (through any gateway: risk keeps the key each
order came through). Then `{"op": "subscribe",
"channel": "orders" | "fills" | "balances"}` is acknowledged with `{"type": "subscribed",
"channel"}`.

Where the messages come from. Everything of one account is on its risk shard's log, in the
order risk applied it; order states come from the matching logs (each market's events in
order). The gateway reads every log once and hands each item here (`risk_item`,
`match_item`): a message is encoded once per event and pushed to each subscribed connection
of the account, so each connection gets each change exactly once, in log order. A key that
is revoked or expires closes the connections it authenticated, subscribed or not (checked
every second).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import msgspec

from dex.core import events as mev
from dex.gateway.keys import AuthError
from dex.matching.textform import render
from dex.risk import commands as rc
from dex.risk import events as rev

if TYPE_CHECKING:
    from dex.gateway.feed import Subscriber
    from dex.gateway.service import Gateway

CHANNELS = ("orders", "fills", "balances")
WS_PATH = "/v1/ws"
KEY_GONE = 4001  # close code: the connection's key was revoked or expired

_json = msgspec.json.Encoder()

# matching events that change an order's status, and the status they leave it in
_ORDER_STATUS: dict[type, str] = {
    mev.Accepted: "open",
    mev.Triggered: "open",
    mev.Amended: "open",
    mev.Filled: "filled",
    mev.Cancelled: "cancelled",
    mev.Expired: "expired",
    mev.Rejected: "rejected",
}


def _text(message: dict[str, Any]) -> str:
    return _json.encode(message).decode()


class PrivateChannels:
    """The authenticated connections of one gateway, by account."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.by_account: dict[str, set[Subscriber]] = {}  # subscribed to a private channel
        self.authenticated: set[Subscriber] = set()  # every connection with a key: checked
        self.active = False  # any private subscriber: the log readers skip us otherwise
        self._checker: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ requests

    async def request(self, sub: Subscriber, req: dict[str, Any]) -> bool:
        """Handle `req` if it is ours (auth, or a private channel); False otherwise."""
        op, channel = req.get("op"), req.get("channel")
        if op == "auth":
            self._auth(sub, req)
            return True
        if channel not in CHANNELS or op not in ("subscribe", "unsubscribe"):
            return False
        if sub.key is None:
            _error(sub, "missing_credentials", "authenticate first with op auth")
            return True
        if op == "subscribe":
            # a connection given its key another way (the Binance adapter's user data) is
            # watched as well
            self._watch_key(sub)
            sub.private.add(channel)
            self.by_account.setdefault(sub.key.account, set()).add(sub)
            self.active = True
            sub.push(_text({"type": "subscribed", "channel": channel}))
        elif channel in sub.private:
            sub.private.discard(channel)
            sub.push(_text({"type": "unsubscribed", "channel": channel}))
        else:
            _error(sub, "not_subscribed", f"not subscribed to {channel}")
        return True

    def _auth(self, sub: Subscriber, req: dict[str, Any]) -> None:
        if sub.key is not None:
            _error(sub, "already_authenticated", "this connection is authenticated")
            return
        fields = [req.get(k) for k in ("api_key", "timestamp", "signature")]
        given = [f if isinstance(f, str) else None for f in fields]
        try:
            entry = self.gw.keys.authenticate(
                given[0],
                given[1],
                given[2],
                "GET",
                WS_PATH,
                b"",
                self.gw.now_ms(),
                self.gw.recv_window_ms,
                "read",
            )
        except AuthError as e:
            _error(sub, e.code, e.message)
            return
        sub.key = entry
        self._watch_key(sub)
        sub.cancel_on_disconnect = req.get("cancel_on_disconnect") is True
        sub.push(
            _text(
                {
                    "type": "authenticated",
                    "account": entry.account,
                    "cancel_on_disconnect": sub.cancel_on_disconnect,
                }
            )
        )

    def _watch_key(self, sub: Subscriber) -> None:
        """Close `sub` once its key is revoked or expires (checked every second)."""
        self.authenticated.add(sub)
        if self._checker is None:
            self._checker = asyncio.create_task(self._check_keys())

    def dropped(self, sub: Subscriber) -> None:
        if sub.key is None:
            return
        self.authenticated.discard(sub)
        subs = self.by_account.get(sub.key.account)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.by_account[sub.key.account]
        self.active = bool(self.by_account)
        if sub.cancel_on_disconnect:
            task = asyncio.create_task(self._cancel_placed(sub.key))
            task.add_done_callback(_done)

    async def _cancel_placed(self, key: Any) -> None:
        """Cancel every open order placed through `key`, through whichever gateway: risk
        knows the key each order came through (`via`) and forwards a cancel for each."""
        cmd = rc.CancelAll(account=key.account, via=key.api_key)
        try:
            _, events = await self.gw.submit(key.account, cmd)
        except Exception as e:
            self.gw.log.warning("cancel_on_disconnect_failed", error=type(e).__name__)
            return
        self.gw.log.info(
            "cancel_on_disconnect",
            orders=sum(type(ev) is rev.OrderCommandForwarded for ev in events),
            account=key.account,
        )

    async def _check_keys(self) -> None:
        """Close connections whose key was revoked or expired."""
        while True:
            await asyncio.sleep(1.0)
            now = self.gw.now_ms()
            for sub in list(self.authenticated):
                self._check(sub, now)

    def _check(self, sub: Subscriber, now: int) -> bool:
        entry = self.gw.keys.get(sub.key.api_key)
        gone = entry is None or entry.revoked
        expired = sub.key.expires_at and now >= sub.key.expires_at
        if gone or expired:
            sub.kill("the API key was revoked or expired", KEY_GONE)
            return False
        return True

    async def stop(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker

    # ------------------------------------------------------------------ log items

    def _push(self, account: str, channel: str, message: dict[str, Any]) -> None:
        subs = self.by_account.get(account)
        if not subs:
            return
        text = None
        for sub in list(subs):
            if channel in sub.private:
                if text is None:
                    text = _text(message)
                sub.push(text)

    def match_item(self, item: Any) -> None:
        markets = self.gw.markets.params
        for ev in item.events:
            kind = type(ev)
            if not self.by_account:
                continue
            if kind is mev.Trade:
                for account, oid, left in (
                    (ev.maker_account, ev.maker_order_id, ev.maker_remaining),
                    (ev.taker_account, ev.taker_order_id, ev.taker_remaining),
                ):
                    if left:  # a partial fill; the last one is followed by `filled`
                        self._push(account, "orders", self._order(ev, "partially_filled", oid))
                continue
            status = _ORDER_STATUS.get(kind)
            if status is None or ev.market not in markets:
                continue
            account = ev.order.account if kind is mev.Accepted else ev.account
            if kind is mev.Accepted and ev.order.type in ("stop_limit", "stop_market"):
                status = "untriggered"
            self._push(account, "orders", self._order(ev, status, ev.order_id))

    def _order(self, ev: Any, status: str, oid: int) -> dict[str, Any]:
        body = render(ev, self.gw.markets.params)
        return {
            "type": "order",
            "channel": "orders",
            "order_id": oid,
            "status": status,
            "event": body,
        }

    def risk_item(self, stream: str, seq: int, item: Any) -> None:
        if not self.by_account:
            return
        m = self.gw.markets
        for ev in item.events:
            kind = type(ev)
            if kind is rev.TradeSettled:
                params = m.params.get(ev.market)
                if params is None:
                    continue
                for side, liquidity in ((ev.maker, "maker"), (ev.taker, "taker")):
                    if side is None or side.account not in self.by_account:
                        continue
                    fee_asset = params.base.symbol if side.side == "buy" else params.quote.symbol
                    self._push(
                        side.account,
                        "fills",
                        {
                            "type": "fill",
                            "channel": "fills",
                            "trade_id": ev.trade_id,
                            "order_id": side.order_id,
                            "market": ev.market,
                            "side": str(side.side),
                            "price": params.price_scale.render(ev.price),
                            "size": params.size_scale.render(ev.size),
                            "fee": m.units(fee_asset, side.fee),
                            "fee_asset": fee_asset,
                            "liquidity": liquidity,
                            "ts": ev.ts // 1_000_000,
                        },
                    )
                    for asset, avail, locked in (
                        (params.base.symbol, side.base_available, side.base_locked),
                        (params.quote.symbol, side.quote_available, side.quote_locked),
                    ):
                        self._balance(side.account, asset, avail, locked, ev.ts)
            elif kind is rev.OrderAcceptedForMatching:
                self._balance(ev.account, ev.hold_asset, ev.available, ev.locked, ev.ts)
                self._push(
                    ev.account,
                    "orders",
                    {
                        "type": "order",
                        "channel": "orders",
                        "order_id": ev.order_id,
                        "status": "pending",
                        "event": {"event": "accepted_by_risk", "market": ev.market},
                    },
                )
            elif kind is rev.OrderCommandForwarded:
                if ev.hold_asset is not None and ev.hold_increase:
                    self._balance(ev.account, ev.hold_asset, ev.available, ev.locked, ev.ts)
            elif kind is rev.FundsReleased:
                if ev.amount:  # every order's end has one, most with nothing left held
                    self._balance(ev.account, ev.asset, ev.available, ev.locked, ev.ts)
            elif kind in (
                rev.DepositCredited,
                rev.WithdrawalRequested,
                rev.WithdrawalCompleted,
            ):
                self._balance(ev.account, ev.asset, ev.available, ev.locked, ev.ts)

    def _balance(self, account: str, asset: str, available: int, locked: int, ts: int) -> None:
        if account not in self.by_account:
            return
        m = self.gw.markets
        self._push(
            account,
            "balances",
            {
                "type": "balance",
                "channel": "balances",
                "asset": asset,
                "available": m.units(asset, available),
                "locked": m.units(asset, locked),
                "ts": ts // 1_000_000,
            },
        )


def _error(sub: Subscriber, code: str, message: str) -> None:
    sub.push(_text({"type": "error", "code": code, "message": message}))


def _done(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failure was logged where it happened

"""The gateway (thin until its own issue): the order path in, the engine's outcome out.

Owns: the public REST endpoints for markets, orders, cancels and the faucet; checking what
clients name (an address is `0x` and 40 ASCII hex digits, a client order id 1 to 36 of
`A-Z a-z 0-9 . _ : -`) and turning decimal strings (ASCII `[0-9]+(.[0-9]+)?` only) into
integer ticks/lots/units with the market's steps (a bad value is a 400 naming the field,
and nothing is sent); sending each request to the account's risk shard; and
waiting for its outcome. It tails every risk log and every matching log from where they were
when it started: risk's answer names the request by its input position, and an accepted
order's outcome is the matching engine's events for its order id. History and balances are
proxied to persistence, depth and tickers to market-data.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict
from decimal import Decimal
from typing import Any

import httpx
import msgspec
from litestar import Request, WebSocket, delete, get, post, websocket
from litestar.params import FromPath, Parameter

from dex.bus import Bus, TrimmedError
from dex.core import events as mev
from dex.core.enums import ORDER_TRANSITIONS, STP, OrderStatus, OrderType, Side, TimeInForce
from dex.core.errors import CommandError
from dex.core.markets import MarketParams
from dex.core.numbers import MAX_INT, to_steps
from dex.core.validation import CLIENT_ORDER_ID_RULE, client_order_id_ok
from dex.gateway.feed import MAX_BUFFER, FeedRelay
from dex.matching.textform import render
from dex.risk import commands as rc
from dex.risk import events as rev
from dex.runtime.health import Health
from dex.runtime.http import ApiError, account_param
from dex.runtime.metrics import ServiceMetrics
from dex.runtime.settings import DEFAULTS
from dex.wire import codec
from dex.wire.catalog import Catalog
from dex.wire.ids import new_credit_tx_id
from dex.wire.layout import ADMIN_STREAM, me_log, risk_in, risk_log, shard_for

_ORDER_ID = re.compile(r"[0-9]{1,19}")  # fullmatch; then 1 to 2^63-1

_STOPS = (OrderType.STOP_LIMIT, OrderType.STOP_MARKET)


class OrderRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new order, amounts as decimal strings."""

    market: str
    account: str
    side: Side
    type: OrderType
    size: str | None = None
    price: str | None = None
    quote_size: str | None = None
    tif: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    stp: STP = STP.EXPIRE_TAKER
    client_order_id: str | None = None
    expires_at: int | None = None
    trigger_price: str | None = None
    display_size: str | None = None


class FaucetRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    account: str
    asset: str
    amount: str


class Markets(Catalog):
    """The markets and assets named on the admin stream, with their integer parameters."""

    def apply(self, cmd: object) -> None:
        try:
            super().apply(cmd)
        except CommandError as e:
            raise codec.BadEntry(f"an admin command the engines refuse ({e})") from None

    def get(self, market: str) -> MarketParams:
        params = self.params.get(market)
        if params is None:
            raise ApiError(404, "unknown_market", f"no market {market!r}", "market")
        return params


def _steps(text: str | None, step: Decimal, field: str, unit: str) -> int:
    return 0 if text is None else to_steps(text, step, field, unit=unit)


def _order_id(raw: str) -> int:
    """An order id from a path: ASCII digits only (`int()` would also take "+1", "1_0",
    whitespace and any Unicode digit), between 1 and 2^63-1."""
    if _ORDER_ID.fullmatch(raw) and 0 < int(raw) <= MAX_INT:
        return int(raw)
    raise ApiError(
        400, "invalid_request", "order_id must be an integer from 1 to 2^63-1", "order_id"
    )


class Gateway:
    """Sends requests to risk shards and answers each with its outcome.

    A request waits `wait` seconds for its outcome (then 504); the last `outcomes_kept`
    outcomes of each kind are kept for waiters that register after the answer went by;
    reads of persistence and market data time out after `proxy_timeout` seconds; a trades
    query asks for at most `max_trades` (what market data keeps per market).
    """

    def __init__(
        self,
        bus: Bus,
        *,
        risk_shards: int,
        matching_shards: int,
        health: Health,
        metrics: ServiceMetrics,
        log: Any,
        faucet: bool,
        persistence_url: str,
        market_data_url: str,
        wait: float = DEFAULTS.gateway_wait_ms / 1000,
        outcomes_kept: int = DEFAULTS.gateway_outcomes_kept,
        proxy_timeout: float = DEFAULTS.gateway_proxy_timeout_ms / 1000,
        max_trades: int = DEFAULTS.market_data_recent_trades,
        feed_max_buffer: int = MAX_BUFFER,
    ) -> None:
        self.bus = bus
        self.risk_shards = risk_shards
        self.matching_shards = matching_shards
        self.health = health
        self.log = log
        self.faucet = faucet
        self.wait = wait
        self.outcomes_kept = outcomes_kept
        self.max_trades = max_trades
        self.markets = Markets()
        self.requests: dict[tuple[str, int], asyncio.Future[Any]] = {}
        self.orders: dict[int, asyncio.Future[Any]] = {}
        self.request_results: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self.order_results: OrderedDict[int, Any] = OrderedDict()
        self.pos: dict[str, int] = {}
        self._identity: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(timeout=proxy_timeout)
        self.persistence_url = persistence_url.rstrip("/")
        self.market_data_url = market_data_url.rstrip("/")
        self.m_requests = metrics.counter("requests", "total", "requests sent to risk", ["kind"])
        self.m_latency = metrics.histogram(
            "order_latency", "seconds", "submit to outcome", buckets=(0.001, 0.005, 0.02, 0.1, 1)
        )
        self.m_timeouts = metrics.counter("timeouts", "total", "requests answered by timeout")
        self.feed = FeedRelay(
            bus,
            market_spec=self._market_spec,
            fetch_book=self._fetch_book,
            log=log,
            max_buffer=feed_max_buffer,
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        streams = [ADMIN_STREAM]
        streams += [risk_log(r) for r in range(self.risk_shards)]
        streams += [me_log(m) for m in range(self.matching_shards)]
        for s in streams:
            self.pos[s] = 0 if s == ADMIN_STREAM else await self.bus.last(s)
        await self._catch_up_admin()
        self._task = asyncio.create_task(self._tail())
        self.feed.start()

    async def stop(self) -> None:
        await self.feed.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._http.aclose()

    def _market_spec(self, market: str) -> Any:
        params = self.markets.params.get(market)
        return None if params is None else params.spec

    async def _fetch_book(self, market: str) -> dict[str, Any]:
        """Market data's whole book of `market` in integers, at its seq (the feed's start)."""
        resp = await self._http.get(f"{self.market_data_url}/internal/feed/{market}/book")
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    async def _catch_up_admin(self) -> None:
        while True:
            got = await self.bus.read(ADMIN_STREAM, self.pos[ADMIN_STREAM], limit=1000)
            if not got:
                return
            self._admin(got)

    def _admin(self, got: list[tuple[int, bytes]]) -> None:
        for seq, data in got:
            self.pos[ADMIN_STREAM] = seq
            try:
                self.markets.apply(codec.decode_admin(data))
            except codec.BadEntry as e:
                self._bad(ADMIN_STREAM, seq, str(e))

    async def _follow_restarts(self) -> None:
        """A bus that restarted from an older state numbers new entries from where it now
        ends: read from there, or answers written after the restart would be missed."""
        identity = await self.bus.identity()
        if identity == self._identity:
            return
        if self._identity is not None:
            self.log.warning("bus_restarted", previous=self._identity, now=identity)
            for s in self.pos:
                self.pos[s] = min(self.pos[s], await self.bus.last(s))
        self._identity = identity

    async def _tail(self) -> None:
        checked = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() - checked > 1.0:
                    checked = loop.time()
                    await self._follow_restarts()
                got = await self.bus.read_many(self.pos, limit=1000, timeout=0.5)
                self.health.set_ready("tail")
            except TrimmedError as e:  # we fell behind a trim: answers were lost; start over
                self.health.set_not_ready("tail", f"input trimmed: {e}")
                for s in self.pos:
                    if s != ADMIN_STREAM:
                        self.pos[s] = await self.bus.last(s)
                continue
            except Exception as e:  # bus down: not ready, retry
                self.health.set_not_ready("tail", f"bus unreachable: {type(e).__name__}: {e}")
                await asyncio.sleep(0.5)
                continue
            for stream, entries in got.items():
                self.pos[stream] = entries[-1][0]
                if stream == ADMIN_STREAM:
                    self._admin(entries)
                elif stream.endswith(":log"):
                    for seq, data in entries:
                        self._risk_entry(stream, seq, data)
                else:
                    for seq, data in entries:
                        self._match_entry(stream, seq, data)

    def _bad(self, stream: str, seq: int, message: str) -> None:
        """An entry we cannot use: logged with its position and skipped (changes nothing)."""
        self.log.warning("bad_entry", stream=stream, log_seq=seq, error=message)

    def _risk_entry(self, stream: str, seq: int, data: bytes) -> None:
        try:
            entry = codec.decode_risk_entry(data)
        except codec.BadEntry as e:
            self._bad(stream, seq, str(e))
            return
        for item in entry.items:
            if item.cmd is None:
                continue
            key = (item.input.stream, item.input.log_seq)
            result = (item.error, item.events)
            _remember(self.request_results, key, result, self.outcomes_kept)
            fut = self.requests.pop(key, None)
            if fut is not None and not fut.done():
                fut.set_result(result)

    def _match_entry(self, stream: str, seq: int, data: bytes) -> None:
        try:
            entry = codec.decode_match_events(data)
        except codec.BadEntry as e:
            self._bad(stream, seq, str(e))
            return
        for item in entry.items:
            for ev in item.events:
                if isinstance(ev, (mev.Accepted, mev.Rejected)) and ev.order_id is not None:
                    result = (ev, item.events)
                    _remember(self.order_results, ev.order_id, result, self.outcomes_kept)
                    fut = self.orders.pop(ev.order_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(result)

    async def _wait(
        self, table: dict[Any, asyncio.Future[Any]], recent: OrderedDict[Any, Any], key: Any
    ) -> Any:
        if key in recent:
            return recent[key]
        fut = table.get(key)
        if fut is None:
            fut = table[key] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.wait)
        except TimeoutError:
            self.m_timeouts.inc()
            table.pop(key, None)
            raise ApiError(
                504, "timeout", f"no outcome within {self.wait:g} s; the request is logged"
            ) from None

    # ------------------------------------------------------------------ requests

    async def submit(self, account: str, cmd: rc.RiskCommand) -> tuple[str | None, list[Any]]:
        """Send `cmd` to the account's risk shard; return risk's (error, events) for it."""
        stream = risk_in(shard_for(account, self.risk_shards))
        if not self.health.ready:
            raise ApiError(503, "unavailable", "the gateway is not ready")
        try:
            seq = await self.bus.append(stream, [codec.encode(cmd)])
        except Exception as e:
            raise ApiError(503, "unavailable", f"bus unreachable: {type(e).__name__}") from None
        self.m_requests.labels(type(cmd).__name__.lower()).inc()
        result: tuple[str | None, list[Any]] = await self._wait(
            self.requests, self.request_results, (stream, seq)
        )
        return result

    def build_place(self, req: OrderRequest) -> rc.Place:
        params = self.markets.get(req.market)
        account = account_param(req.account)
        if req.client_order_id is not None and not client_order_id_ok(req.client_order_id):
            raise ApiError(
                400,
                "invalid_request",
                f"client_order_id must be {CLIENT_ORDER_ID_RULE}",
                "client_order_id",
            )
        try:
            return rc.Place(
                market=req.market,
                account=account,
                side=req.side,
                type=req.type,
                size=_steps(req.size, params.lot, "size", "lots"),
                price=_steps(req.price, params.tick, "price", "ticks"),
                quote_size=_steps(
                    req.quote_size,
                    Decimal(1).scaleb(-params.quote.decimals),
                    "quote_size",
                    f"{params.quote.symbol} units",
                ),
                tif=req.tif,
                post_only=req.post_only,
                stp=req.stp,
                client_order_id=req.client_order_id,
                expires_at=req.expires_at,
                trigger_price=_steps(req.trigger_price, params.tick, "trigger_price", "ticks"),
                display_size=_steps(req.display_size, params.lot, "display_size", "lots"),
            )
        except CommandError as e:
            raise ApiError(400, "invalid_request", e.message, e.field) from None
        except (msgspec.ValidationError, ValueError, TypeError) as e:
            raise ApiError(400, "invalid_request", str(e)) from None

    async def place(self, req: OrderRequest) -> dict[str, Any]:
        started = time.perf_counter()
        cmd = self.build_place(req)
        error, events = await self.submit(cmd.account, cmd)
        out = await self._order_outcome(error, events)
        self.m_latency.observe(time.perf_counter() - started)
        return out

    async def _order_outcome(self, error: str | None, events: list[Any]) -> dict[str, Any]:
        if error is not None:
            raise ApiError(400, "invalid_request", error)
        for ev in events:
            if isinstance(ev, rev.OrderRejected):
                return {
                    "status": OrderStatus.REJECTED,
                    "code": str(ev.code),
                    "message": ev.message,
                    "order_id": ev.order_id,
                }
            if isinstance(ev, rev.OrderDuplicate):
                return {
                    "status": str(ev.status),
                    "duplicate": True,
                    "order_id": ev.order_id,
                    "filled": ev.filled,
                    "detail": ev.detail,
                }
            if isinstance(ev, (rev.OrderAcceptedForMatching, rev.OrderCommandForwarded)):
                oid = ev.order_id
                if oid is None or isinstance(ev, rev.OrderCommandForwarded):
                    return {"status": OrderStatus.PENDING, "order_id": oid}
                first, item_events = await self._wait(self.orders, self.order_results, oid)
                return self._engine_outcome(oid, first, item_events)
        raise ApiError(500, "internal_error", "risk gave no order outcome")

    def _engine_outcome(self, oid: int, first: Any, item_events: list[Any]) -> dict[str, Any]:
        markets = self.markets.params
        mine = [
            ev
            for ev in item_events
            if getattr(ev, "order_id", None) == oid
            or getattr(ev, "maker_order_id", None) == oid
            or getattr(ev, "taker_order_id", None) == oid
        ]
        status = OrderStatus.PENDING
        out: dict[str, Any] = {"order_id": oid}
        for ev in mine:  # the order's events in order: its status moves along the one table
            new = status
            if isinstance(ev, mev.Accepted):
                new = OrderStatus.UNTRIGGERED if ev.order.type in _STOPS else OrderStatus.OPEN
            elif isinstance(ev, mev.Triggered):
                new = OrderStatus.OPEN
            elif isinstance(ev, mev.Rejected):
                new = OrderStatus.REJECTED
                out["code"] = str(ev.code)
            elif isinstance(ev, mev.Filled):
                new = OrderStatus.FILLED
            elif isinstance(ev, mev.Cancelled):
                new = OrderStatus.CANCELLED
                out["reason"] = str(ev.reason)
            elif isinstance(ev, mev.Expired):
                new = OrderStatus.EXPIRED
            if new is not status and new in ORDER_TRANSITIONS[status]:
                status = new
        out["status"] = status
        out["events"] = [render(ev, markets) for ev in mine]
        del first
        return out

    async def cancel(self, order_id: int, market: str, account: str) -> dict[str, Any]:
        self.markets.get(market)
        acct = account_param(account)
        error, events = await self.submit(
            acct, rc.Cancel(market=market, account=acct, order_id=order_id)
        )
        if error is not None:
            raise ApiError(400, "invalid_request", error)
        for ev in events:
            if isinstance(ev, rev.OrderRejected):
                return {
                    "accepted": False,
                    "order_id": order_id,
                    "code": str(ev.code),
                    "message": ev.message,
                }
        # risk took the cancel and sent it to matching; the order's status follows on its
        # own (GET /v1/accounts/{account}/orders), as the engine decides
        return {"accepted": True, "order_id": order_id}

    async def credit(self, req: FaucetRequest) -> dict[str, Any]:
        if not self.faucet:
            raise ApiError(403, "faucet_disabled", "the faucet is disabled in this environment")
        account = account_param(req.account)
        asset = self.markets.assets.get(req.asset)
        if asset is None:
            raise ApiError(400, "unknown_asset", f"no asset {req.asset!r}", "asset")
        try:
            amount = to_steps(
                req.amount,
                Decimal(1).scaleb(-asset.decimals),
                "amount",
                unit=f"{asset.symbol} units",
            )
        except CommandError as e:
            raise ApiError(400, "invalid_request", e.message, e.field) from None
        cmd = rc.Deposit(
            account=account,
            asset=asset.symbol,
            amount=amount,
            tx_id=new_credit_tx_id(),
        )
        error, events = await self.submit(account, cmd)
        if error is not None:
            raise ApiError(400, "invalid_request", error)
        for ev in events:
            if isinstance(ev, rev.DepositCredited):
                return {
                    "account": account,
                    "asset": asset.symbol,
                    "amount_units": ev.amount,
                    "available_units": ev.available,
                }
            if isinstance(ev, rev.RequestRejected):
                raise ApiError(400, str(ev.code), ev.message)
        # the ledger credits a transaction id once and answers a repeat with nothing
        raise ApiError(409, "duplicate_deposit", f"deposit {cmd.tx_id} was already credited")

    async def proxy(self, base: str, path: str, params: dict[str, Any]) -> Any:
        try:
            resp = await self._http.get(base + path, params=params)
        except httpx.HTTPError as e:
            raise ApiError(
                503, "unavailable", f"upstream unreachable: {type(e).__name__}"
            ) from None
        if resp.status_code >= 400:
            body = resp.json()
            err = body.get("error", {}) if isinstance(body, dict) else {}
            raise ApiError(
                resp.status_code,
                err.get("code", "upstream_error"),
                err.get("message", "upstream error"),
                err.get("field"),
            )
        return resp.json()

    # ------------------------------------------------------------------ routes

    def route_handlers(self) -> list[Any]:
        gw = self

        @get("/v1/markets")
        async def markets() -> list[dict[str, Any]]:
            return [msgspec.to_builtins(p.spec) for p in gw.markets.params.values()]

        @post("/v1/orders", status_code=200)
        async def place_order(data: OrderRequest) -> dict[str, Any]:
            return await gw.place(data)

        @delete("/v1/orders/{order_id:str}", status_code=200)
        async def cancel_order(order_id: str, market: str, account: str) -> dict[str, Any]:
            return await gw.cancel(_order_id(order_id), market, account)

        @post("/v1/faucet", status_code=200)
        async def faucet(data: FaucetRequest) -> dict[str, Any]:
            return await gw.credit(data)

        @get("/v1/accounts/{account:str}/balances")
        async def balances(account: str) -> Any:
            return await gw.proxy(
                gw.persistence_url, f"/v1/accounts/{account_param(account)}/balances", {}
            )

        @get("/v1/accounts/{account:str}/orders")
        async def orders(account: str) -> Any:
            return await gw.proxy(
                gw.persistence_url, f"/v1/accounts/{account_param(account)}/orders", {}
            )

        @get("/v1/markets/{market:str}/trades")
        async def trades(
            market: FromPath[str],
            limit: int = Parameter(default=min(100, gw.max_trades), ge=1, le=gw.max_trades),
        ) -> Any:
            return await gw.proxy(
                gw.market_data_url, f"/v1/markets/{market}/trades", {"limit": limit}
            )

        @get("/v1/markets/{market:str}/depth")
        async def depth(market: FromPath[str], request: Request[Any, Any, Any]) -> Any:
            return await gw.proxy(
                gw.market_data_url, f"/v1/markets/{market}/depth", dict(request.query_params)
            )

        @get("/v1/markets/{market:str}/ticker")
        async def ticker(market: FromPath[str]) -> Any:
            return await gw.proxy(gw.market_data_url, f"/v1/markets/{market}/ticker", {})

        # market data checks the parameters of these (400 naming the one at fault)
        @get("/v1/markets/{market:str}/book")
        async def book(market: FromPath[str], request: Request[Any, Any, Any]) -> Any:
            return await gw.proxy(
                gw.market_data_url, f"/v1/markets/{market}/book", dict(request.query_params)
            )

        @get("/v1/markets/{market:str}/candles")
        async def candles(market: FromPath[str], request: Request[Any, Any, Any]) -> Any:
            return await gw.proxy(
                gw.market_data_url, f"/v1/markets/{market}/candles", dict(request.query_params)
            )

        @get("/v1/tickers")
        async def tickers() -> Any:
            return await gw.proxy(gw.market_data_url, "/v1/tickers", {})

        @websocket("/v1/ws")
        async def feed(socket: WebSocket[Any, Any, Any]) -> None:
            await gw.feed.serve(socket)

        return [
            markets,
            place_order,
            cancel_order,
            faucet,
            balances,
            orders,
            trades,
            depth,
            ticker,
            book,
            candles,
            tickers,
            feed,
        ]


def _remember(table: OrderedDict[Any, Any], key: Any, value: Any, keep: int) -> None:
    table[key] = value
    if len(table) > keep:
        table.popitem(last=False)

"""Binance's spot REST API (`/api/v3`) over the gateway's own services.

Owns the translation only: each route parses Binance's parameters, calls the same `Gateway`
methods as the native routes (`build_place` + `place` for an order, `forwarded` for a
cancel, `history` for the account's reads, `proxy` for market data) and renders their answers
in Binance's field names. Every rule (ticks, lots, funds, permissions, rate limits) is the
native path's; a refusal of it is rendered with Binance's code (`common.from_api`). Rate
limits charge the same buckets as the native routes: `public` per client IP, `private` and
`orders` per account, with the native routes' weights (the Guard skips these routes: their
`opt` has no `bucket`, so form bodies pass; authentication and the charge happen here, in
that order).

Ids: `orderId` is the native order id, `clientOrderId` the native client order id (one is
made, as Binance does, when none is sent); `lastUpdateId` of `depth` is the market's event
seq, the seq the market streams number their `depthUpdate`s with.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Any

import msgspec
from litestar import Request, Response, Router, delete, get, post, put
from litestar.exceptions import HTTPException

from dex.core.validation import client_order_id_ok
from dex.gateway.auth import Guard, client_ip
from dex.gateway.binance import common as bc
from dex.gateway.binance.common import BinanceError, from_api
from dex.gateway.binance.userdata import ListenKeys
from dex.gateway.keys import KeyEntry
from dex.gateway.models import OrderRequest
from dex.gateway.routes import check_like_the_engine
from dex.gateway.service import Gateway
from dex.risk import commands as rc
from dex.runtime.http import ApiError, log_unhandled
from dex.runtime.logging import get_logger

OPT: dict[str, Any] = {"binance": True}  # no "bucket": the Guard leaves these routes to us
_TYPES = {
    "LIMIT": "limit",
    "MARKET": "market",
    "LIMIT_MAKER": "limit",
    "STOP_LOSS_LIMIT": "stop_limit",
}
_TYPE_BACK = {
    "limit": "LIMIT",
    "market": "MARKET",
    "stop_limit": "STOP_LOSS_LIMIT",
    "stop_market": "STOP_LOSS",
}
_TIFS = ("GTC", "IOC", "FOK")
MAX_PAGES = 20  # history pages one Binance listing reads at most (1,000 rows each)


def _error_response(e: BinanceError) -> Response[Any]:
    return Response(e.body(), status_code=e.status, headers=e.headers)


def _on_binance(_: Request[Any, Any, Any], e: BinanceError) -> Response[Any]:
    return _error_response(e)


def _on_api(_: Request[Any, Any, Any], e: ApiError) -> Response[Any]:
    return _error_response(from_api(e))


def _on_http(request: Request[Any, Any, Any], e: HTTPException) -> Response[Any]:
    if e.status_code >= 500:
        return _on_unexpected(request, e)
    return _error_response(BinanceError(-1100, str(e.detail), e.status_code))


_log = get_logger(service="gateway")


def _on_unexpected(request: Request[Any, Any, Any], e: Exception) -> Response[Any]:
    """A failure of ours: logged with the request id, answered -1000 without its detail
    (as the order route's fast path does, `dex.gateway.fastpath`)."""
    log_unhandled(_log, request.method, request.url.path, request.scope, e)
    return _error_response(bc.unknown_error())


class Rest:
    """The routes' shared state: the gateway, the guard whose buckets are charged."""

    def __init__(self, gw: Gateway, guard: Guard, listen_keys: ListenKeys) -> None:
        self.gw = gw
        self.guard = guard
        self.listen_keys = listen_keys

    # ------------------------------------------------------------------ request plumbing

    async def params(self, request: Request[Any, Any, Any]) -> dict[str, str]:
        body = await request.body() if request.method in ("POST", "PUT", "DELETE") else b""
        return bc.parse_params(
            bytes(request.scope.get("query_string", b"")),
            body,
            request.headers.get("content-type", ""),
        )

    async def public(self, request: Request[Any, Any, Any], weight: int = 1) -> dict[str, str]:
        params = await self.params(request)
        await self.guard.charge(
            request.scope, self.guard.buckets["public"], client_ip(request), weight
        )
        return params

    async def signed(
        self,
        request: Request[Any, Any, Any],
        permission: str,
        bucket: str = "private",
        weight: int = 1,
    ) -> tuple[KeyEntry, dict[str, str]]:
        body = await request.body() if request.method in ("POST", "PUT", "DELETE") else b""
        return await self.signed_parts(
            request.scope,
            request.headers.get("content-type", ""),
            request.headers.get(bc.KEY_HEADER),
            body,
            permission,
            bucket,
            weight,
        )

    async def signed_parts(
        self,
        scope: Any,
        content_type: str,
        api_key: str | None,
        body: bytes,
        permission: str,
        bucket: str = "private",
        weight: int = 1,
    ) -> tuple[KeyEntry, dict[str, str]]:
        """A signed request's key and parameters, its bucket charged (in that order): what
        every signed route checks, from the parts of a request (`scope` gives the query)."""
        query = bytes(scope.get("query_string", b""))
        params = bc.parse_params(query, body, content_type)
        payload, signature = bc.signed_payload(query, body)
        key = bc.authenticate(
            self.gw.keys, api_key, params, payload, signature, self.gw.now_ms(), permission
        )
        await self.guard.charge(scope, self.guard.buckets[bucket], key.account, weight)
        return key, params

    # ------------------------------------------------------------------ shapes

    def symbol_info(self, market: str) -> dict[str, Any]:
        d = self.gw.markets.describe(market)
        p = self.gw.markets.params[market]
        big = p.price_scale.render(2**53)
        return {
            "symbol": bc.symbol_of(market),
            "status": "TRADING" if d["status"] in ("active", "post_only") else "BREAK",
            "baseAsset": d["base"],
            "baseAssetPrecision": p.base.decimals,
            "quoteAsset": d["quote"],
            "quotePrecision": p.quote.decimals,
            "quoteAssetPrecision": p.quote.decimals,
            "baseCommissionPrecision": p.base.decimals,
            "quoteCommissionPrecision": p.quote.decimals,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT"],
            "icebergAllowed": True,
            "ocoAllowed": False,
            "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": d["tick_size"],
                    "maxPrice": big,
                    "tickSize": d["tick_size"],
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": d["min_size"],
                    "maxQty": p.size_scale.render(2**53),
                    "stepSize": d["lot_size"],
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": d["min_notional"],
                    "applyMinToMarket": True,
                    "maxNotional": p.quote_scale.render(2**62),
                    "applyMaxToMarket": False,
                    "avgPriceMins": 0,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_TAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def quote_text(self, market: str, amount: Decimal) -> str:
        decimals = self.gw.markets.params[market].quote.decimals
        return format(amount.quantize(Decimal(1).scaleb(-decimals)), "f")

    def order(
        self, row: dict[str, Any], quote_filled: Decimal | None = None, *, status: str | None = None
    ) -> dict[str, Any]:
        """A native order (history row or place outcome) in Binance's fields."""
        market = row["market"]
        p = self.gw.markets.params[market]
        zero_size, zero_price = p.size_scale.render(0), p.price_scale.render(0)
        filled = row.get("filled") or zero_size
        created = row.get("created_at") or self.gw.now_ms()
        return {
            "symbol": bc.symbol_of(market),
            "orderId": row["order_id"],
            "orderListId": -1,
            "clientOrderId": row.get("client_order_id") or "",
            "price": row.get("price") or zero_price,
            "origQty": row.get("size") or filled,
            "executedQty": filled,
            "cummulativeQuoteQty": self.quote_text(market, quote_filled or Decimal(0)),
            "status": status or bc.status_of(row["status"], row.get("reason")),
            "timeInForce": (row.get("tif") or "GTC").upper(),
            "type": _TYPE_BACK.get(row.get("type") or "limit", "LIMIT"),
            "side": str(row["side"]).upper(),
            "stopPrice": row.get("trigger_price") or zero_price,
            "icebergQty": zero_size,
            "time": created,
            "updateTime": row.get("updated_at") or created,
            "isWorking": row["status"] in ("open", "partially_filled", "pending"),
            "workingTime": created,
            "origQuoteOrderQty": row.get("quote_size") or self.quote_text(market, Decimal(0)),
            "selfTradePreventionMode": "EXPIRE_TAKER",
        }

    async def quote_filled(
        self, account: str, market: str | None, since: int | None
    ) -> dict[int, Decimal]:
        """Quote amount filled per order, from the account's fills since `since` (ms)."""
        out: dict[int, Decimal] = {}
        query: dict[str, Any] = {"market": market, "start": since, "limit": 1000}
        for _ in range(MAX_PAGES):
            page = await self.gw.history(account, "/fills", query)
            for f in page["fills"]:
                out[f["order_id"]] = out.get(f["order_id"], Decimal(0)) + Decimal(f["quote_size"])
            if not page.get("next_cursor"):
                break
            query["cursor"] = page["next_cursor"]
        return out

    async def orders(
        self, account: str, query: dict[str, Any], limit: int | None
    ) -> list[dict[str, Any]]:
        """The account's orders matching `query`, oldest first, with their quote filled."""
        rows: list[dict[str, Any]] = []
        q = dict(query, limit=min(limit or 1000, 1000))
        for _ in range(MAX_PAGES):
            page = await self.gw.history(account, "/orders", q)
            rows += page["orders"]
            if not page.get("next_cursor") or (limit is not None and len(rows) >= limit):
                break
            q["cursor"] = page["next_cursor"]
        if limit is not None:
            rows = rows[:limit]
        rows.reverse()
        if not rows:
            return []
        since = min(r["created_at"] for r in rows)
        quote = await self.quote_filled(account, query.get("market"), since)
        return [self.order(r, quote.get(r["order_id"])) for r in rows]

    async def one_order(self, account: str, market: str, params: dict[str, str]) -> dict[str, Any]:
        oid, cid = order_ids(params)
        if oid is None and not client_order_id_ok(cid):
            raise BinanceError(-2013, bc.NO_ORDER)  # no id we hand out looks like it
        path = f"/orders/{oid}" if oid is not None else f"/orders/by-client-id/{cid}"
        try:
            row = await self.gw.history(account, path, {"market": market} if oid is None else {})
        except ApiError as e:
            if e.status in (400, 404):
                raise BinanceError(-2013, bc.NO_ORDER) from None
            raise
        if row["market"] != market:
            raise BinanceError(-2013, bc.NO_ORDER)
        return dict(row)

    # ------------------------------------------------------------------ orders

    async def account(self, key: KeyEntry) -> dict[str, Any]:
        """`GET /api/v3/account` (and the WebSocket API's `account.status`)."""
        got = await self.gw.history(key.account, "/balances", {})
        return {
            "makerCommission": 0,
            "takerCommission": 0,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "canTrade": "trade" in key.permissions,
            "canWithdraw": "withdraw" in key.permissions,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": self.gw.now_ms(),
            "accountType": "SPOT",
            "balances": [
                {"asset": b["asset"], "free": b["available"], "locked": b["locked"]}
                for b in got.get("balances", [])
            ],
            "permissions": ["SPOT"],
            "uid": 0,
        }

    async def order_status(self, key: KeyEntry, params: dict[str, str]) -> dict[str, Any]:
        """`GET /api/v3/order` (and `order.status`): by `orderId` or `origClientOrderId`."""
        market = bc.market_of(self.gw.markets, params.get("symbol"))
        row = await self.one_order(key.account, market, params)
        quote = (
            await self.quote_filled(key.account, market, row["created_at"])
            if Decimal(row["filled"])
            else {}
        )
        return self.order(row, quote.get(row["order_id"]))

    async def open_orders(self, key: KeyEntry, params: dict[str, str]) -> list[dict[str, Any]]:
        """`GET /api/v3/openOrders` (and `openOrders.status`): one market's or all."""
        query: dict[str, Any] = {"status": "open"}
        if params.get("symbol"):
            query["market"] = bc.market_of(self.gw.markets, params["symbol"])
        return await self.orders(key.account, query, None)

    def cancel_ids(self, params: dict[str, str]) -> tuple[str, int | None, str | None]:
        """The market and the order (`orderId`, else `origClientOrderId`) a cancel names."""
        return (bc.market_of(self.gw.markets, params.get("symbol")), *order_ids(params))

    async def cancel(
        self, key: KeyEntry, market: str, oid: int | None, cid: str | None
    ) -> dict[str, Any]:
        """Cancel the account's order `oid` (else the one with client order id `cid`) in
        `market`; Binance's answer (-2011 for an order it does not hold open)."""
        cmd = rc.Cancel(
            market=market,
            account=key.account,
            order_id=oid,
            client_order_id=None if oid is not None else cid,
        )
        try:
            events = await self.gw.forwarded(key.account, cmd)
        except ApiError as e:
            raise from_api(e, cancel=True) from None
        done = None
        for ev in events:
            name = type(ev).__name__
            if name == "CancelRejected":
                raise BinanceError(-2011, bc.UNKNOWN_ORDER)
            if name in ("Cancelled", "Filled", "Expired") and (oid is None or ev.order_id == oid):
                done = ev
                break
        if done is None:
            raise BinanceError(-2011, bc.UNKNOWN_ORDER)
        row = await self.one_order(key.account, market, {"orderId": str(done.order_id)})
        quote = (
            await self.quote_filled(key.account, market, row["created_at"])
            if Decimal(row["filled"])
            else {}
        )
        status = {"Cancelled": "CANCELED", "Filled": "FILLED", "Expired": "EXPIRED"}[
            type(done).__name__
        ]
        out = self.order(row, quote.get(row["order_id"]), status=status)
        out["origClientOrderId"] = out["clientOrderId"]
        out["transactTime"] = self.gw.now_ms()
        return out

    def order_request(self, market: str, params: dict[str, str]) -> OrderRequest:
        """The native order for Binance's order parameters (a -11xx refusal for bad ones)."""
        side = bc.required(params, "side").upper()
        kind = bc.required(params, "type").upper()
        if side not in ("BUY", "SELL"):
            raise BinanceError(-1100, "Illegal characters found in parameter 'side'.")
        if kind not in _TYPES:
            raise BinanceError(-1116, "Invalid orderType.")
        tif = params.get("timeInForce")
        if tif is not None and tif.upper() not in _TIFS:
            raise BinanceError(-1115, "Invalid timeInForce.")
        body: dict[str, Any] = {"market": market, "side": side.lower(), "type": _TYPES[kind]}
        quantity, quote = (
            bc.decimal_text(params, "quantity"),
            bc.decimal_text(params, "quoteOrderQty"),
        )
        price, stop = bc.decimal_text(params, "price"), bc.decimal_text(params, "stopPrice")
        if kind == "MARKET":
            if (quantity is None) == (quote is None):
                raise BinanceError(
                    -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but not both."
                )
            if price is not None:
                raise BinanceError(-1106, "Parameter 'price' sent when not required.")
        else:
            if quote is not None:
                raise BinanceError(-1106, "Parameter 'quoteOrderQty' sent when not required.")
            body["price"] = bc.required(params, "price") and price
            if quantity is None:
                bc.required(params, "quantity")
        if kind in ("LIMIT", "STOP_LOSS_LIMIT"):
            body["tif"] = bc.required(params, "timeInForce").upper()
        elif tif is not None and kind == "LIMIT_MAKER":
            raise BinanceError(-1106, "Parameter 'timeInForce' sent when not required.")
        elif tif is not None:
            body["tif"] = tif.upper()
        if kind == "LIMIT_MAKER":
            body["post_only"] = True
        if kind == "STOP_LOSS_LIMIT":
            body["trigger_price"] = bc.required(params, "stopPrice") and stop
        if quantity is not None:
            body["size"] = quantity
        if quote is not None:
            body["quote_size"] = quote
        iceberg = bc.decimal_text(params, "icebergQty")
        if iceberg is not None:
            body["display_size"] = iceberg
        stp = params.get("selfTradePreventionMode")
        if stp:
            if stp.upper() not in ("EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "NONE"):
                raise BinanceError(
                    -1100, "Illegal characters found in parameter 'selfTradePreventionMode'."
                )
            body["stp"] = stp.lower()
        body["client_order_id"] = params.get("newClientOrderId") or "dex" + secrets.token_hex(10)
        try:
            return msgspec.convert(body, OrderRequest)
        except msgspec.ValidationError as e:
            raise BinanceError(-1100, f"Illegal characters found in a parameter: {e}") from None

    def place_command(self, key: KeyEntry, params: dict[str, str]) -> tuple[str, rc.Place, str]:
        """The market, the native place command and the answer's type (ACK, RESULT, FULL)
        for Binance's order parameters, checked as the engine will check them (not funds:
        risk checks those when the order is placed)."""
        market = bc.market_of(self.gw.markets, params.get("symbol"))
        resp_type = (params.get("newOrderRespType") or "FULL").upper()
        if resp_type not in ("ACK", "RESULT", "FULL"):
            raise BinanceError(-1100, "Illegal characters found in parameter 'newOrderRespType'.")
        cmd = self.gw.build_place(self.order_request(market, params), key.account, key.api_key)
        check_like_the_engine(cmd)
        return market, cmd, resp_type

    async def new_order(
        self, scope: Any, content_type: str, api_key: str | None, body: bytes
    ) -> dict[str, Any]:
        """`POST /api/v3/order` from the parts of its request: checked, charged, placed and
        answered in Binance's shape (ACK, RESULT or FULL); a refusal raises `BinanceError`
        or the native path's `ApiError`. The Litestar route and the gateway's fast path
        (`dex.gateway.fastpath`) both answer with it."""
        key, params = await self.signed_parts(scope, content_type, api_key, body, "trade", "orders")
        market, cmd, resp_type = self.place_command(key, params)
        return await self.submit(market, cmd, params, resp_type)

    async def submit(
        self, market: str, cmd: rc.Place, params: dict[str, str], resp_type: str
    ) -> dict[str, Any]:
        """Place `cmd` (from `place_command`) and answer in Binance's shape."""
        gw = self.gw
        out = await gw.place(cmd)
        if out["status"] == "rejected":
            raise bc.reject(out.get("reason"), out.get("message"))
        now = gw.now_ms()
        ack = {
            "symbol": bc.symbol_of(market),
            "orderId": out["order_id"],
            "orderListId": -1,
            "clientOrderId": out["client_order_id"] or "",
            "transactTime": now,
        }
        if resp_type == "ACK":
            return ack
        quote = sum((Decimal(f["price"]) * Decimal(f["size"]) for f in out["fills"]), Decimal(0))
        row = dict(out, created_at=now, updated_at=now)
        shaped = self.order(row, quote)
        if params.get("type", "").upper() == "LIMIT_MAKER":
            shaped["type"] = "LIMIT_MAKER"
        result = {
            **ack,
            **{
                k: shaped[k]
                for k in (
                    "price",
                    "origQty",
                    "executedQty",
                    "cummulativeQuoteQty",
                    "status",
                    "timeInForce",
                    "type",
                    "side",
                    "workingTime",
                    "selfTradePreventionMode",
                )
            },
        }
        if resp_type == "RESULT":
            return result
        result["fills"] = [
            {
                "price": f["price"],
                "qty": f["size"],
                "commission": f["fee"] or "0",
                "commissionAsset": f["fee_asset"] or "",
                "tradeId": f["trade_id"],
            }
            for f in out["fills"]
        ]
        return result


def order_ids(
    params: dict[str, str], by_id: str = "orderId", by_client_id: str = "origClientOrderId"
) -> tuple[int | None, str | None]:
    """The order a request names: its id, else its client order id (-1102 if neither)."""
    oid = bc.integer(params, by_id, None, 1)
    cid = params.get(by_client_id) or None
    if oid is None and cid is None:
        raise BinanceError(
            -1102, f"Param '{by_client_id}' or '{by_id}' must be sent, but both were empty/null!"
        )
    return oid, cid


def rest_handlers(api: Rest) -> Router:
    """The `/api/v3` routes, bound to `api` (one Router: Binance's error shape for them all)."""
    gw, guard, listen_keys = api.gw, api.guard, api.listen_keys

    # ------------------------------------------------------------------ public

    @get("/ping", opt=OPT)
    async def ping(request: Request[Any, Any, Any]) -> dict[str, Any]:
        await api.public(request)
        return {}

    @get("/time", opt=OPT)
    async def server_time(request: Request[Any, Any, Any]) -> dict[str, Any]:
        await api.public(request)
        return {"serverTime": gw.now_ms()}

    @get("/exchangeInfo", opt=OPT)
    async def exchange_info(request: Request[Any, Any, Any]) -> dict[str, Any]:
        params = await api.public(request)
        markets = list(gw.markets.params)
        if "symbol" in params:
            markets = [bc.market_of(gw.markets, params["symbol"])]
        elif "symbols" in params:
            markets = [
                bc.market_of(gw.markets, s) for s in bc.json_list(params["symbols"], "symbols")
            ]
        b = guard.buckets
        return {
            "timezone": "UTC",
            "serverTime": gw.now_ms(),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "SECOND",
                    "intervalNum": 1,
                    "limit": b["public"].refill,
                },
                {
                    "rateLimitType": "ORDERS",
                    "interval": "SECOND",
                    "intervalNum": 1,
                    "limit": b["orders"].refill,
                },
            ],
            "exchangeFilters": [],
            "symbols": [api.symbol_info(m) for m in markets],
        }

    @get("/depth", opt=OPT)
    async def depth(request: Request[Any, Any, Any]) -> dict[str, Any]:
        params = await api.public(request, 2)
        market = bc.market_of(gw.markets, params.get("symbol"))
        limit = bc.integer(params, "limit", 100, 1, 5000)
        book = await gw.proxy(
            gw.market_data_url, f"/v1/markets/{market}/book", {"depth": min(limit or 100, 1000)}
        )
        return {"lastUpdateId": book["seq"], "bids": book["bids"], "asks": book["asks"]}

    async def tickers_for(params: dict[str, str]) -> tuple[list[dict[str, Any]], bool]:
        """The native tickers asked for, and whether one symbol was asked (one object)."""
        if "symbol" in params:
            market = bc.market_of(gw.markets, params["symbol"])
            return [await gw.proxy(gw.market_data_url, f"/v1/markets/{market}/ticker", {})], True
        all_ = await gw.proxy(gw.market_data_url, "/v1/tickers", {})
        if "symbols" in params:
            wanted = {
                bc.market_of(gw.markets, s) for s in bc.json_list(params["symbols"], "symbols")
            }
            all_ = [t for t in all_ if t["market"] in wanted]
        return [t for t in all_ if t["market"] in gw.markets.params], False

    def ticker24(t: dict[str, Any]) -> dict[str, Any]:
        p = gw.markets.params[t["market"]]
        zp, zs = p.price_scale.render(0), p.size_scale.render(0)
        return bc.ticker_24hr(t, zp, zs, gw.now_ms())

    @get("/ticker/24hr", opt=OPT)
    async def ticker_24hr(request: Request[Any, Any, Any]) -> Any:
        params = await api.public(request, 2)
        got, one = await tickers_for(params)
        out = [ticker24(t) for t in got]
        return out[0] if one else out

    @get("/ticker/price", opt=OPT)
    async def ticker_price(request: Request[Any, Any, Any]) -> Any:
        params = await api.public(request, 2)
        got, one = await tickers_for(params)
        out = [{"symbol": x["symbol"], "price": x["lastPrice"]} for x in map(ticker24, got)]
        return out[0] if one else out

    @get("/ticker/bookTicker", opt=OPT)
    async def book_ticker(request: Request[Any, Any, Any]) -> Any:
        params = await api.public(request, 2)
        got, one = await tickers_for(params)
        out = [
            {k: x[k] for k in ("symbol", "bidPrice", "bidQty", "askPrice", "askQty")}
            for x in map(ticker24, got)
        ]
        return out[0] if one else out

    async def recent(params: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
        market = bc.market_of(gw.markets, params.get("symbol"))
        limit = bc.integer(params, "limit", 500, 1, 1000) or 500
        got = await gw.proxy(
            gw.market_data_url, f"/v1/markets/{market}/trades", {"limit": min(limit, gw.max_trades)}
        )
        trades = list(reversed(got["trades"]))  # Binance: oldest first
        lo, hi = bc.integer(params, "startTime"), bc.integer(params, "endTime")
        if lo is not None:
            trades = [t for t in trades if t["time_ms"] >= lo]
        if hi is not None:
            trades = [t for t in trades if t["time_ms"] <= hi]
        return market, trades

    @get("/trades", opt=OPT)
    async def trades(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
        params = await api.public(request)
        market, got = await recent(params)
        p = gw.markets.params[market]
        return [
            {
                "id": t["trade_id"],
                "price": t["price"],
                "qty": t["size"],
                "quoteQty": api.quote_text(market, Decimal(t["price"]) * Decimal(t["size"])),
                "time": t["time_ms"],
                "isBuyerMaker": t["taker_side"] == "sell",
                "isBestMatch": True,
            }
            for t in got
            if p is not None
        ]

    @get("/aggTrades", opt=OPT)
    async def agg_trades(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
        params = await api.public(request)
        _, got = await recent(params)
        return [
            {
                "a": t["trade_id"],
                "p": t["price"],
                "q": t["size"],
                "f": t["trade_id"],
                "l": t["trade_id"],
                "T": t["time_ms"],
                "m": t["taker_side"] == "sell",
                "M": True,
            }
            for t in got
        ]

    @get("/klines", opt=OPT)
    async def klines(request: Request[Any, Any, Any]) -> list[list[Any]]:
        params = await api.public(request, 2)
        market = bc.market_of(gw.markets, params.get("symbol"))
        interval = bc.required(params, "interval")
        query = {
            "interval": interval,
            "start": bc.integer(params, "startTime"),
            "end": bc.integer(params, "endTime"),
            "limit": bc.integer(params, "limit", 500, 1, 1000),
        }
        got = await gw.proxy(
            gw.market_data_url,
            f"/v1/markets/{market}/candles",
            {k: v for k, v in query.items() if v is not None},
        )
        span = _interval_ms(interval)
        return [
            [t, o, h, lo, c, v, t + span - 1, q, n, "0", "0", "0"]
            for t, o, h, lo, c, v, q, n in got["candles"]
        ]

    # ------------------------------------------------------------------ account

    @get("/account", opt=OPT)
    async def account(request: Request[Any, Any, Any]) -> dict[str, Any]:
        key, _ = await api.signed(request, "read")
        return await api.account(key)

    # ------------------------------------------------------------------ orders

    @post("/order", opt=OPT, status_code=200)
    async def new_order(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return await api.new_order(
            request.scope,
            request.headers.get("content-type", ""),
            request.headers.get(bc.KEY_HEADER),
            await request.body(),
        )

    @post("/order/test", opt=OPT, status_code=200)
    async def order_test(request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Binance's order test: the order checked (parameters, signature, key, market rules)
        and not placed; no funds are checked, as Binance's does not."""
        key, params = await api.signed(request, "trade")
        api.place_command(key, params)
        return {}

    @get("/order", opt=OPT)
    async def get_order(request: Request[Any, Any, Any]) -> dict[str, Any]:
        key, params = await api.signed(request, "read")
        return await api.order_status(key, params)

    @delete("/order", opt=OPT, status_code=200)
    async def cancel_order(request: Request[Any, Any, Any]) -> dict[str, Any]:
        key, params = await api.signed(request, "trade", "orders")
        return await api.cancel(key, *api.cancel_ids(params))

    @post("/order/cancelReplace", opt=OPT, status_code=200)
    async def cancel_replace(request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Cancel an order, then place another (what ccxt's `edit_order` sends): the new
        order is checked first, so a malformed one cancels nothing; with
        `cancelReplaceMode=STOP_ON_FAILURE` a failed cancel places nothing."""
        key, params = await api.signed(request, "trade", "orders")
        mode = bc.required(params, "cancelReplaceMode").upper()
        if mode not in ("STOP_ON_FAILURE", "ALLOW_FAILURE"):
            raise BinanceError(-1100, "Illegal characters found in parameter 'cancelReplaceMode'.")
        oid, cid = order_ids(params, "cancelOrderId", "cancelOrigClientOrderId")
        market, cmd, resp_type = api.place_command(key, params)
        out: dict[str, Any] = {"cancelResult": "SUCCESS", "newOrderResult": "NOT_ATTEMPTED"}
        try:
            out["cancelResponse"] = await api.cancel(key, market, oid, cid)
        except BinanceError as e:
            out["cancelResult"], out["cancelResponse"] = "FAILURE", e.body()
        out["newOrderResponse"] = None
        if out["cancelResult"] == "SUCCESS" or mode == "ALLOW_FAILURE":
            try:
                out["newOrderResponse"] = await api.submit(market, cmd, params, resp_type)
                out["newOrderResult"] = "SUCCESS"
            except (BinanceError, ApiError) as e:
                refusal = e if isinstance(e, BinanceError) else from_api(e)
                out["newOrderResult"], out["newOrderResponse"] = "FAILURE", refusal.body()
        results = (out["cancelResult"], out["newOrderResult"])
        if results == ("SUCCESS", "SUCCESS"):
            return out
        if "SUCCESS" in results:
            raise BinanceError(-2021, "Order cancel-replace partially failed.", 409, data=out)
        raise BinanceError(-2022, "Order cancel-replace failed.", 400, data=out)

    @get("/openOrders", opt=OPT)
    async def open_orders(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
        key, params = await api.signed(request, "read")
        return await api.open_orders(key, params)

    @delete("/openOrders", opt=OPT, status_code=200)
    async def cancel_open_orders(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
        key, params = await api.signed(request, "trade", "orders", 5)
        market = bc.market_of(gw.markets, params.get("symbol"))
        try:
            events = await gw.forwarded(
                key.account, rc.CancelAll(account=key.account, market=market)
            )
        except ApiError as e:
            raise from_api(e, cancel=True) from None
        ids = {ev.order_id for ev in events if type(ev).__name__ == "Cancelled"}
        if not ids:
            raise BinanceError(-2011, bc.UNKNOWN_ORDER)
        got = await api.orders(key.account, {"status": "all", "market": market}, None)
        out = [o for o in got if o["orderId"] in ids]
        for o in out:
            o["status"] = "CANCELED"
            o["origClientOrderId"] = o["clientOrderId"]
        return out

    @get("/allOrders", opt=OPT)
    async def all_orders(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
        key, params = await api.signed(request, "read")
        market = bc.market_of(gw.markets, params.get("symbol"))
        query = {
            "status": "all",
            "market": market,
            "start": bc.integer(params, "startTime"),
            "end": bc.integer(params, "endTime"),
        }
        got = await api.orders(
            key.account,
            {k: v for k, v in query.items() if v is not None},
            bc.integer(params, "limit", 500, 1, 1000),
        )
        first = bc.integer(params, "orderId")
        return [o for o in got if first is None or o["orderId"] >= first]

    @get("/myTrades", opt=OPT)
    async def my_trades(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
        key, params = await api.signed(request, "read")
        market = bc.market_of(gw.markets, params.get("symbol"))
        limit = bc.integer(params, "limit", 500, 1, 1000)
        query = {
            "market": market,
            "start": bc.integer(params, "startTime"),
            "end": bc.integer(params, "endTime"),
            "limit": limit,
        }
        page = await gw.history(
            key.account, "/fills", {k: v for k, v in query.items() if v is not None}
        )
        oid = bc.integer(params, "orderId")
        fills = [f for f in reversed(page["fills"]) if oid is None or f["order_id"] == oid]
        return [
            {
                "symbol": bc.symbol_of(f["market"]),
                "id": f["trade_id"],
                "orderId": f["order_id"],
                "orderListId": -1,
                "price": f["price"],
                "qty": f["size"],
                "quoteQty": f["quote_size"],
                "commission": f["fee"],
                "commissionAsset": f["fee_asset"],
                "time": f["ts"],
                "isBuyer": f["side"] == "buy",
                "isMaker": f["liquidity"] == "maker",
                "isBestMatch": True,
            }
            for f in fills
        ]

    # ------------------------------------------------------------------ listen keys

    async def stream_key(request: Request[Any, Any, Any]) -> tuple[KeyEntry, dict[str, str]]:
        """A listen-key route: the API key alone (Binance's USER_STREAM security)."""
        params = await api.params(request)
        entry = gw.keys.get(request.headers.get(bc.KEY_HEADER) or "")
        if (
            entry is None
            or entry.revoked
            or not entry.usable
            or (entry.expires_at and gw.now_ms() >= entry.expires_at)
        ):
            raise BinanceError(-2015, bc.BAD_KEY, 401)
        await guard.charge(request.scope, guard.buckets["private"], entry.account, 2)
        return entry, params

    @post("/userDataStream", opt=OPT, status_code=200)
    async def new_listen_key(request: Request[Any, Any, Any]) -> dict[str, Any]:
        entry, _ = await stream_key(request)
        return {"listenKey": await listen_keys.new(entry)}

    @put("/userDataStream", opt=OPT, status_code=200)
    async def keep_listen_key(request: Request[Any, Any, Any]) -> dict[str, Any]:
        entry, params = await stream_key(request)
        await listen_keys.keep(entry, bc.required(params, "listenKey"))
        return {}

    @delete("/userDataStream", opt=OPT, status_code=200)
    async def close_listen_key(request: Request[Any, Any, Any]) -> dict[str, Any]:
        entry, params = await stream_key(request)
        await listen_keys.close(entry, bc.required(params, "listenKey"))
        return {}

    return Router(
        "/api/v3",
        route_handlers=[
            ping,
            server_time,
            exchange_info,
            depth,
            ticker_24hr,
            ticker_price,
            book_ticker,
            trades,
            agg_trades,
            klines,
            account,
            new_order,
            order_test,
            cancel_replace,
            get_order,
            cancel_order,
            open_orders,
            cancel_open_orders,
            all_orders,
            my_trades,
            new_listen_key,
            keep_listen_key,
            close_listen_key,
        ],
        exception_handlers={
            BinanceError: _on_binance,
            ApiError: _on_api,
            HTTPException: _on_http,
            Exception: _on_unexpected,
        },
        # Binance's own API documentation describes these (parameters, answers, `{"code",
        # "msg"}` errors); the OpenAPI document is the native API's
        include_in_schema=False,
    )


def _interval_ms(interval: str) -> int:
    unit = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}.get(interval[-1:], 0)
    try:
        return int(interval[:-1]) * unit
    except ValueError:
        return 0

"""The gateway's routes: public market routes, wallet onboarding, the signed private routes.

Every route declares in `opt` the bucket it is charged to (`public` per client IP, `private`
and `orders` per account), its weight, and for private routes the permission its key needs
(`dex.gateway.auth.Guard` checks them before the handler runs). A private route takes the
account from the key, never from the body or the path. Amounts in and out are decimal
strings at the asset's or market's precision. Refusals are `{"error": {"code", "message",
"field"}}` with the statuses the OpenAPI document lists for each route.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from litestar import Request, WebSocket, delete, get, patch, post, websocket
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from dex.core import commands as mc
from dex.core.enums import OrderType
from dex.core.errors import CommandError
from dex.core.numbers import to_steps
from dex.gateway import answers as ans
from dex.gateway.auth import key_of, require_key
from dex.gateway.keys import KeyEntry, new_api_key, new_secret, seal
from dex.gateway.models import (
    AmendRequest,
    ErrorBody,
    FaucetRequest,
    OrderRequest,
    RegisterApiKeyRequest,
    RevokeApiKeyRequest,
    order_message,
)
from dex.gateway.service import Gateway, refusal
from dex.risk import commands as rc
from dex.risk import events as rev
from dex.runtime.http import ApiError, account_param
from dex.wire import signing

PERMISSIONS = ("read", "trade", "withdraw")
MAX_INT = 2**63 - 1
_ORDER_ID = re.compile(r"[0-9]{1,19}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,36}")
_API_KEY = re.compile(r"dk_[0-9a-f]{32}")
_ED25519_KEY = re.compile(r"[0-9a-f]{64}")

_STATUSES = {
    400: "bad input: the field is named",
    401: "missing, unknown, revoked or expired key, bad signature, stale timestamp",
    403: "the key lacks the permission",
    404: "unknown market, asset or order",
    409: "conflict (a nonce used, a market not open)",
    413: "body too large",
    415: "body not application/json",
    429: "over the rate limit (Retry-After)",
    503: "a service this route needs is down",
    504: "no outcome in time (the request is logged and takes effect)",
}


def _responses(*codes: int) -> dict[int, ResponseSpec]:
    return {
        c: ResponseSpec(data_container=ErrorBody, description=_STATUSES[c], generate_examples=False)
        for c in codes
    }


PUBLIC = _responses(400, 404, 429, 503)
SIGNED_READ = _responses(400, 401, 403, 404, 429, 503)
SIGNED_WRITE = _responses(400, 401, 403, 404, 409, 413, 415, 429, 503, 504)
ONBOARD = _responses(400, 401, 404, 409, 413, 415, 429, 503, 504)


def _pub(weight: int = 1) -> dict[str, Any]:
    return {"bucket": "public", "weight": weight}


def _priv(permission: str, weight: int = 1, bucket: str = "private") -> dict[str, Any]:
    return {"bucket": bucket, "weight": weight, "auth": permission}


def order_id_param(raw: str) -> int:
    """An order id from a path: ASCII digits only, 1 to 2^63-1."""
    if _ORDER_ID.fullmatch(raw) and 0 < int(raw) <= MAX_INT:
        return int(raw)
    raise ApiError(
        400, "invalid_request", "order_id must be an integer from 1 to 2^63-1", "order_id"
    )


def client_id_param(raw: str) -> str:
    if _CLIENT_ID.fullmatch(raw):
        return raw
    raise ApiError(
        400,
        "invalid_request",
        "client_order_id must be 1 to 36 of A-Z a-z 0-9 . _ : -",
        "client_order_id",
    )


# the engine's place fields that risk's place command has too (the rest take their defaults)
_ENGINE_PLACE_FIELDS = tuple(
    f for f in mc.Place.__struct_fields__ if f in rc.Place.__struct_fields__
)


def check_like_the_engine(cmd: rc.Place) -> None:
    """A 400 naming the field for a place the engine would refuse as malformed (a limit order
    with no price, a market order with both sizes, GTD with no expiry, ...), so that it is
    refused here and never reaches risk: the engine's own check, on the engine's command."""
    fields = {f: getattr(cmd, f) for f in _ENGINE_PLACE_FIELDS}
    try:
        mc.Place(**fields)
    except CommandError as e:
        raise ApiError(400, "invalid_request", e.message, e.field) from None


def _permissions(text: str) -> str:
    """The canonical form of a permission list (read,trade,withdraw order) or a 400."""
    given = text.split(",")
    if not text or any(p not in PERMISSIONS for p in given) or len(set(given)) != len(given):
        raise ApiError(
            400,
            "invalid_request",
            "permissions must be a comma list of read, trade, withdraw",
            "permissions",
        )
    return ",".join(p for p in PERMISSIONS if p in given)


Limit = Annotated[int, Parameter(ge=1, le=1000, description="rows per page")]


WalletSigner = Callable[[str, dict[str, Any], str, str], None]
PlaceOrder = Callable[[OrderRequest, KeyEntry | None], Awaitable[ans.OrderOutcome]]

# POST /v1/orders: charged to the account's order bucket, needs `trade`; a wallet-signed
# order may come without key headers. One dict for the route and its fast path.
PLACE_ORDER_OPT: dict[str, Any] = {**_priv("trade", bucket="orders"), "wallet": True}


def wallet_signer(chain_id: int) -> WalletSigner:
    """`check(primary, message, signature, account)`: a 400 for a message that cannot be
    hashed, a 401 `bad_signature` unless `account`'s wallet signed it (EIP-712)."""
    hasher = signing.TypedHasher(chain_id)

    def check(primary: str, message: dict[str, Any], signature: str, account: str) -> None:
        try:
            digest = hasher.digest(primary, message)
        except signing.SignatureError as e:
            raise ApiError(400, "invalid_request", e.message, e.field) from None
        try:
            signer = signing.recover_address(digest, signature)
        except signing.SignatureError as e:
            # well-formed (the body's pattern checked the shape) yet no signer: a forgery
            # or a corrupted signature, refused like one by another wallet
            raise ApiError(
                401, "bad_signature", f"the {primary} signature {e.message}", "signature"
            ) from None
        if not signing.same_address(signer, account):
            raise ApiError(
                401,
                "bad_signature",
                f"the {primary} signature is not the account's wallet's",
                "signature",
            )

    return check


def order_placer(gw: Gateway, signer: WalletSigner | None = None) -> PlaceOrder:
    """`place(data, key)`: POST /v1/orders once the guard has passed the request (`key`:
    the API key that signed it; None: a wallet-signed order, checked here). The one
    implementation behind the Litestar route and its fast path (`dex.gateway.fastpath`)."""
    check_wallet = signer or wallet_signer(gw.chain_id)

    def wallet_order(data: OrderRequest) -> str:
        if data.account is None or data.signature is None or data.nonce is None:
            raise ApiError(
                401,
                "missing_credentials",
                "sign with an API key, or send account, nonce and the wallet's Order signature",
            )
        account = account_param(data.account)
        now = gw.now_ms()
        if abs(now - data.nonce) > gw.recv_window_ms:
            raise ApiError(
                401,
                "timestamp_out_of_window",
                f"a wallet-signed order's nonce is its time in ms, within "
                f"{gw.recv_window_ms} ms of the server's",
                "nonce",
            )
        check_wallet("Order", order_message(data, data.account), data.signature, account)
        return account

    async def place(data: OrderRequest, key: KeyEntry | None) -> ans.OrderOutcome:
        if key is not None:
            if data.account is not None or data.signature is not None:
                raise ApiError(
                    400,
                    "invalid_request",
                    "with an API key the account is the key's: no account or signature",
                    "account" if data.account is not None else "signature",
                )
            if data.nonce is not None:
                raise ApiError(400, "invalid_request", "nonce is for wallet-signed orders", "nonce")
            account = key.account
        else:
            account = wallet_order(data)
        if data.type == OrderType.MARKET and data.post_only:
            raise ApiError(
                400, "invalid_request", "a market order cannot be post_only", "post_only"
            )
        if data.expires_at is not None and data.expires_at <= gw.now_ms():
            raise ApiError(400, "invalid_request", "expires_at is in the past", "expires_at")
        cmd = gw.build_place(data, account, None if key is None else key.api_key)
        check_like_the_engine(cmd)
        out = await gw.place(cmd)
        return ans.typed(ans.OrderOutcome, out)

    return place


def route_handlers(gw: Gateway) -> list[Any]:
    """Every route of the gateway, bound to `gw`."""
    check_wallet = wallet_signer(gw.chain_id)
    place = order_placer(gw, check_wallet)

    # ------------------------------------------------------------------ public

    @get("/v1/time", opt=_pub(), responses=PUBLIC)
    async def server_time() -> ans.ServerTime:
        """The server's clock, ms since the epoch (sign requests within the window of it)."""
        return ans.ServerTime(server_time=gw.now_ms())

    @get("/v1/eip712", opt=_pub(), responses=PUBLIC)
    async def eip712() -> ans.TypedDataDocument:
        """The EIP-712 domain and every typed-data type a client signs."""
        return ans.typed(ans.TypedDataDocument, signing.eip712_document(gw.chain_id))

    @get("/v1/markets", opt=_pub(), responses=PUBLIC)
    async def markets() -> list[ans.MarketRules]:
        """Every market with its rules, current status and fees."""
        return [ans.typed(ans.MarketRules, gw.markets.describe(m)) for m in gw.markets.params]

    @get("/v1/assets", opt=_pub(), responses=PUBLIC)
    async def assets() -> list[ans.AssetInfo]:
        return [
            ans.AssetInfo(symbol=a.symbol, decimals=a.decimals) for a in gw.markets.assets.values()
        ]

    @get("/v1/markets/{market:str}/trades", opt=_pub(), responses=PUBLIC)
    async def trades(
        market: str,
        limit: int = Parameter(default=100, ge=1, le=gw.max_trades),
    ) -> Any:
        gw.markets.get(market)  # 404 for an unknown one, before anything is proxied
        return await gw.proxy(gw.market_data_url, f"/v1/markets/{market}/trades", {"limit": limit})

    @get("/v1/markets/{market:str}/depth", opt=_pub(2), responses=PUBLIC)
    async def depth(market: str, request: Request[Any, Any, Any]) -> Any:
        gw.markets.get(market)
        return await gw.proxy(
            gw.market_data_url, f"/v1/markets/{market}/depth", dict(request.query_params)
        )

    @get("/v1/markets/{market:str}/ticker", opt=_pub(), responses=PUBLIC)
    async def ticker(market: str) -> Any:
        gw.markets.get(market)
        return await gw.proxy(gw.market_data_url, f"/v1/markets/{market}/ticker", {})

    @get("/v1/markets/{market:str}/book", opt=_pub(2), responses=PUBLIC)
    async def book(market: str, request: Request[Any, Any, Any]) -> Any:
        """The L2 book (`depth` levels a side) with its seq and checksum."""
        gw.markets.get(market)
        return await gw.proxy(
            gw.market_data_url, f"/v1/markets/{market}/book", dict(request.query_params)
        )

    @get("/v1/markets/{market:str}/candles", opt=_pub(2), responses=PUBLIC)
    async def candles(market: str, request: Request[Any, Any, Any]) -> Any:
        gw.markets.get(market)
        return await gw.proxy(
            gw.market_data_url, f"/v1/markets/{market}/candles", dict(request.query_params)
        )

    @get("/v1/tickers", opt=_pub(2), responses=PUBLIC)
    async def tickers() -> Any:
        return await gw.proxy(gw.market_data_url, "/v1/tickers", {})

    # ------------------------------------------------------------------ keys

    @post("/v1/api-keys", status_code=200, opt=_pub(5), responses=ONBOARD)
    async def register_key(data: RegisterApiKeyRequest) -> ans.NewApiKey:
        """Register an API key, signed by the account's wallet (EIP-712 `RegisterApiKey`).
        An `hmac` key's secret is in this answer only."""
        account = account_param(data.account)
        permissions = _permissions(data.permissions)
        if data.keyType not in ("hmac", "ed25519"):
            raise ApiError(400, "invalid_request", "keyType must be hmac or ed25519", "keyType")
        public = data.publicKey.lower()
        if data.keyType == "ed25519" and not _ED25519_KEY.fullmatch(public):
            raise ApiError(
                400,
                "invalid_request",
                "publicKey must be the raw 32-byte Ed25519 key in hex",
                "publicKey",
            )
        if data.keyType == "hmac" and data.publicKey:
            raise ApiError(400, "invalid_request", "an hmac key has no publicKey", "publicKey")
        message = {
            "account": data.account,
            "keyType": data.keyType,
            "publicKey": data.publicKey,
            "permissions": data.permissions,
            "nonce": data.nonce,
            "expiresAt": data.expiresAt,
        }
        check_wallet("RegisterApiKey", message, data.signature, account)
        if data.expiresAt and data.expiresAt <= gw.now_ms():
            raise ApiError(400, "invalid_request", "expiresAt is in the past", "expiresAt")
        if gw.kek is None and data.keyType == "hmac":
            raise ApiError(503, "unavailable", "no key encryption key: hmac keys are off")
        api_key = new_api_key()
        secret = new_secret() if data.keyType == "hmac" else None
        material = public
        if secret is not None:
            assert gw.kek is not None
            material = seal(gw.kek, secret, f"{api_key}:{account}")
        cmd = rc.RegisterApiKey(
            account=account,
            api_key=api_key,
            key_type=data.keyType,
            material=material,
            permissions=permissions,
            nonce=data.nonce,
            expires_at=data.expiresAt,
        )
        error, events = await gw.submit(account, cmd)
        if error is not None:
            raise ApiError(400, "invalid_request", error)
        for ev in events:
            if isinstance(ev, rev.RequestRejected):
                raise refusal(str(ev.code), ev.message)
            if isinstance(ev, rev.ApiKeyRegistered):
                gw.keys.add(ev)  # usable on this gateway at once, before the tail sees it
                out = {
                    "api_key": api_key,
                    "key_type": data.keyType,
                    "account": account,
                    "permissions": permissions,
                    "expires_at": data.expiresAt,
                }
                if secret is not None:
                    out["secret"] = secret
                return ans.typed(ans.NewApiKey, out)
        raise ApiError(500, "internal_error", "risk gave no answer to the registration")

    @get("/v1/api-keys", opt=_priv("read"), responses=SIGNED_READ)
    async def list_keys(request: Request[Any, Any, Any]) -> ans.ApiKeys:
        """The account's keys (no secrets)."""
        key = require_key(request)
        return ans.typed(ans.ApiKeys, {"keys": [k.public() for k in gw.keys.keys_of(key.account)]})

    async def _revoke(account: str, api_key: str, nonce: int | None) -> ans.Revoked:
        error, events = await gw.submit(
            account, rc.RevokeApiKey(account=account, api_key=api_key, nonce=nonce)
        )
        if error is not None:
            raise ApiError(400, "invalid_request", error)
        for ev in events:
            if isinstance(ev, rev.RequestRejected):
                raise refusal(str(ev.code), ev.message, "api_key")
            if isinstance(ev, rev.ApiKeyRevoked):
                gw.keys.revoke(api_key)
                return ans.Revoked(api_key=api_key, revoked=True)
        raise ApiError(500, "internal_error", "risk gave no answer to the revocation")

    @delete(
        "/v1/api-keys/{api_key:str}", status_code=200, opt=_priv("read"), responses=SIGNED_WRITE
    )
    async def revoke_key(api_key: str, request: Request[Any, Any, Any]) -> ans.Revoked:
        """Revoke one of the account's keys (signed by any key of the account)."""
        key = require_key(request)
        if not _API_KEY.fullmatch(api_key):
            raise ApiError(400, "invalid_request", "api_key must be dk_ + 32 hex", "api_key")
        return await _revoke(key.account, api_key, None)

    @post("/v1/api-keys/revoke", status_code=200, opt=_pub(5), responses=ONBOARD)
    async def revoke_key_by_wallet(data: RevokeApiKeyRequest) -> ans.Revoked:
        """Revoke a key with the wallet's signature (EIP-712 `RevokeApiKey`): for a lost key."""
        account = account_param(data.account)
        message = {"account": data.account, "apiKey": data.apiKey, "nonce": data.nonce}
        check_wallet("RevokeApiKey", message, data.signature, account)
        return await _revoke(account, data.apiKey, data.nonce)

    # ------------------------------------------------------------------ orders

    @post("/v1/orders", status_code=200, opt=PLACE_ORDER_OPT, responses=SIGNED_WRITE)
    async def place_order(data: OrderRequest, request: Request[Any, Any, Any]) -> ans.OrderOutcome:
        """Place an order; the answer is the engine's outcome (status, fills, remaining,
        reason). A repeated client order id answers with that order and places nothing."""
        return await place(data, key_of(request))

    async def _market_of(
        account: str, order_id: int | None, cid: str | None, market: str | None
    ) -> str:
        if market is not None:
            gw.markets.get(market)
            return market
        path = f"/orders/{order_id}" if order_id is not None else f"/orders/by-client-id/{cid}"
        found = await gw.history(account, path, {})
        return str(found["market"])

    def _cancel_answer(order_id: int | None, events: list[Any]) -> ans.Cancelled:
        for ev in events:
            name = type(ev).__name__
            if name == "CancelRejected":
                raise refusal(str(ev.code), ev.message, "order_id")
            if name in ("Cancelled", "Filled", "Expired") and (
                order_id is None or ev.order_id == order_id
            ):
                params = gw.markets.params[ev.market]
                return ans.Cancelled(
                    order_id=ev.order_id,
                    client_order_id=ev.client_order_id,
                    market=ev.market,
                    status=name.lower(),
                    filled=params.size_scale.render(getattr(ev, "filled", 0) or 0),
                    reason=str(getattr(ev, "reason", "")) or None,
                )
        raise refusal("unknown_order", "the order is not open")

    @delete(
        "/v1/orders/{order_id:str}",
        status_code=200,
        opt=_priv("trade", bucket="orders"),
        responses=SIGNED_WRITE,
    )
    async def cancel_order(
        order_id: str, request: Request[Any, Any, Any], market: str | None = None
    ) -> ans.Cancelled:
        """Cancel one open order; the answer is its final state."""
        key = require_key(request)
        oid = order_id_param(order_id)
        where = await _market_of(key.account, oid, None, market)
        events = await gw.forwarded(
            key.account, rc.Cancel(market=where, account=key.account, order_id=oid)
        )
        return _cancel_answer(oid, events)

    @delete(
        "/v1/orders/by-client-id/{client_order_id:str}",
        status_code=200,
        opt=_priv("trade", bucket="orders"),
        responses=SIGNED_WRITE,
    )
    async def cancel_by_client_id(
        client_order_id: str, request: Request[Any, Any, Any], market: str | None = None
    ) -> ans.Cancelled:
        key = require_key(request)
        cid = client_id_param(client_order_id)
        where = await _market_of(key.account, None, cid, market)
        events = await gw.forwarded(
            key.account, rc.Cancel(market=where, account=key.account, client_order_id=cid)
        )
        return _cancel_answer(None, events)

    @delete("/v1/orders", status_code=200, opt=_priv("trade", 5, "orders"), responses=SIGNED_WRITE)
    async def cancel_all(
        request: Request[Any, Any, Any], market: str | None = None
    ) -> ans.CancelledAll:
        """Cancel every open order of the account (in one market if given)."""
        key = require_key(request)
        if market is not None:
            gw.markets.get(market)
        events = await gw.forwarded(key.account, rc.CancelAll(account=key.account, market=market))
        cancelled = [ev.order_id for ev in events if type(ev).__name__ == "Cancelled"]
        return ans.CancelledAll(cancelled=cancelled, market=market)

    async def _amend(
        account: str, order_id: int | None, cid: str | None, market: str | None, data: AmendRequest
    ) -> ans.Amended:
        if data.price is None and data.size is None:
            raise ApiError(400, "invalid_request", "give a new price, a new size or both", "price")
        where = await _market_of(account, order_id, cid, market)
        params = gw.markets.get(where)
        try:
            price = (
                0
                if data.price is None
                else to_steps(data.price, params.tick, "price", unit="ticks")
            )
            size = 0 if data.size is None else to_steps(data.size, params.lot, "size", unit="lots")
        except CommandError as e:
            raise ApiError(400, "invalid_request", e.message, e.field) from None
        cmd = rc.Amend(
            market=where,
            account=account,
            order_id=order_id,
            client_order_id=cid,
            price=price,
            size=size,
        )
        events = await gw.forwarded(account, cmd)
        for ev in events:
            name = type(ev).__name__
            if name == "AmendRejected":
                raise refusal(str(ev.code), ev.message, "order_id")
            if name == "Amended":
                return ans.typed(
                    ans.Amended,
                    {
                        "order_id": ev.order_id,
                        "client_order_id": ev.client_order_id,
                        "market": ev.market,
                        "status": "open",
                        "price": params.price_scale.render(ev.price),
                        "size": params.size_scale.render(ev.size),
                        "remaining": params.size_scale.render(ev.remaining),
                        "kept_priority": ev.kept_priority,
                    },
                )
        raise refusal("unknown_order", "the order is not open")

    @patch(
        "/v1/orders/{order_id:str}",
        status_code=200,
        opt=_priv("trade", bucket="orders"),
        responses=SIGNED_WRITE,
    )
    async def amend_order(
        order_id: str,
        data: AmendRequest,
        request: Request[Any, Any, Any],
        market: str | None = None,
    ) -> ans.Amended:
        """Amend an open order's price and/or size (priority kept only when the size goes
        down at the same price)."""
        key = require_key(request)
        return await _amend(key.account, order_id_param(order_id), None, market, data)

    @patch(
        "/v1/orders/by-client-id/{client_order_id:str}",
        status_code=200,
        opt=_priv("trade", bucket="orders"),
        responses=SIGNED_WRITE,
    )
    async def amend_by_client_id(
        client_order_id: str,
        data: AmendRequest,
        request: Request[Any, Any, Any],
        market: str | None = None,
    ) -> ans.Amended:
        key = require_key(request)
        return await _amend(key.account, None, client_id_param(client_order_id), market, data)

    # ------------------------------------------------------------------ reads

    def _query(request: Request[Any, Any, Any], *names: str) -> dict[str, Any]:
        q = request.query_params
        return {n: q.get(n) for n in names if q.get(n) is not None}

    @get("/v1/orders", opt=_priv("read"), responses=SIGNED_READ)
    async def list_orders(
        request: Request[Any, Any, Any],
        status: str | None = Parameter(default=None, pattern="^(open|closed|all)$"),
        market: str | None = None,
        start: int | None = Parameter(default=None, ge=0, le=MAX_INT),
        end: int | None = Parameter(default=None, ge=0, le=MAX_INT),
        cursor: str | None = None,
        limit: int | None = Parameter(default=None, ge=1, le=MAX_INT),
    ) -> ans.OrdersPage:
        """The account's orders, newest first; `next_cursor` fetches the next page."""
        key = require_key(request)
        return ans.typed(
            ans.OrdersPage,
            await gw.history(
                key.account,
                "/orders",
                _query(request, "status", "market", "start", "end", "cursor", "limit"),
            ),
        )

    @get("/v1/orders/{order_id:str}", opt=_priv("read"), responses=SIGNED_READ)
    async def get_order(order_id: str, request: Request[Any, Any, Any]) -> ans.OrderRow:
        key = require_key(request)
        return ans.typed(
            ans.OrderRow, await gw.history(key.account, f"/orders/{order_id_param(order_id)}", {})
        )

    @get("/v1/orders/by-client-id/{client_order_id:str}", opt=_priv("read"), responses=SIGNED_READ)
    async def get_order_by_client_id(
        client_order_id: str, request: Request[Any, Any, Any], market: str | None = None
    ) -> ans.OrderRow:
        key = require_key(request)
        cid = client_id_param(client_order_id)
        return ans.typed(
            ans.OrderRow,
            await gw.history(key.account, f"/orders/by-client-id/{cid}", {"market": market}),
        )

    @get("/v1/fills", opt=_priv("read"), responses=SIGNED_READ)
    async def fills(
        request: Request[Any, Any, Any],
        market: str | None = None,
        start: int | None = Parameter(default=None, ge=0, le=MAX_INT),
        end: int | None = Parameter(default=None, ge=0, le=MAX_INT),
        cursor: str | None = None,
        limit: int | None = Parameter(default=None, ge=1, le=MAX_INT),
    ) -> ans.FillsPage:
        key = require_key(request)
        return ans.typed(
            ans.FillsPage,
            await gw.history(
                key.account, "/fills", _query(request, "market", "start", "end", "cursor", "limit")
            ),
        )

    @get("/v1/balances", opt=_priv("read"), responses=SIGNED_READ)
    async def balances(request: Request[Any, Any, Any]) -> ans.Balances:
        """`{"balances": [{"asset", "available", "locked"}]}`, decimal strings."""
        key = require_key(request)
        got = await gw.history(key.account, "/balances", {})
        return ans.typed(ans.Balances, {"balances": got.get("balances", [])})

    @get("/v1/ledger", opt=_priv("read"), responses=SIGNED_READ)
    async def ledger(
        request: Request[Any, Any, Any],
        asset: str | None = None,
        cursor: str | None = None,
        limit: int | None = Parameter(default=None, ge=1, le=MAX_INT),
    ) -> ans.LedgerPage:
        key = require_key(request)
        return ans.typed(
            ans.LedgerPage,
            await gw.history(key.account, "/ledger", _query(request, "asset", "cursor", "limit")),
        )

    @get("/v1/deposits", opt=_priv("read"), responses=SIGNED_READ)
    async def deposits(
        request: Request[Any, Any, Any],
        cursor: str | None = None,
        limit: int | None = Parameter(default=None, ge=1, le=MAX_INT),
    ) -> ans.DepositsPage:
        key = require_key(request)
        return ans.typed(
            ans.DepositsPage,
            await gw.history(key.account, "/deposits", _query(request, "cursor", "limit")),
        )

    @get("/v1/withdrawals", opt=_priv("read"), responses=SIGNED_READ)
    async def withdrawals(
        request: Request[Any, Any, Any],
        cursor: str | None = None,
        limit: int | None = Parameter(default=None, ge=1, le=MAX_INT),
    ) -> ans.WithdrawalsPage:
        key = require_key(request)
        return ans.typed(
            ans.WithdrawalsPage,
            await gw.history(key.account, "/withdrawals", _query(request, "cursor", "limit")),
        )

    # ------------------------------------------------------------------ faucet

    @post("/v1/faucet", status_code=200, opt=_priv("trade", 5), responses=SIGNED_WRITE)
    async def faucet(data: FaucetRequest, request: Request[Any, Any, Any]) -> ans.Credited:
        """Test funds for the key's account (not in production), capped per call and per
        account and asset per UTC day."""
        key = require_key(request)
        return ans.typed(ans.Credited, await gw.credit(key.account, data))

    @websocket("/v1/ws", opt={})
    async def ws(socket: WebSocket[Any, Any, Any]) -> None:
        await gw.feed.serve(socket)

    return [
        server_time,
        eip712,
        markets,
        assets,
        trades,
        depth,
        ticker,
        book,
        candles,
        tickers,
        register_key,
        list_keys,
        revoke_key,
        revoke_key_by_wallet,
        place_order,
        cancel_order,
        cancel_by_client_id,
        cancel_all,
        amend_order,
        amend_by_client_id,
        list_orders,
        get_order,
        get_order_by_client_id,
        fills,
        balances,
        ledger,
        deposits,
        withdrawals,
        faucet,
        ws,
    ]

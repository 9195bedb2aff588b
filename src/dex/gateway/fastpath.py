"""`POST /v1/orders` and `POST /api/v3/order` answered in front of the web framework, every
check kept.

Why: placing orders is the trading API's hottest route (and the Binance adapter's), and
Litestar's own work per request (routing, the handler's kwargs model, a copy of the handler
for each guard, the response object, the hooks) cost more than checking, placing and
answering the order together. This ASGI app sits in front of the gateway's Litestar app and
answers the common request itself:

- with the same checks in the same order: the body (415, UTF-8, nesting, JSON), the key
  (`Guard.admit`: every 401/403, or the wallet path), the rate limit (429 with its headers),
  then the order itself through the very function the Litestar route calls
  (`dex.gateway.routes.order_placer`); and
- with the same answers: the outcome's JSON, `{"error": {"code", "message", "field"}}` with
  the error's status and headers, the rate-limit headers of the bucket charged and the
  request id (`X-Request-Id`, also bound in the log context while the order is handled);
  anything unexpected is a logged 500 `internal_error`.

The Binance-compatible `POST /api/v3/order` is answered the same way, by the very function
its Litestar route calls (`dex.gateway.binance.rest.Rest.new_order`: parameters from the
query and the form body, Binance's signature and key check, the `orders` bucket, the
translation to a native order and back), with Binance's `{"code", "msg"}` refusals (a native
refusal through `from_api`, as the route's handlers do) and a logged 500 with code -1000. Its
signed parameters may sit in the query string, so a query string does not hand it over.

Everything else goes to Litestar unchanged, so it keeps answering it exactly as before: other
routes and methods, a query string on `/v1/orders`, a browser request (`Origin`: CORS), a
body with no `Content-Length` or above the size limit (413), repeated headers, and any body
that does not decode strictly as an `OrderRequest` (Litestar's 400 naming the field, after
its guard ran: the fast path charged nothing for it). Such a request is handed over with the
body it already read replayed, so a request is checked, charged and placed once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

import msgspec
import structlog

from dex.gateway.auth import Guard, rate_headers
from dex.gateway.binance.common import KEY_HEADER, BinanceError, from_api, unknown_error
from dex.gateway.models import OrderRequest
from dex.gateway.routes import PLACE_ORDER_OPT, PlaceOrder
from dex.runtime.http import (
    REQUEST_ID_HEADER,
    ApiError,
    error_body,
    log_unhandled,
    request_id,
)
from dex.runtime.logging import get_logger

ORDERS_PATH = "/v1/orders"
BINANCE_ORDER_PATH = "/api/v3/order"
_JSON = (b"content-type", b"application/json")
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(OrderRequest)
_INTERNAL = _ENCODER.encode(error_body("internal_error", "internal error"))
_BINANCE_INTERNAL = _ENCODER.encode(unknown_error().body())

ASGIApp = Any  # (scope, receive, send) -> awaitable, as Litestar and uvicorn call it
Answer = tuple[int, bytes, Mapping[str, str]]  # status, JSON body, extra headers


class BinanceOrders(Protocol):
    """What answers `POST /api/v3/order` (`dex.gateway.binance.rest.Rest`)."""

    async def new_order(
        self, scope: Any, content_type: str, api_key: str | None, body: bytes
    ) -> dict[str, Any]: ...


class OrderFastPath:
    """The ASGI app to serve: the order routes here, everything else `app` (see the module
    docstring); no `binance`: `/api/v3/order` goes to `app` too. `served` and
    `handed_over` count what went where."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        place: PlaceOrder,
        guard: Guard,
        max_body_bytes: int | None,
        binance: BinanceOrders | None = None,
        service: str = "gateway",
    ) -> None:
        self.app = app
        self.place = place
        self.guard = guard
        self.max_body_bytes = max_body_bytes
        self.binance = binance
        self.log = get_logger(service=service)
        self.served = 0
        self.handed_over = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        native = path == ORDERS_PATH and not scope.get("query_string")
        if not native and (path != BINANCE_ORDER_PATH or self.binance is None):
            await self.app(scope, receive, send)
            return
        headers = self._headers(scope)
        if headers is None:
            self.handed_over += 1
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:  # the client went away before its body arrived: nothing to answer
            return
        if not native:
            self.served += 1
            await self._answer(scope, send, self._binance(scope, headers, body), _BINANCE_INTERNAL)
            return
        try:
            data = _DECODER.decode(body)
        except (msgspec.DecodeError, ValueError, RecursionError):  # invalid UTF-8 included
            self.handed_over += 1
            await self.app(scope, _replaying(body, receive), send)
            return
        self.served += 1
        await self._answer(scope, send, self._native(scope, headers, body, data), _INTERNAL)

    def _headers(self, scope: Any) -> dict[str, str] | None:
        """The request's headers by (lower-case) name, or None for a request the fast path
        leaves to Litestar: a name given twice, a browser's `Origin`, no `Content-Length`
        or one above the body limit."""
        raw = scope["headers"]
        headers = {bytes(k).lower().decode("latin-1"): bytes(v).decode("latin-1") for k, v in raw}
        if len(headers) != len(raw) or "origin" in headers:
            return None
        length = headers.get("content-length", "")
        if not length.isascii() or not length.isdigit():
            return None
        if self.max_body_bytes is not None and int(length) > self.max_body_bytes:
            return None
        return headers

    async def _native(
        self, scope: Any, headers: Mapping[str, str], body: bytes, data: OrderRequest
    ) -> Answer:
        try:
            key = await self.guard.admit(
                scope, headers, "POST", PLACE_ORDER_OPT, body, well_formed=True
            )
            return 200, _ENCODER.encode(await self.place(data, key)), {}
        except ApiError as e:
            return e.status, _ENCODER.encode(error_body(e.code, e.message, e.field)), e.headers

    async def _binance(self, scope: Any, headers: Mapping[str, str], body: bytes) -> Answer:
        assert self.binance is not None
        try:
            out = await self.binance.new_order(
                scope, headers.get("content-type", ""), headers.get(KEY_HEADER), body
            )
            return 200, _ENCODER.encode(out), {}
        except BinanceError as e:
            refusal = e
        except ApiError as e:
            refusal = from_api(e)
        return refusal.status, _ENCODER.encode(refusal.body()), refusal.headers

    async def _answer(
        self, scope: Any, send: Any, work: Awaitable[Answer], internal: bytes
    ) -> None:
        """Send what `work` answers, with the request id (bound in the log context while it
        runs) and the rate-limit headers; anything it raises is a logged 500 `internal`."""
        rid = request_id(scope)
        with structlog.contextvars.bound_contextvars(request_id=rid):
            try:
                status, payload, extra = await work
            except Exception as e:
                log_unhandled(self.log, "POST", scope["path"], scope, e)
                status, payload, extra = 500, internal, {}
        out = [
            _JSON,
            (b"content-length", str(len(payload)).encode()),
            (REQUEST_ID_HEADER.encode(), rid.encode()),
        ]
        named = {REQUEST_ID_HEADER}
        for name, value in (*extra.items(), *rate_headers(scope).items()):
            low = name.lower()
            if low not in named:
                named.add(low)
                out.append((low.encode(), value.encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": payload, "more_body": False})


async def _read_body(receive: Any) -> bytes | None:
    """The whole request body (its length was checked), or None if the client left."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Any) -> Any:
    """A `receive` that gives `body` (already read) first, then what `receive` gives."""
    given = False

    async def replay() -> Any:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

"""`POST /v1/orders` answered in front of the web framework, every check kept.

Why: placing orders is the trading API's hottest route, and Litestar's own work per request
(routing, the handler's kwargs model, a copy of the handler for each guard, the response
object, the hooks) cost more than checking, placing and answering the order together. This
ASGI app sits in front of the gateway's Litestar app and answers the common request itself:

- with the same checks in the same order: the body (415, UTF-8, nesting, JSON), the key
  (`Guard.admit`: every 401/403, or the wallet path), the rate limit (429 with its headers),
  then the order itself through the very function the Litestar route calls
  (`dex.gateway.routes.order_placer`); and
- with the same answers: the outcome's JSON, `{"error": {"code", "message", "field"}}` with
  the error's status and headers, the rate-limit headers of the bucket charged and the
  request id (`X-Request-Id`, also bound in the log context while the order is handled);
  anything unexpected is a logged 500 `internal_error`.

Everything else goes to Litestar unchanged, so it keeps answering it exactly as before: other
routes and methods, a query string, a browser request (`Origin`: CORS), a body with no
`Content-Length` or above the size limit (413), repeated headers, and any body that does
not decode strictly as an `OrderRequest` (Litestar's 400 naming the field, after its guard
ran: the fast path charged nothing for it). Such a request is handed over with the body it
already read replayed, so a request is checked, charged and placed once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import structlog

from dex.gateway.auth import Guard, rate_headers
from dex.gateway.models import OrderRequest
from dex.gateway.routes import PLACE_ORDER_OPT, PlaceOrder
from dex.runtime.http import REQUEST_ID_HEADER, ApiError, error_body, request_id
from dex.runtime.logging import get_logger

ORDERS_PATH = "/v1/orders"
_JSON = (b"content-type", b"application/json")
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(OrderRequest)
_INTERNAL = _ENCODER.encode(error_body("internal_error", "internal error"))

ASGIApp = Any  # (scope, receive, send) -> awaitable, as Litestar and uvicorn call it


class OrderFastPath:
    """The ASGI app to serve: `POST /v1/orders` here, everything else `app` (see the module
    docstring). `served` and `handed_over` count what went where."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        place: PlaceOrder,
        guard: Guard,
        max_body_bytes: int | None,
        service: str = "gateway",
    ) -> None:
        self.app = app
        self.place = place
        self.guard = guard
        self.max_body_bytes = max_body_bytes
        self.log = get_logger(service=service)
        self.served = 0
        self.handed_over = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != ORDERS_PATH
            or scope.get("query_string")
        ):
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
        try:
            data = _DECODER.decode(body)
        except (msgspec.DecodeError, ValueError, RecursionError):  # invalid UTF-8 included
            self.handed_over += 1
            await self.app(scope, _replaying(body, receive), send)
            return
        self.served += 1
        await self._answer(scope, send, headers, body, data)

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

    async def _answer(
        self, scope: Any, send: Any, headers: Mapping[str, str], body: bytes, data: OrderRequest
    ) -> None:
        rid = request_id(scope)
        extra: Mapping[str, str] = {}
        with structlog.contextvars.bound_contextvars(request_id=rid):
            try:
                key = await self.guard.admit(
                    scope, headers, "POST", PLACE_ORDER_OPT, body, well_formed=True
                )
                status, payload = 200, _ENCODER.encode(await self.place(data, key))
            except ApiError as e:
                status = e.status
                payload = _ENCODER.encode(error_body(e.code, e.message, e.field))
                extra = e.headers
            except Exception as e:
                self.log.error(
                    "unhandled exception",
                    method="POST",
                    path=scope["path"],
                    request_id=rid,
                    exc_info=e,
                )
                status, payload = 500, _INTERNAL
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

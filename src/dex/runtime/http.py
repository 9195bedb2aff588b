"""The HTTP face every service shares: probes, metrics, one error shape, admin guard, ids.

Owns `build_app`, which returns a Litestar app serving `GET /healthz`, `GET /readyz` and
`GET /metrics` next to the service's own handlers, and the rules every response follows:

- Every error is `{"error": {"code", "message", "field"}}`: `ApiError` raised by a handler or
  guard gives its own status and code; Litestar's validation errors give 400
  `invalid_request` naming the field when one can be found; 404 `not_found`, 405
  `method_not_allowed`; any other exception gives 500 `internal_error` with a generic message
  and is logged with its traceback, never echoed.
- Admin handlers (`opt={"admin": True}` or `guards=[admin_guard]`) need
  `Authorization: Bearer <admin_token>`; an empty configured token refuses every request.
- Each request carries a request id: `X-Request-Id` when the client sent a sane one, else a
  new one. It is bound in structlog's contextvars while the handler runs and echoed in the
  `X-Request-Id` response header (404 and 405 included, which never reach the middleware).

`Health` and `HttpServer` live in `dex.runtime.health` and `dex.runtime.server`; they are
re-exported here.
"""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
import swagger_ui_bundle  # type: ignore[import-untyped]
from litestar import Litestar, Request, Response, get
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from dex import __version__
from dex.risk.address import INVALID_ADDRESS, canonical_address
from dex.runtime.health import Health
from dex.runtime.logging import get_logger
from dex.runtime.metrics import CONTENT_TYPE, ServiceMetrics, render_all
from dex.runtime.server import HttpServer

__all__ = [
    "ApiError",
    "Health",
    "HttpServer",
    "admin_guard",
    "build_app",
    "error_body",
    "request_id",
    "require_admin",
]

DOCS_ASSETS = "/docs/assets"
API_DESCRIPTION = (
    'Every refusal is `{"error": {"code", "message", "field"}}` with the status '
    "listed for the route; amounts are decimal strings at the asset's or market's precision."
)
REQUEST_ID_HEADER = "x-request-id"
_METRICS_MEDIA_TYPE = CONTENT_TYPE.removesuffix("; charset=utf-8")
_REQUEST_ID_KEY = "dex_request_id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}
_FIELD_IN_MESSAGE = (
    re.compile(r"at `\$\.([^`]+)`"),  # msgspec: "Expected `int`, got `str` - at `$.price`"
    re.compile(r"field `([^`]+)`"),  # msgspec: "Object missing required field `qty`"
    re.compile(r"parameter '([^']+)'"),  # litestar: "Missing required query parameter 'limit'"
)


class ApiError(Exception):
    """Raise from a handler or guard to answer `status` with the standard error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def account_param(raw: str, field: str = "account") -> str:
    """The canonical (lower-case) form of a wallet address taken from a request; a 400
    `invalid_address` naming `field` otherwise. The one wording of that error in the API."""
    account = canonical_address(raw)
    if account is None:
        raise ApiError(400, "invalid_address", INVALID_ADDRESS, field)
    return account


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The one error shape: `{"error": {"code", "message", "field"}}`."""
    return {"error": {"code": code, "message": message, "field": field}}


def build_app(
    service: str,
    health: Health,
    metrics: ServiceMetrics | Sequence[ServiceMetrics],
    *,
    route_handlers: Sequence[object] = (),
    admin_token: str = "",
    openapi: bool = False,
    guards: Sequence[Any] = (),
    before_send: Sequence[Any] = (),
    cors_origins: str = "",
    max_body_bytes: int | None = None,
) -> Litestar:
    """The service's Litestar app: probes, `/metrics`, `route_handlers`, error rules.

    `metrics` may be several services' metrics (embedded mode): `/metrics` serves them all.
    With `openapi`, the OpenAPI document is served at `/docs/openapi.json` and rendered at
    `/docs` by Swagger UI from assets installed with the package (no CDN). `guards` and
    `before_send` hooks run after the shared ones; `cors_origins` is a comma list of browser
    origins (`*`: any); `max_body_bytes` bounds request bodies (413 above it).
    """
    registries = [metrics] if isinstance(metrics, ServiceMetrics) else list(metrics)

    @get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @get("/readyz", include_in_schema=False)
    async def readyz() -> Response[dict[str, Any]]:
        degraded = health.degraded()
        extra = {"degraded": degraded} if degraded else {}
        if health.ready:
            return Response({"ready": True, **extra})
        return Response({"ready": False, "reasons": health.reasons(), **extra}, status_code=503)

    @get("/metrics", include_in_schema=False)
    async def metrics_text() -> Response[bytes]:
        # Litestar appends the charset to text/* media types itself.
        return Response(render_all(registries), media_type=_METRICS_MEDIA_TYPE)

    log = get_logger(service=service)

    def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        log_unhandled(log, request.method, request.url.path, request.scope, exc)
        return _error_response(500, error_body("internal_error", "internal error"))

    def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
        if exc.status_code == 500:
            return internal_error(request, exc)
        if isinstance(exc, ValidationException) or exc.status_code == 400:
            body = _invalid_request(exc)
        else:
            code = _CODES.get(exc.status_code, f"http_{exc.status_code}")
            body = error_body(code, exc.detail)
        return _error_response(exc.status_code, body, exc.headers)

    handlers: list[Any] = [healthz, readyz, metrics_text, *route_handlers]
    if openapi:
        handlers.append(
            create_static_files_router(
                path=DOCS_ASSETS, directories=[swagger_ui_bundle.swagger_ui_path], opt={}
            )
        )
    origins = [o.strip() for o in cors_origins.split(",") if o.strip()]
    return Litestar(
        route_handlers=handlers,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
        guards=[_admin_opt_guard, *guards],
        middleware=[_RequestIdMiddleware()],
        before_send=[_echo_request_id, *before_send],
        cors_config=(
            CORSConfig(
                allow_origins=origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["content-type", "dex-api-key", "dex-timestamp", "dex-signature"],
                expose_headers=[
                    "x-request-id",
                    "x-ratelimit-limit",
                    "x-ratelimit-remaining",
                    "x-ratelimit-reset",
                    "retry-after",
                ],
            )
            if origins
            else None
        ),
        request_max_body_size=max_body_bytes,
        state=State({"admin_token": admin_token, "service": service}),
        openapi_config=(
            OpenAPIConfig(
                title=f"dex {service}",
                version=__version__,
                path="/docs",
                description=API_DESCRIPTION,
                render_plugins=[
                    SwaggerRenderPlugin(
                        path="/",
                        js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                        css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                        standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
                    )
                ],
            )
            if openapi
            else None
        ),
        logging_config=None,
        debug=False,
    )


def require_admin(connection: ASGIConnection[Any, Any, Any, Any], token: str) -> None:
    """Raise 401 `unauthorized` unless the request bears `Authorization: Bearer <token>`."""
    if not token:
        raise _unauthorized("admin endpoints are disabled: no admin token is configured")
    scheme, _, given = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise _unauthorized("admin endpoints need an Authorization: Bearer token")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise _unauthorized("the admin token is not valid")


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Litestar guard: the app's configured admin token is required (see `require_admin`).
    Async: Litestar runs a sync guard on a worker thread, a thread hop on every request."""
    require_admin(connection, connection.app.state.get("admin_token", ""))


def log_unhandled(log: Any, method: str, path: str, scope: Scope, exc: BaseException) -> None:
    """Log a failure of ours while answering a request (its detail goes to the log only; the
    client gets a generic 500): every route's last resort logs it the same way."""
    log.error(
        "unhandled exception", method=method, path=path, request_id=request_id(scope), exc_info=exc
    )


def request_id(scope: Scope) -> str:
    """The request's id: kept in the scope, taken from `X-Request-Id` if sane, else new."""
    state = scope.setdefault("state", {})
    known = state.get(_REQUEST_ID_KEY)
    if known is not None:
        return str(known)
    given = _header(scope, REQUEST_ID_HEADER.encode())
    found = given if given is not None and _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    state[_REQUEST_ID_KEY] = found
    return found


async def _admin_opt_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    if handler.opt.get("admin"):
        await admin_guard(connection, handler)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return _error_response(exc.status, error_body(exc.code, exc.message, exc.field), exc.headers)


def _error_response(
    status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> Response[Any]:
    return Response(body, status_code=status, headers=dict(headers or {}))


def _invalid_request(exc: HTTPException) -> dict[str, Any]:
    """400 body: the first problem Litestar found, naming its field when it can be found."""
    message = exc.detail
    field: str | None = None
    extra = exc.extra
    if isinstance(extra, list) and extra and isinstance(extra[0], Mapping):
        first = extra[0]
        message = str(first.get("message") or message)
        key = first.get("key")
        if isinstance(key, str) and key and key != "data":  # "data" means the whole body
            field = key
    if field is None:
        field = next((m.group(1) for p in _FIELD_IN_MESSAGE if (m := p.search(message))), None)
    if field is not None and field not in message:
        message = f"{field}: {message}"
    return error_body("invalid_request", message, field)


class _RequestIdMiddleware(ASGIMiddleware):
    """Bind the request id in structlog's contextvars while the handler runs."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        with structlog.contextvars.bound_contextvars(request_id=request_id(scope)):
            await next_app(scope, receive, send)


async def _echo_request_id(message: Message, scope: Scope) -> None:
    """before_send hook: every HTTP response carries the request id. Async: Litestar runs a
    sync hook on a worker thread, i.e. a new thread for every message sent, WebSocket frames
    included."""
    if message["type"] != "http.response.start":
        return
    headers = list(message.get("headers", []))
    if not any(name.lower() == REQUEST_ID_HEADER.encode() for name, _ in headers):
        headers.append((REQUEST_ID_HEADER.encode(), request_id(scope).encode()))
        message["headers"] = headers


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None

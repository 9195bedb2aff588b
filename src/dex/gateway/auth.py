"""Who is asking, and how often: the gateway's guard on every public and private route.

Owns the order of the checks a request meets before its handler runs, each refusal with its
own code and nothing changed:

1. Body: a body on a POST / PATCH / DELETE must be `application/json` (415), at most
   `DEX_MAX_BODY_BYTES` (413, by Litestar's `request_max_body_size`), valid UTF-8 (400) and
   JSON nested at most `MAX_DEPTH` deep and well-formed JSON (400 `invalid_json`): checked on
   the raw bytes before a route's model parses them.
2. Authentication (routes with `opt["auth"]` = the permission they need): the headers
   `DEX-API-KEY`, `DEX-TIMESTAMP`, `DEX-SIGNATURE` over `timestamp + METHOD + path_with_query
   + body`, checked by the key ring (`dex.gateway.keys.KeyRing.authenticate`: 401 codes, 403
   `permission_denied`). A route with `opt["wallet"]` (placing an order) also takes a request
   with none of the three headers: its handler then checks the wallet's `Order` signature.
3. Rate limit: the route's bucket (`opt["bucket"]`: public per client IP, private and orders
   per account) is charged `opt["weight"]` tokens; over the limit is 429 `rate_limited` with
   `Retry-After`. Every answer carries `X-RateLimit-Limit/-Remaining/-Reset` of the last
   bucket charged (a `before_send` hook adds them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Message, Scope

from dex.gateway.keys import AuthError, KeyEntry, KeyRing
from dex.gateway.ratelimit import Bucket, RateLimiter
from dex.runtime.http import ApiError

KEY_HEADER = "dex-api-key"
TIMESTAMP_HEADER = "dex-timestamp"
SIGNATURE_HEADER = "dex-signature"
AUTH_HEADERS = (KEY_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
MAX_DEPTH = 32  # JSON nesting a body may have; none of ours needs more than 3
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_STATE_KEY = "dex_key"
_LIMIT_KEY = "dex_rate_headers"


def json_depth_ok(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether no JSON container in `body` nests deeper than `limit` (strings skipped), in
    one pass over the bytes: a 100,000-deep body is refused before a parser recurses.

    A body with at most `limit` opening brackets in all (every order is one) cannot nest
    deeper: that is counted in C, and only other bodies are walked byte by byte."""
    if body.count(b"{") + body.count(b"[") <= limit:
        return True
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def path_with_query(scope: Scope) -> str:
    """The path and query exactly as the client sent them (what it signed)."""
    raw = scope.get("raw_path") or scope["path"].encode()
    path = bytes(raw).decode("latin-1")
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    return f"{path}?{query}" if query else path


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    return scope_client_ip(connection.scope)


def scope_client_ip(scope: Scope) -> str:
    """The client's IP as the server saw it ("unknown" when the server does not say)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def key_of(connection: ASGIConnection[Any, Any, Any, Any]) -> KeyEntry | None:
    """The key that signed the request, once the guard has passed it (None: wallet path)."""
    entry: KeyEntry | None = connection.scope.get("state", {}).get(_STATE_KEY)
    return entry


def require_key(connection: ASGIConnection[Any, Any, Any, Any]) -> KeyEntry:
    entry = key_of(connection)
    if entry is None:
        raise ApiError(401, "missing_credentials", "this route needs API-key headers")
    return entry


class Guard:
    """The guard every gateway route runs (see the module docstring)."""

    def __init__(
        self,
        keys: KeyRing,
        limiter: RateLimiter,
        buckets: dict[str, Bucket],
        *,
        recv_window_ms: int,
        now_ms: Any,
    ) -> None:
        self.keys = keys
        self.limiter = limiter
        self.buckets = buckets
        self.recv_window_ms = recv_window_ms
        self.now_ms = now_ms

    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        opt = handler.opt
        if "bucket" not in opt:  # probes, metrics, docs: not the trading API
            return
        body = b""
        method = str(connection.scope.get("method", "GET"))
        if method in _BODY_METHODS:
            body = await connection.body()  # type: ignore[attr-defined]
        await self.admit(connection.scope, connection.headers, method, opt, body)

    async def admit(
        self,
        scope: Scope,
        headers: Mapping[str, str],
        method: str,
        opt: Mapping[str, Any],
        body: bytes,
        *,
        well_formed: bool = False,
    ) -> KeyEntry | None:
        """Every check of the module docstring for one request to a route with `opt`, in
        that order: the key that signed it (None: a public route, or a wallet-signed order),
        kept in the scope for the handler. `headers` by lower-case name. `well_formed`: the
        caller has already parsed `body` as JSON (the JSON check then needs no second
        parse). Shared by the Litestar guard and the order route's fast path
        (`dex.gateway.fastpath`), so that both check the same things the same way."""
        if method in _BODY_METHODS:
            check_body(headers.get("content-type", ""), body, well_formed=well_formed)
        permission = opt.get("auth")
        entry: KeyEntry | None = None
        if permission is not None:
            given = [headers.get(h) for h in AUTH_HEADERS]
            if not opt.get("wallet") or any(given):
                try:
                    entry = self.keys.authenticate(
                        given[0],
                        given[1],
                        given[2],
                        method,
                        path_with_query(scope),
                        body,
                        self.now_ms(),
                        self.recv_window_ms,
                        permission,
                    )
                except AuthError as e:
                    raise ApiError(e.status, e.code, e.message) from None
                scope.setdefault("state", {})[_STATE_KEY] = entry
        bucket = self.buckets[opt["bucket"]]
        # a wallet-signed order (no key) is charged to its client IP first
        who = entry.account if entry is not None else scope_client_ip(scope)
        await self.charge(scope, bucket, who, int(opt.get("weight", 1)))
        return entry

    async def charge(self, scope: Scope, bucket: Bucket, who: str, weight: int) -> None:
        try:
            decision = await self.limiter.take(bucket, f"{bucket.name}:{who}", weight)
        except Exception as e:
            raise ApiError(
                503, "unavailable", f"rate limiter unreachable: {type(e).__name__}"
            ) from None
        headers = decision.headers()
        scope.setdefault("state", {})[_LIMIT_KEY] = headers
        if not decision.allowed:
            raise ApiError(
                429,
                "rate_limited",
                f"over the {bucket.name} rate limit ({bucket.capacity} requests, "
                f"{bucket.refill} more each second); retry in {decision.retry_after_s} s",
                headers=headers,
            )


def check_body(content_type: str, body: bytes, *, well_formed: bool = False) -> None:
    """A request body's checks (1. of the module docstring); an empty body passes.
    `well_formed`: already parsed as JSON by the caller (no second parse)."""
    if not body:
        return
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            "a request body must be application/json",
            "content-type",
        )
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(
            400, "invalid_json", f"the body is not valid UTF-8 (byte {e.start})"
        ) from None
    if not json_depth_ok(body):
        raise ApiError(400, "invalid_json", f"the body nests deeper than {MAX_DEPTH} levels")
    if well_formed:
        return
    try:  # one C pass, so that malformed JSON has one code whichever route it reaches
        msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {e}") from None


def rate_headers(scope: Scope) -> dict[str, str]:
    """The rate-limit headers of the bucket charged for this request (none: not charged)."""
    found: dict[str, str] = scope.get("state", {}).get(_LIMIT_KEY) or {}
    return found


async def add_rate_headers(message: Message, scope: Scope) -> None:
    """before_send hook: the rate-limit headers of the bucket charged for this request."""
    if message["type"] != "http.response.start":
        return
    extra = rate_headers(scope)
    if not extra:
        return
    headers = list(message.get("headers", []))
    present = {bytes(name).lower() for name, _ in headers}
    for name, value in extra.items():
        if name.lower().encode() not in present:
            headers.append((name.lower().encode(), value.encode()))
    message["headers"] = headers

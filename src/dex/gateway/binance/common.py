"""What every Binance-compatible route shares: symbols, parameters, errors and signing.

Owns the translation at the edge and nothing else: a Binance symbol is a market id without
the dash (`ETHUSDC` is `ETH-USDC`); parameters come from the query string and (POST/PUT) an
`application/x-www-form-urlencoded` body, each name at most once; every refusal is
`{"code", "msg"}` (and `data` where Binance gives it) with Binance's code and HTTP status
(`BinanceError`, and `from_api` for a refusal of the native path, which keeps enforcing
every rule). Signing is Binance's:
`X-MBX-APIKEY`, `timestamp`, `recvWindow` (default 5000, at most 60000) and `signature`
over the raw query string followed by the raw body with `signature=...` cut out, checked
against the gateway's key ring (HMAC hex or Ed25519 base64 by the key's type).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote

from dex.gateway.keys import KeyEntry, KeyRing
from dex.runtime.http import ApiError

KEY_HEADER = "x-mbx-apikey"
DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60_000
AHEAD_MS = 1000  # a timestamp may be this far ahead of our clock (Binance's rule)
_SIGNATURE = re.compile(r"(?:^|&)signature=([^&]*)")
_DIGITS = re.compile(r"[0-9]{1,19}")

BAD_KEY = "Invalid API-key, IP, or permissions for action."
BAD_SIGNATURE = "Signature for this request is not valid."
WOULD_TAKE = "Order would immediately match and take."
NO_FUNDS = "Account has insufficient balance for requested action."
NO_ORDER = "Order does not exist."
UNKNOWN_ORDER = "Unknown order sent."

STATUS = {
    "pending": "NEW",
    "open": "NEW",
    "untriggered": "NEW",
    "partially_filled": "PARTIALLY_FILLED",
    "filled": "FILLED",
    "cancelled": "CANCELED",
    "expired": "EXPIRED",
    "rejected": "REJECTED",
}


# cancels by the engine rather than the owner: Binance calls them expired
_EXPIRED_REASONS = frozenset({"ioc", "fok", "no_liquidity", "price_band", "price_protection"})


def status_of(status: str, reason: str | None = None) -> str:
    """Binance's status for a native one (an IOC / FOK remainder is EXPIRED there)."""
    if status == "cancelled" and reason in _EXPIRED_REASONS:
        return "EXPIRED"
    if status == "cancelled" and reason == "stp":
        return "EXPIRED_IN_MATCH"
    return STATUS.get(status, "NEW")


class BinanceError(Exception):
    """A refusal as Binance answers it: `{"code", "msg"}` with an HTTP status."""

    def __init__(
        self,
        code: int,
        msg: str,
        status: int = 400,
        headers: dict[str, str] | None = None,
        *,
        data: dict[str, Any] | None = None,
    ):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}
        self.data = data  # what a partial refusal carries (cancelReplace's two results)

    def body(self) -> dict[str, Any]:
        if self.data is not None:
            return {"code": self.code, "msg": self.msg, "data": self.data}
        return {"code": self.code, "msg": self.msg}


def unknown_error() -> BinanceError:
    """The answer to a failure of ours (a bug; logged where it is caught): Binance's -1000,
    with no detail a client may not see."""
    return BinanceError(-1000, "An unknown error occurred while processing the request.", 500)


_FILTER = {"price": "PRICE_FILTER", "trigger_price": "PRICE_FILTER"}


def from_api(e: ApiError, *, cancel: bool = False) -> BinanceError:
    """The Binance refusal for a refusal of the native path (the same rule, Binance's code)."""
    code, field = e.code, e.field
    if e.status == 429:
        return BinanceError(-1003, f"Too many requests; {e.message}", 429, e.headers)
    if code in ("unknown_key", "key_revoked", "key_expired", "permission_denied"):
        return BinanceError(-2015, BAD_KEY, 401)
    if code == "missing_credentials":
        return BinanceError(-2014, "API-key format invalid.", 401)
    if code == "bad_signature":
        return BinanceError(-1022, BAD_SIGNATURE, 401)
    if code == "timestamp_out_of_window":
        return BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
    if code == "unknown_market":
        return BinanceError(-1121, "Invalid symbol.")
    if code == "unknown_order":
        return BinanceError(-2011, UNKNOWN_ORDER) if cancel else BinanceError(-2013, NO_ORDER)
    if code == "insufficient_funds":
        return BinanceError(-2010, NO_FUNDS)
    if code == "outcome_unknown":
        return BinanceError(
            -1007,
            "Timeout waiting for response from backend server. Send status unknown; "
            "execution status unknown.",
            504,
        )
    if e.status == 503:
        return BinanceError(
            -1001, f"Internal error; unable to process your request. {e.message}", 503
        )
    if code == "invalid_request":
        if field in _FILTER:
            return BinanceError(-1013, f"Filter failure: {_FILTER[field]} ({e.message})")
        if field in ("size", "quote_size", "display_size"):
            return BinanceError(-1013, f"Filter failure: LOT_SIZE ({e.message})")
        return BinanceError(-1100, f"Illegal characters found in a parameter: {e.message}")
    return BinanceError(-2011 if cancel else -2010, e.message)


def reject(reason: str | None, message: str | None) -> BinanceError:
    """The refusal for an order the engine rejected (a 200 outcome natively)."""
    if reason == "post_only_would_take":
        return BinanceError(-2010, WOULD_TAKE)
    if reason == "below_min_notional":
        return BinanceError(-1013, "Filter failure: NOTIONAL")
    if reason == "below_min_size":
        return BinanceError(-1013, "Filter failure: LOT_SIZE")
    if reason == "outside_price_band":
        return BinanceError(-1013, "Filter failure: PERCENT_PRICE_BY_SIDE")
    return BinanceError(-2010, message or reason or "Order rejected.")


# ---------------------------------------------------------------------- symbols


def symbol_of(market: str) -> str:
    return market.replace("-", "")


def market_of(markets: Any, symbol: Any) -> str:
    """The market id of a Binance symbol (any case), or -1121."""
    if not isinstance(symbol, str) or not symbol:
        raise BinanceError(
            -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    wanted = symbol.upper()
    for market in markets.params:
        if symbol_of(market) == wanted:
            return str(market)
    raise BinanceError(-1121, "Invalid symbol.")


# ---------------------------------------------------------------------- parameters


def ticker_24hr(t: dict[str, Any], zero_price: str, zero_size: str, now_ms: int) -> dict[str, Any]:
    """Binance's 24-hour ticker (REST `ticker/24hr` names) from a native ticker; `zero_price`
    and `zero_size` are "0" at the market's precision. The WebSocket `@ticker`,
    `@miniTicker` and `@bookTicker` streams take their fields from it, so both agree."""
    zp, zs = zero_price, zero_size
    last = t.get("last") or zp
    open_ = t.get("open") or last
    change = Decimal(last) - Decimal(open_)
    pct = change / Decimal(open_) * 100 if Decimal(open_) else Decimal(0)
    vol, qvol = Decimal(t["base_volume"]), Decimal(t["quote_volume"])
    return {
        "symbol": symbol_of(t["market"]),
        "priceChange": t.get("change") or zp,
        "priceChangePercent": format(pct.quantize(Decimal("0.001")), "f"),
        "weightedAvgPrice": format((qvol / vol).quantize(Decimal(zp)), "f") if vol else zp,
        "prevClosePrice": open_,
        "lastPrice": last,
        "lastQty": zs,
        "bidPrice": t.get("best_bid") or zp,
        "bidQty": t.get("best_bid_size") or zs,
        "askPrice": t.get("best_ask") or zp,
        "askQty": t.get("best_ask_size") or zs,
        "openPrice": open_,
        "highPrice": t.get("high") or last,
        "lowPrice": t.get("low") or last,
        "volume": t["base_volume"],
        "quoteVolume": t["quote_volume"],
        "openTime": now_ms - 86_400_000,
        "closeTime": now_ms,
        "firstId": -1,
        "lastId": -1,
        "count": t["trades"],
    }


def parse_params(query: bytes, body: bytes, content_type: str) -> dict[str, str]:
    """The query's and the form body's parameters (each name once, else -1101)."""
    try:
        pairs = form_pairs(query.decode("utf-8"))
        if body:
            media = content_type.split(";")[0].strip().lower()
            if media not in ("application/x-www-form-urlencoded", ""):
                raise BinanceError(
                    -1100, "A request body must be application/x-www-form-urlencoded.", 415
                )
            pairs += form_pairs(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BinanceError(-1100, "Illegal characters found in the request (not UTF-8).") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise BinanceError(-1101, f"Duplicate values for parameter '{name}'.")
        out[name] = value
    return out


def form_pairs(text: str) -> list[tuple[str, str]]:
    """`urllib.parse.parse_qsl(text, keep_blank_values=True)`, the same pairs, without its
    per-pair work where a pair has nothing to decode (the order route's common case)."""
    out: list[tuple[str, str]] = []
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in part or "+" in part:
            name = unquote(name.replace("+", " "), errors="replace")
            value = unquote(value.replace("+", " "), errors="replace")
        out.append((name, value))
    return out


def required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise BinanceError(
            -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    return value


def integer(
    params: dict[str, str], name: str, default: int | None = None, lo: int = 0, hi: int = 2**63 - 1
) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not _DIGITS.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise BinanceError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '{lo}' to '{hi}'.",
        )
    return int(raw)


def decimal_text(params: dict[str, str], name: str) -> str | None:
    """A positive decimal amount as sent (the native path checks its tick or lot)."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'.") from None
    if not value.is_finite() or value <= 0:
        raise BinanceError(
            -1100, f"Illegal characters found in parameter '{name}'; it must be positive."
        )
    return format(value.normalize(), "f")


def json_list(raw: str, name: str) -> list[str]:
    """`symbols=["ETHUSDC","BTCUSDC"]` as Binance takes it."""
    import msgspec

    try:
        got = msgspec.json.decode(unquote(raw))
    except msgspec.DecodeError:
        got = None
    if not isinstance(got, list) or not all(isinstance(s, str) for s in got):
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'.")
    return got


# ---------------------------------------------------------------------- signing


def signed_payload(query: bytes, body: bytes) -> tuple[bytes, str | None]:
    """What was signed (the raw query then the raw body, `signature=...` cut out) and the
    signature, URL-decoded (an Ed25519 signature is base64, sent percent-encoded)."""
    q, b = query.decode("latin-1"), body.decode("latin-1")
    signature: str | None = None
    for part in ("q", "b"):
        text = q if part == "q" else b
        m = _SIGNATURE.search(text)
        if m is None:
            continue
        signature = unquote(m.group(1))
        cut = text[: m.start()] + text[m.end() :]
        if m.start() == 0 and cut.startswith("&"):
            cut = cut[1:]
        if part == "q":
            q = cut
        else:
            b = cut
    return (q + b).encode("latin-1"), signature


def authenticate(
    keys: KeyRing,
    api_key: str | None,
    params: dict[str, str],
    payload: bytes,
    signature: str | None,
    now_ms: int,
    permission: str,
) -> KeyEntry:
    """The key that signed a Binance-style request, if it may do `permission`."""
    if not api_key:
        raise BinanceError(-2014, "API-key format invalid.", 401)
    entry = keys.get(api_key)
    if entry is None or entry.revoked or not entry.usable:
        raise BinanceError(-2015, BAD_KEY, 401)
    if entry.expires_at and now_ms >= entry.expires_at:
        raise BinanceError(-2015, BAD_KEY, 401)
    timestamp = integer(params, "timestamp")
    if timestamp is None:
        raise BinanceError(
            -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
        )
    window = integer(params, "recvWindow", DEFAULT_RECV_WINDOW, 1, MAX_RECV_WINDOW)
    assert window is not None
    if timestamp > now_ms + AHEAD_MS or now_ms - timestamp > window:
        raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
    if not signature:
        raise BinanceError(
            -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
        )
    if not entry.verify(payload, signature):
        raise BinanceError(-1022, BAD_SIGNATURE, 401)
    if permission not in entry.permissions:
        raise BinanceError(-2015, BAD_KEY, 401)
    return entry

"""Every API call as a value: method, exact path with query, exact body bytes, whether it is
signed, and how its answer becomes a typed result. Pure: no I/O, no clock.

Written once for both transports (`dex.client.http.Client` and `AsyncClient`): a transport
sends `Call.path` and `Call.body` byte for byte, so what it signs is what the gateway sees.
Amount arguments are `str` or `Decimal`, sent as decimal strings; a float is a TypeError
naming the argument (binary floats do not hold decimal prices).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

import msgspec

from dex.client.models import (
    ApiKeyInfo,
    Balance,
    CancelAll,
    Fill,
    Order,
    Page,
    convert,
    page_of,
)

T = TypeVar("T")
Amount = str | Decimal

_encode = msgspec.json.Encoder().encode


def _same(data: Any) -> Any:
    return data


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str  # with its query string, exactly as sent and signed
    body: bytes | None
    signed: bool
    parse: Callable[[Any], T]


def amount(name: str, value: Amount | None) -> str | None:
    """A decimal string for an amount argument; TypeError naming it for anything else."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{name} must be a finite decimal")
        return format(value, "f")
    if isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a str or decimal.Decimal, not {type(value).__name__}")


def seg(value: str | int) -> str:
    return quote(str(value), safe="")


def with_query(path: str, **params: Any) -> str:
    given = {
        k: ("true" if v is True else "false" if v is False else v)
        for k, v in params.items()
        if v is not None
    }
    return f"{path}?{urlencode(given)}" if given else path


def body(fields: dict[str, Any]) -> bytes:
    return _encode({k: v for k, v in fields.items() if v is not None})


def get(path: str, parse: Callable[[Any], T] = _same, *, signed: bool = False) -> Call[T]:
    return Call("GET", path, None, signed, parse)


def _order(data: Any) -> Order:
    return convert(data, Order)


# ---------------------------------------------------------------- public


def book(market: str, depth: int | None = None) -> Call[Any]:
    return get(with_query(f"/v1/markets/{seg(market)}/book", depth=depth))


def trades(market: str, limit: int | None = None) -> Call[Any]:
    return get(with_query(f"/v1/markets/{seg(market)}/trades", limit=limit))


def ticker(market: str) -> Call[Any]:
    return get(f"/v1/markets/{seg(market)}/ticker")


def candles(
    market: str,
    interval: str,
    start: int | None = None,
    end: int | None = None,
    limit: int | None = None,
) -> Call[Any]:
    path = with_query(
        f"/v1/markets/{seg(market)}/candles", interval=interval, start=start, end=end, limit=limit
    )
    return get(path)


# ---------------------------------------------------------------- keys


def register_key(fields: dict[str, Any]) -> Call[Any]:
    return Call("POST", "/v1/api-keys", body(fields), False, _same)


def api_keys() -> Call[list[ApiKeyInfo]]:
    return get("/v1/api-keys", lambda d: [convert(k, ApiKeyInfo) for k in d["keys"]], signed=True)


def revoke_key(api_key: str) -> Call[Any]:
    return Call("DELETE", f"/v1/api-keys/{seg(api_key)}", None, True, _same)


def revoke_key_by_wallet(fields: dict[str, Any]) -> Call[Any]:
    return Call("POST", "/v1/api-keys/revoke", body(fields), False, _same)


# ---------------------------------------------------------------- orders


def order_fields(
    market: str,
    side: str,
    type: str,
    *,
    size: Amount | None = None,
    price: Amount | None = None,
    quote_size: Amount | None = None,
    tif: str | None = None,
    post_only: bool = False,
    stp: str | None = None,
    client_order_id: str | None = None,
    expires_at: int | None = None,
    trigger_price: Amount | None = None,
    display_size: Amount | None = None,
) -> dict[str, Any]:
    """The body fields of a new order (None: absent)."""
    return {
        "market": market,
        "side": side,
        "type": type,
        "size": amount("size", size),
        "price": amount("price", price),
        "quote_size": amount("quote_size", quote_size),
        "tif": tif,
        "post_only": post_only or None,
        "stp": stp,
        "client_order_id": client_order_id,
        "expires_at": expires_at,
        "trigger_price": amount("trigger_price", trigger_price),
        "display_size": amount("display_size", display_size),
    }


def place(fields: dict[str, Any], *, signed: bool = True) -> Call[Order]:
    return Call("POST", "/v1/orders", body(fields), signed, _order)


def amend(
    order_id: int,
    *,
    price: Amount | None = None,
    size: Amount | None = None,
    market: str | None = None,
) -> Call[Order]:
    fields = {"price": amount("price", price), "size": amount("size", size)}
    path = with_query(f"/v1/orders/{seg(order_id)}", market=market)
    return Call("PATCH", path, body(fields), True, _order)


def amend_by_client_id(
    client_order_id: str,
    *,
    price: Amount | None = None,
    size: Amount | None = None,
    market: str | None = None,
) -> Call[Order]:
    fields = {"price": amount("price", price), "size": amount("size", size)}
    path = with_query(f"/v1/orders/by-client-id/{seg(client_order_id)}", market=market)
    return Call("PATCH", path, body(fields), True, _order)


def cancel(order_id: int, market: str | None = None) -> Call[Order]:
    path = with_query(f"/v1/orders/{seg(order_id)}", market=market)
    return Call("DELETE", path, None, True, _order)


def cancel_by_client_id(client_order_id: str, market: str | None = None) -> Call[Order]:
    path = with_query(f"/v1/orders/by-client-id/{seg(client_order_id)}", market=market)
    return Call("DELETE", path, None, True, _order)


def cancel_all(market: str | None = None) -> Call[CancelAll]:
    return Call(
        "DELETE",
        with_query("/v1/orders", market=market),
        None,
        True,
        lambda d: convert(d, CancelAll),
    )


def order(order_id: int) -> Call[Order]:
    return get(f"/v1/orders/{seg(order_id)}", _order, signed=True)


def order_by_client_id(client_order_id: str, market: str | None = None) -> Call[Order]:
    path = with_query(f"/v1/orders/by-client-id/{seg(client_order_id)}", market=market)
    return get(path, _order, signed=True)


def orders(
    status: str | None = None,
    market: str | None = None,
    start: int | None = None,
    end: int | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Call[Page[Order]]:
    path = with_query(
        "/v1/orders", status=status, market=market, start=start, end=end, cursor=cursor, limit=limit
    )
    return get(path, lambda d: page_of(d, "orders", Order), signed=True)


def fills(
    market: str | None = None,
    start: int | None = None,
    end: int | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Call[Page[Fill]]:
    path = with_query("/v1/fills", market=market, start=start, end=end, cursor=cursor, limit=limit)
    return get(path, lambda d: page_of(d, "fills", Fill), signed=True)


def balances() -> Call[list[Balance]]:
    return get("/v1/balances", lambda d: [convert(b, Balance) for b in d["balances"]], signed=True)


def ledger(
    asset: str | None = None, cursor: str | None = None, limit: int | None = None
) -> Call[Page[dict[str, Any]]]:
    path = with_query("/v1/ledger", asset=asset, cursor=cursor, limit=limit)
    return get(path, lambda d: page_of(d, "entries", dict), signed=True)


def deposits(cursor: str | None = None, limit: int | None = None) -> Call[Page[dict[str, Any]]]:
    path = with_query("/v1/deposits", cursor=cursor, limit=limit)
    return get(path, lambda d: page_of(d, "deposits", dict), signed=True)


def withdrawals(cursor: str | None = None, limit: int | None = None) -> Call[Page[dict[str, Any]]]:
    path = with_query("/v1/withdrawals", cursor=cursor, limit=limit)
    return get(path, lambda d: page_of(d, "withdrawals", dict), signed=True)


def faucet(asset: str, value: Amount) -> Call[Any]:
    fields = {"asset": asset, "amount": amount("amount", value)}
    return Call("POST", "/v1/faucet", body(fields), True, _same)

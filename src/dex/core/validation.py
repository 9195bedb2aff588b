"""Structural rules of order commands; a broken rule raises CommandError naming the field.

Run by the commands' `__post_init__`, so a malformed `Place`, `Amend` or `Cancel` can be
neither constructed nor decoded: the cores receive only well-formed commands and never check
their shape again. Nothing here looks at state.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from dex.core.enums import STP, OrderType, Side, TimeInForce
from dex.core.errors import CommandError
from dex.core.numbers import MAX_INT

if TYPE_CHECKING:
    from dex.core.commands import Amend, Cancel, Place

_INT_FIELDS = (
    "size",
    "price",
    "quote_size",
    "trigger_price",
    "display_size",
    "max_price",
    "min_price",
)
# What a client may choose as a client order id (the gateway and risk enforce it; the core's
# own contract below is looser, so logs written before the rule still decode). ASCII only,
# matched whole: no whitespace, no NUL (which PostgreSQL cannot store), no look-alikes.
CLIENT_ORDER_ID_RULE = "1 to 36 characters of A-Z a-z 0-9 . _ : -"
_CLIENT_ORDER_ID = re.compile(r"[A-Za-z0-9._:-]{1,36}")
_MARKET_TIFS = (TimeInForce.IOC, TimeInForce.FOK)
_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_GTC = TimeInForce.GTC
_IOC = TimeInForce.IOC


def client_order_id_ok(cid: object) -> bool:
    """Whether `cid` is a client order id a client may choose (`CLIENT_ORDER_ID_RULE`)."""
    return type(cid) is str and _CLIENT_ORDER_ID.fullmatch(cid) is not None


def check_enums(cmd: object, **expected: type) -> None:
    """Fields the cores compare by identity must be members of their enum (decoding ensures
    it; direct construction with a plain string must fail too)."""
    for name, kind in expected.items():
        value = getattr(cmd, name)
        if type(value) is not kind:
            allowed = ", ".join(member.value for member in kind)  # type: ignore[attr-defined]
            raise CommandError(name, f"must be one of {allowed}, got {value!r}")


def check_ints(cmd: object, *names: str) -> None:
    for name in names:
        value = getattr(cmd, name)
        if type(value) is not int and value is not None:
            raise CommandError(name, f"must be an integer, got {value!r}")


def check_place(cmd: Place) -> None:
    """Raise CommandError unless `cmd` is well formed (a quick pass for plain limit orders)."""
    price = cmd.price
    size = cmd.size
    oid = cmd.order_id
    cid = cmd.client_order_id
    if (
        cmd.type is _LIMIT
        and cmd.tif is _GTC
        and type(cmd.side) is Side
        and type(cmd.stp) is STP
        and type(price) is int
        and type(size) is int
        and type(cmd.ts) is int
        and 0 < price <= MAX_INT
        and 0 < size <= MAX_INT
        and (oid is None or (type(oid) is int and 0 < oid <= MAX_INT))
        and (cid is None or 0 < len(cid) <= 64)
        and cmd.expires_at is None
        and (cmd.post_only is False or cmd.post_only is True)
        and not (cmd.quote_size or cmd.trigger_price or cmd.display_size)
        and not (cmd.max_price or cmd.min_price)
    ):
        return
    _check_place_fully(cmd)


def _check_place_fully(cmd: Place) -> None:
    check_enums(cmd, side=Side, type=OrderType, tif=TimeInForce, stp=STP)
    check_ints(cmd, "ts", "order_id", "expires_at", *_INT_FIELDS)
    if type(cmd.post_only) is not bool:
        raise CommandError("post_only", f"must be true or false, got {cmd.post_only!r}")
    for name in _INT_FIELDS:
        value = getattr(cmd, name)
        if value < 0 or value > MAX_INT:
            raise CommandError(name, f"must be between 0 and 2^63-1, got {value}")
    if cmd.order_id is not None and not 0 < cmd.order_id <= MAX_INT:
        raise CommandError("order_id", f"must be between 1 and 2^63-1, got {cmd.order_id}")
    kind = cmd.type
    is_stop = kind is OrderType.STOP_LIMIT or kind is OrderType.STOP_MARKET
    if kind is OrderType.LIMIT or kind is OrderType.STOP_LIMIT:
        _check_limit(cmd)
    else:
        _check_market(cmd)
    if is_stop:
        if not cmd.trigger_price:
            raise CommandError("trigger_price", f"is required for a {kind} order")
        if cmd.post_only:
            raise CommandError("post_only", "a stop order cannot be post-only")
        if cmd.display_size:
            raise CommandError("display_size", "a stop order cannot be an iceberg")
    elif cmd.trigger_price:
        raise CommandError("trigger_price", f"only stop orders have one, not {kind}")
    if (cmd.tif is TimeInForce.GTD) != (cmd.expires_at is not None):
        raise CommandError("expires_at", "is required with tif GTD and allowed only with it")
    if cmd.expires_at is not None and not 0 < cmd.expires_at <= MAX_INT:
        raise CommandError("expires_at", f"must be between 1 and 2^63-1, got {cmd.expires_at}")
    if cmd.client_order_id is not None and not 0 < len(cmd.client_order_id) <= 64:
        raise CommandError("client_order_id", "must be 1 to 64 characters")


def _check_limit(cmd: Place) -> None:
    if not cmd.price:
        raise CommandError("price", f"is required for a {cmd.type} order")
    if not cmd.size:
        raise CommandError("size", f"is required for a {cmd.type} order")
    if cmd.quote_size:
        raise CommandError("quote_size", f"only market orders have one, not {cmd.type}")
    if cmd.max_price or cmd.min_price:
        field = "max_price" if cmd.max_price else "min_price"
        raise CommandError(field, f"only market orders have one, not {cmd.type}")
    if cmd.tif is not TimeInForce.GTC and cmd.tif is not TimeInForce.GTD:
        if cmd.post_only:
            raise CommandError("post_only", f"is not allowed with tif {cmd.tif}")
        if cmd.display_size:
            raise CommandError("display_size", f"is not allowed with tif {cmd.tif}")
    if cmd.display_size > cmd.size:
        raise CommandError("display_size", "must not exceed size")


def _check_market(cmd: Place) -> None:
    if cmd.price:
        raise CommandError("price", f"a {cmd.type} order has no price")
    if bool(cmd.size) == bool(cmd.quote_size):
        raise CommandError("size", f"a {cmd.type} order needs exactly one of size and quote_size")
    if cmd.tif not in _MARKET_TIFS:
        raise CommandError("tif", f"a {cmd.type} order is IOC or FOK, not {cmd.tif}")
    if cmd.tif is TimeInForce.FOK and cmd.quote_size:
        raise CommandError("tif", "FOK needs a base size, not quote_size")
    if cmd.post_only:
        raise CommandError("post_only", f"a {cmd.type} order cannot be post-only")
    if cmd.display_size:
        raise CommandError("display_size", f"a {cmd.type} order cannot be an iceberg")
    if cmd.side is Side.BUY and cmd.min_price:
        raise CommandError("min_price", "a buy carries max_price, not min_price")
    if cmd.side is Side.SELL and cmd.max_price:
        raise CommandError("max_price", "a sell carries min_price, not max_price")


def check_target(cmd: Amend | Cancel) -> None:
    oid = cmd.order_id
    if type(oid) is int and type(cmd.ts) is int and 0 < oid <= MAX_INT:
        return  # the common shape: a positive integer id
    check_ints(cmd, "ts", "order_id")
    if oid is not None and not 0 < oid <= MAX_INT:
        raise CommandError("order_id", f"must be between 1 and 2^63-1, got {oid}")
    if cmd.order_id is None and cmd.client_order_id is None:
        raise CommandError("order_id", "order_id or client_order_id is required")


def check_amend(cmd: Amend) -> None:
    check_target(cmd)
    check_ints(cmd, "price", "size")
    if not cmd.price and not cmd.size:
        raise CommandError("size", "an amend needs a new price or a new size")
    for name in ("price", "size"):
        value = getattr(cmd, name)
        if value < 0 or value > MAX_INT:
            raise CommandError(name, f"must be between 0 and 2^63-1, got {value}")

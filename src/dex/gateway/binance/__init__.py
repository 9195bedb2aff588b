"""A Binance-spot-compatible API on the gateway, so that unmodified CCXT and ccxt.pro (and
the bots built on them) trade here: `/api/v3` (`rest`), the market and user-data streams
(`ws`, `userdata`), translated by `common`. One adapter over the gateway's services: every
rule is enforced once, by the native path; this package only translates.
"""

from __future__ import annotations

from typing import Any

from dex.gateway.auth import Guard
from dex.gateway.binance.rest import rest_handlers
from dex.gateway.binance.userdata import ListenKeys
from dex.gateway.binance.ws import ws_handlers
from dex.gateway.service import Gateway


def binance_handlers(gw: Gateway, guard: Guard) -> list[Any]:
    """Every Binance-compatible route and WebSocket, bound to `gw` and `guard`."""
    listen_keys = ListenKeys()
    return [rest_handlers(gw, guard, listen_keys), *ws_handlers(gw, guard, listen_keys)]


__all__ = ["binance_handlers"]

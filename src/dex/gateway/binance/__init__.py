"""A Binance-spot-compatible API on the gateway, so that unmodified CCXT and ccxt.pro (and
the bots built on them) trade here: `/api/v3` (`rest`), the market and user-data streams
(`ws`, `userdata`), translated by `common`. One adapter over the gateway's services: every
rule is enforced once, by the native path; this package only translates.
"""

from __future__ import annotations

from typing import Any

from dex.gateway.auth import Guard
from dex.gateway.binance.rest import Rest, rest_handlers
from dex.gateway.binance.userdata import ListenKeys
from dex.gateway.binance.ws import ws_handlers
from dex.gateway.service import Gateway


def binance_api(gw: Gateway, guard: Guard, redis: Any = None) -> Rest:
    """The adapter's state over `gw` and `guard` (its listen keys among it, in `redis` when
    the gateway replicas share one): what `binance_handlers` serve and the order route's
    fast path answers with."""
    return Rest(gw, guard, ListenKeys(gw.keys, redis))


def binance_handlers(api: Rest) -> list[Any]:
    """Every Binance-compatible route and WebSocket, bound to `api`."""
    return [rest_handlers(api), *ws_handlers(api)]


__all__ = ["Rest", "binance_api", "binance_handlers"]

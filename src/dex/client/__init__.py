"""The Python client of the exchange's trading API (REST and WebSocket)."""

from dex.client.errors import *  # noqa: F403 - every error class is public API
from dex.client.errors import DexError
from dex.client.http import AsyncClient, Client
from dex.client.models import ApiKeyInfo, Balance, CancelAll, Fill, Order, OrderFill, Page
from dex.client.wallet import Credentials, Wallet
from dex.client.ws import BookView, Subscriber

__all__ = [
    "ApiKeyInfo",
    "AsyncClient",
    "Balance",
    "BookView",
    "CancelAll",
    "Client",
    "Credentials",
    "DexError",
    "Fill",
    "Order",
    "OrderFill",
    "Page",
    "Subscriber",
    "Wallet",
]

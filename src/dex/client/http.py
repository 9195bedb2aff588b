"""The two transports: `Client` (httpx.Client) and `AsyncClient` (httpx.AsyncClient), with
the same method names and results. Each method builds its `dex.client.calls.Call` (written
once) and runs it: `_prepare` signs the exact path and body bytes, `_finish` parses the
answer or raises the `dex.client.errors` exception of its code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import httpx
import msgspec

from dex.client import calls
from dex.client.calls import Amount, Call
from dex.client.errors import DexError, MissingCredentials, error_from
from dex.client.models import ApiKeyInfo, Balance, CancelAll, Fill, Order, Page
from dex.client.wallet import Credentials, Wallet, ed25519_key_pair

T = TypeVar("T")


def _prepare(call: Call[Any], credentials: Credentials | None) -> dict[str, Any]:
    headers: dict[str, str] = {}
    if call.body is not None:
        headers["content-type"] = "application/json"
    if call.signed:
        if credentials is None:
            raise MissingCredentials(0, "missing_credentials", "this call needs API credentials")
        headers.update(credentials.headers(call.method, call.path, call.body or b""))
    return {"method": call.method, "url": call.path, "content": call.body, "headers": headers}


def _finish(call: Call[T], response: httpx.Response) -> T:
    try:
        data = msgspec.json.decode(response.content) if response.content else None
    except msgspec.DecodeError:
        data = response.text
    if response.status_code >= 400:
        raise error_from(response.status_code, data, response.headers.get("retry-after"))
    return call.parse(data)


def _credentials(wallet: Wallet, answer: dict[str, Any], private_key: bytes | None) -> Credentials:
    return Credentials(
        api_key=answer["api_key"],
        account=answer.get("account", wallet.address),
        key_type=answer.get("key_type", "hmac"),
        secret=answer.get("secret"),
        private_key=private_key,
    )


def _register_fields(
    wallet: Wallet, chain_id: int, key_type: str, permissions: str, expires_at: int
) -> tuple[dict[str, Any], bytes | None]:
    private: bytes | None = None
    public = ""
    if key_type == "ed25519":
        private, public = ed25519_key_pair()
    fields = wallet.register_key_body(
        chain_id,
        key_type=key_type,
        permissions=permissions,
        expires_at=expires_at,
        public_key=public,
    )
    return fields, private


class Client:
    """The trading API over a blocking httpx.Client. `credentials` sign the private calls;
    `onboard` registers a key with a wallet and adopts it when the client has none."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self._chain_id: int | None = None
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, call: Call[T]) -> T:
        response = self._http.request(**_prepare(call, self.credentials))
        return _finish(call, response)

    # public
    def time(self) -> int:
        return int(self.run(calls.get("/v1/time"))["server_time"])

    def eip712(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.run(calls.get("/v1/eip712"))
        return doc

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.eip712()["domain"]["chainId"])
        return self._chain_id

    def markets(self) -> list[dict[str, Any]]:
        return self.run(calls.get("/v1/markets"))

    def assets(self) -> list[dict[str, Any]]:
        return self.run(calls.get("/v1/assets"))

    def book(self, market: str, depth: int | None = None) -> dict[str, Any]:
        return self.run(calls.book(market, depth))

    def trades(self, market: str, limit: int | None = None) -> Any:
        return self.run(calls.trades(market, limit))

    def ticker(self, market: str) -> dict[str, Any]:
        return self.run(calls.ticker(market))

    def tickers(self) -> Any:
        return self.run(calls.get("/v1/tickers"))

    def candles(
        self,
        market: str,
        interval: str,
        start: int | None = None,
        end: int | None = None,
        limit: int | None = None,
    ) -> Any:
        return self.run(calls.candles(market, interval, start, end, limit))

    # keys
    def onboard(
        self,
        wallet: Wallet,
        key_type: str = "hmac",
        permissions: str = "read,trade",
        expires_at: int = 0,
    ) -> Credentials:
        fields, private = _register_fields(
            wallet, self.chain_id(), key_type, permissions, expires_at
        )
        creds = _credentials(wallet, self.run(calls.register_key(fields)), private)
        if self.credentials is None:
            self.credentials = creds
        return creds

    def api_keys(self) -> list[ApiKeyInfo]:
        return self.run(calls.api_keys())

    def revoke_key(self, api_key: str) -> dict[str, Any]:
        return self.run(calls.revoke_key(api_key))

    def revoke_key_with_wallet(self, wallet: Wallet, api_key: str) -> dict[str, Any]:
        fields = wallet.revoke_key_body(self.chain_id(), api_key)
        return self.run(calls.revoke_key_by_wallet(fields))

    def faucet(self, asset: str, amount: Amount) -> dict[str, Any]:
        return self.run(calls.faucet(asset, amount))

    # orders
    def place(self, market: str, side: str, type: str, **kw: Any) -> Order:
        """A new order signed by the key; keyword arguments: size, price, quote_size, tif,
        post_only, stp, client_order_id, expires_at, trigger_price, display_size."""
        return self.run(calls.place(calls.order_fields(market, side, type, **kw)))

    def place_with_wallet(
        self, wallet: Wallet, market: str, side: str, type: str, **kw: Any
    ) -> Order:
        """A new order signed by the wallet itself (no API key)."""
        fields = wallet.order_body(self.chain_id(), calls.order_fields(market, side, type, **kw))
        return self.run(calls.place(fields, signed=False))

    def amend(
        self,
        order_id: int,
        *,
        price: Amount | None = None,
        size: Amount | None = None,
        market: str | None = None,
    ) -> Order:
        return self.run(calls.amend(order_id, price=price, size=size, market=market))

    def amend_by_client_id(
        self,
        client_order_id: str,
        *,
        price: Amount | None = None,
        size: Amount | None = None,
        market: str | None = None,
    ) -> Order:
        return self.run(
            calls.amend_by_client_id(client_order_id, price=price, size=size, market=market)
        )

    def cancel(self, order_id: int, market: str | None = None) -> Order:
        return self.run(calls.cancel(order_id, market))

    def cancel_by_client_id(self, client_order_id: str, market: str | None = None) -> Order:
        return self.run(calls.cancel_by_client_id(client_order_id, market))

    def cancel_all(self, market: str | None = None) -> CancelAll:
        return self.run(calls.cancel_all(market))

    def order(self, order_id: int) -> Order:
        return self.run(calls.order(order_id))

    def order_by_client_id(self, client_order_id: str, market: str | None = None) -> Order:
        return self.run(calls.order_by_client_id(client_order_id, market))

    def orders(self, **query: Any) -> Page[Order]:
        """status, market, start, end, cursor, limit."""
        return self.run(calls.orders(**query))

    def all_orders(self, **query: Any) -> Iterator[Order]:
        """Every order matching the filters, page after page (follows next_cursor)."""
        cursor = query.pop("cursor", None)
        while True:
            page = self.orders(**query, cursor=cursor)
            yield from page.items
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor

    def fills(self, **query: Any) -> Page[Fill]:
        """market, start, end, cursor, limit."""
        return self.run(calls.fills(**query))

    def balances(self) -> list[Balance]:
        return self.run(calls.balances())

    def ledger(self, **query: Any) -> Page[dict[str, Any]]:
        return self.run(calls.ledger(**query))

    def deposits(self, **query: Any) -> Page[dict[str, Any]]:
        return self.run(calls.deposits(**query))

    def withdrawals(self, **query: Any) -> Page[dict[str, Any]]:
        return self.run(calls.withdrawals(**query))


class AsyncClient:
    """`Client`'s methods over httpx.AsyncClient: the same names and results, awaited."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self._chain_id: int | None = None
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def run(self, call: Call[T]) -> T:
        response = await self._http.request(**_prepare(call, self.credentials))
        return _finish(call, response)

    async def time(self) -> int:
        return int((await self.run(calls.get("/v1/time")))["server_time"])

    async def eip712(self) -> dict[str, Any]:
        doc: dict[str, Any] = await self.run(calls.get("/v1/eip712"))
        return doc

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int((await self.eip712())["domain"]["chainId"])
        return self._chain_id

    async def markets(self) -> list[dict[str, Any]]:
        return await self.run(calls.get("/v1/markets"))

    async def assets(self) -> list[dict[str, Any]]:
        return await self.run(calls.get("/v1/assets"))

    async def book(self, market: str, depth: int | None = None) -> dict[str, Any]:
        return await self.run(calls.book(market, depth))

    async def trades(self, market: str, limit: int | None = None) -> Any:
        return await self.run(calls.trades(market, limit))

    async def ticker(self, market: str) -> dict[str, Any]:
        return await self.run(calls.ticker(market))

    async def tickers(self) -> Any:
        return await self.run(calls.get("/v1/tickers"))

    async def candles(
        self,
        market: str,
        interval: str,
        start: int | None = None,
        end: int | None = None,
        limit: int | None = None,
    ) -> Any:
        return await self.run(calls.candles(market, interval, start, end, limit))

    async def onboard(
        self,
        wallet: Wallet,
        key_type: str = "hmac",
        permissions: str = "read,trade",
        expires_at: int = 0,
    ) -> Credentials:
        fields, private = _register_fields(
            wallet, await self.chain_id(), key_type, permissions, expires_at
        )
        creds = _credentials(wallet, await self.run(calls.register_key(fields)), private)
        if self.credentials is None:
            self.credentials = creds
        return creds

    async def api_keys(self) -> list[ApiKeyInfo]:
        return await self.run(calls.api_keys())

    async def revoke_key(self, api_key: str) -> dict[str, Any]:
        return await self.run(calls.revoke_key(api_key))

    async def revoke_key_with_wallet(self, wallet: Wallet, api_key: str) -> dict[str, Any]:
        fields = wallet.revoke_key_body(await self.chain_id(), api_key)
        return await self.run(calls.revoke_key_by_wallet(fields))

    async def faucet(self, asset: str, amount: Amount) -> dict[str, Any]:
        return await self.run(calls.faucet(asset, amount))

    async def place(self, market: str, side: str, type: str, **kw: Any) -> Order:
        return await self.run(calls.place(calls.order_fields(market, side, type, **kw)))

    async def place_with_wallet(
        self, wallet: Wallet, market: str, side: str, type: str, **kw: Any
    ) -> Order:
        chain = await self.chain_id()
        fields = wallet.order_body(chain, calls.order_fields(market, side, type, **kw))
        return await self.run(calls.place(fields, signed=False))

    async def amend(
        self,
        order_id: int,
        *,
        price: Amount | None = None,
        size: Amount | None = None,
        market: str | None = None,
    ) -> Order:
        return await self.run(calls.amend(order_id, price=price, size=size, market=market))

    async def amend_by_client_id(
        self,
        client_order_id: str,
        *,
        price: Amount | None = None,
        size: Amount | None = None,
        market: str | None = None,
    ) -> Order:
        return await self.run(
            calls.amend_by_client_id(client_order_id, price=price, size=size, market=market)
        )

    async def cancel(self, order_id: int, market: str | None = None) -> Order:
        return await self.run(calls.cancel(order_id, market))

    async def cancel_by_client_id(self, client_order_id: str, market: str | None = None) -> Order:
        return await self.run(calls.cancel_by_client_id(client_order_id, market))

    async def cancel_all(self, market: str | None = None) -> CancelAll:
        return await self.run(calls.cancel_all(market))

    async def order(self, order_id: int) -> Order:
        return await self.run(calls.order(order_id))

    async def order_by_client_id(self, client_order_id: str, market: str | None = None) -> Order:
        return await self.run(calls.order_by_client_id(client_order_id, market))

    async def orders(self, **query: Any) -> Page[Order]:
        return await self.run(calls.orders(**query))

    async def all_orders(self, **query: Any) -> AsyncIterator[Order]:
        cursor = query.pop("cursor", None)
        while True:
            page = await self.orders(**query, cursor=cursor)
            for item in page.items:
                yield item
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor

    async def fills(self, **query: Any) -> Page[Fill]:
        return await self.run(calls.fills(**query))

    async def balances(self) -> list[Balance]:
        return await self.run(calls.balances())

    async def ledger(self, **query: Any) -> Page[dict[str, Any]]:
        return await self.run(calls.ledger(**query))

    async def deposits(self, **query: Any) -> Page[dict[str, Any]]:
        return await self.run(calls.deposits(**query))

    async def withdrawals(self, **query: Any) -> Page[dict[str, Any]]:
        return await self.run(calls.withdrawals(**query))


__all__ = ["AsyncClient", "Client", "DexError"]

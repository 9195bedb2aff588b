"""One exchange per module, embedded (`tests.client.conftest.embedded_exchange`) and then
distributed (`dex up --distributed` on a private durable Redis: every test runs on both), and
unmodified
`ccxt.binance` clients pointed at its Binance-compatible API: `binance(client)` is a ccxt
client signing with the API key of a `dex.client.Client` from `tests.support.trading.trader`
(HMAC, or Ed25519 with the private key as a PEM secret, as ccxt takes it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ccxt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from dex.client import Client
from tests.client.conftest import Exchange, embedded_exchange
from tests.services.test_smoke import free_base
from tests.support.dex_process import DexProcess, ready, wait_on_process
from tests.support.redis_server import private_redis_or_skip

OPTIONS = {
    "defaultType": "spot",
    "fetchMarkets": ["spot"],
    "fetchCurrencies": False,
    "fetchMargins": False,
    "warnOnFetchOpenOrdersWithoutSymbol": False,
    "broker": {"spot": "x-dex-"},
}


def urls(base: str) -> dict[str, Any]:
    ws = base.replace("http://", "ws://")
    return {
        "public": base + "/api/v3",
        "private": base + "/api/v3",
        "ws": {"spot": ws + "/ws", "ws-api": {"spot": ws + "/ws-api/v3"}},
    }


def secret_of(client: Client) -> str:
    creds = client.credentials
    assert creds is not None
    if creds.key_type == "ed25519":
        assert creds.private_key is not None
        pem = Ed25519PrivateKey.from_private_bytes(creds.private_key).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
        return pem.decode()
    assert creds.secret is not None
    return creds.secret


def connect(kind: Any, base: str, client: Client | None = None, **extra: Any) -> Any:
    config: dict[str, Any] = {"options": dict(OPTIONS), "enableRateLimit": False, **extra}
    if client is not None:
        assert client.credentials is not None
        config["apiKey"] = client.credentials.api_key
        config["secret"] = secret_of(client)
    ex = kind(config)
    ex.urls["api"] = urls(base)
    return ex


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def exchange(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[Exchange]:
    tmp: Path = tmp_path_factory.mktemp("dex")
    if request.param == "embedded":
        yield from embedded_exchange(tmp)
        return
    with private_redis_or_skip() as redis:
        base = free_base()
        url = f"http://127.0.0.1:{base}"
        env = {
            "DEX_PORT": str(base),
            "DEX_REDIS_URL": redis.url,
            "DEX_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'history.sqlite3'}",
            "DEX_STOP_TIMEOUT_MS": "5000",
        }
        dex = DexProcess.start(["up", "--distributed"], env, tmp)
        try:
            for port in range(base, base + 5):
                wait_on_process(
                    f"service on {port} ready",
                    lambda p=port: ready(f"http://127.0.0.1:{p}"),
                    timeout=60,
                )
            yield Exchange(url, url.replace("http://", "ws://") + "/v1/ws")
        finally:
            assert dex.stop(timeout=60) == 0, dex.output()[-3000:]


@pytest.fixture(scope="module")
def binance(exchange: Exchange) -> Callable[..., Any]:
    made: list[Any] = []

    def make(client: Client | None = None, **extra: Any) -> Any:
        ex = connect(ccxt.binance, exchange.url, client, **extra)
        made.append(ex)
        return ex

    return make

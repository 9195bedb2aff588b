"""Binance listen keys (`dex.gateway.binance.userdata.ListenKeys`), in memory and in Redis,
with the same rules: one per API key (a second POST answers the live one), kept alive by PUT,
lapsing `LISTEN_KEY_TTL` after the last keep-alive, closed by DELETE; only the owning
account may keep or close one; a revoked API key's key looks up as nothing. In Redis, two
gateway replicas (two `ListenKeys` on one server) share them; a Redis that cannot be reached
is -1001 (503), never a crash."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from dex.gateway import keys as k
from dex.gateway.binance import userdata
from dex.gateway.binance.common import BinanceError
from dex.gateway.binance.userdata import ListenKeys
from tests.bus.contract import aio
from tests.gateway.test_keys import hmac_record
from tests.support.redis_server import redis_url_or_skip

OTHER = "0x" + "cd" * 20
Make = Callable[[k.KeyRing], ListenKeys]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ring() -> tuple[k.KeyRing, list[k.KeyEntry]]:
    kek = k.parse_kek(k.new_kek())
    records = [
        hmac_record(kek, k.new_secret()),
        hmac_record(kek, k.new_secret()),  # the same account's second key
        hmac_record(kek, k.new_secret(), account=OTHER),
    ]
    ring = k.KeyRing(kek, records)
    entries = [ring.get(r.api_key) for r in records]
    assert all(e is not None for e in entries)
    return ring, [e for e in entries if e is not None]


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Any:
    """Where the keys live: None (memory), or a Redis URL and a prefix of this test's own."""
    if request.param == "memory":
        yield None
        return
    with redis_url_or_skip() as url:
        yield url, f"test:listen:{uuid.uuid4().hex}:"


@contextlib.asynccontextmanager
async def replicas(store: Any) -> AsyncIterator[tuple[Make, Clock | None]]:
    """A maker of ListenKeys over `store` (each call: another gateway replica on it)."""
    if store is None:
        clock = Clock()
        yield (lambda ring: ListenKeys(ring, clock=clock)), clock
        return
    url, prefix = store
    clients: list[Redis] = []

    def redis_keys(ring: k.KeyRing) -> ListenKeys:
        clients.append(Redis.from_url(url))
        return ListenKeys(ring, clients[-1], prefix=prefix)

    try:
        yield redis_keys, None
    finally:
        for c in clients:
            await c.aclose()


async def _lapse(keys: ListenKeys, lk: str, clock: Clock | None) -> None:
    if clock is not None:
        clock.now += userdata.LISTEN_KEY_TTL + 1
        return
    # Redis expires the key itself (made with a short TTL): until then, it is still there
    assert await keys.stored([lk]) == {lk}
    deadline = asyncio.get_running_loop().time() + 10
    while await keys.stored([lk]):
        assert asyncio.get_running_loop().time() < deadline, "Redis never expired the key"
        await asyncio.sleep(0.02)


@aio
async def test_one_key_per_api_key_kept_closed_and_shared(store: Any) -> None:
    async with replicas(store) as (build, _):
        await _shared(build)


async def _shared(build: Make) -> None:
    ring, (a1, a2, b) = _ring()
    one, two = build(ring), build(ring)  # two replicas over one store (memory: separate)
    lk = await one.new(a1)
    assert len(lk) == 60
    assert await one.new(a1) == lk  # the live one again
    assert await one.new(a2) != lk  # another API key: its own
    assert (await one.lookup(lk)) is a1
    assert await one.stored([lk, "x" * 60]) == {lk}
    with pytest.raises(BinanceError) as e:
        await one.keep(b, lk)  # another account's key
    assert e.value.code == -1125
    with pytest.raises(BinanceError) as e:
        await one.close(b, lk)
    assert e.value.code == -1125
    await one.keep(a2, lk)  # the same account's other key may
    if one.redis is not None:  # replicas share: the other one sees, keeps and closes it
        assert (await two.lookup(lk)) is a1
        await two.keep(a1, lk)
        await two.close(a1, lk)
    else:
        await one.close(a1, lk)
    assert await one.lookup(lk) is None and await one.stored([lk]) == set()
    with pytest.raises(BinanceError) as e:
        await one.keep(a1, lk)
    assert e.value.code == -1125
    assert await one.new(a1) != lk  # a closed key is not given again


@aio
async def test_a_key_lapses_after_its_ttl_unless_kept_alive(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with replicas(store) as (build, clock):
        if clock is None:
            monkeypatch.setattr(userdata, "LISTEN_KEY_TTL", 0.2)
        ring, (a1, _, _) = _ring()
        keys = build(ring)
        lk = await keys.new(a1)
        await _lapse(keys, lk, clock)
        assert await keys.lookup(lk) is None and await keys.stored([lk]) == set()
        with pytest.raises(BinanceError):
            await keys.keep(a1, lk)
        fresh = await keys.new(a1)
        assert fresh != lk and await keys.lookup(fresh) is a1


@aio
async def test_a_revoked_api_key_has_no_listen_key(store: Any) -> None:
    async with replicas(store) as (build, _):
        ring, (a1, _, _) = _ring()
        keys = build(ring)
        lk = await keys.new(a1)
        a1.revoked = True
        assert await keys.lookup(lk) is None
        assert await keys.stored([lk]) == {lk}  # still stored: private channels close 4001
        with pytest.raises(BinanceError) as e:
            await keys.keep(a1, lk)
        assert e.value.code == -1125


@aio
async def test_an_unreachable_redis_is_1001_and_changes_nothing() -> None:
    ring, (a1, _, _) = _ring()
    # as the gateway's client is made (dex.gateway.ratelimit.RedisLimiter): no retries
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    keys = ListenKeys(ring, dead)
    for call in (keys.new(a1), keys.lookup("x" * 60), keys.stored(["x" * 60])):
        with pytest.raises(BinanceError) as e:
            await call
        assert (e.value.code, e.value.status) == (-1001, 503)
        assert "unreachable" in e.value.msg
    await dead.aclose()


def test_memory_keys_are_bounded() -> None:
    ring, (a1, _, _) = _ring()
    clock = Clock()
    keys = ListenKeys(ring, clock=clock)
    keys.memory = {f"k:{i}": ("x", clock.now + 10) for i in range(2 * userdata.MAX_LISTEN_KEYS)}

    async def run() -> None:
        with pytest.raises(BinanceError) as e:
            await keys.new(a1)
        assert (e.value.code, e.value.status) == (-1003, 429)
        clock.now += 11  # all lapsed: pruned, room again
        assert len(await keys.new(a1)) == 60
        assert len(keys.memory) == 2

    asyncio.run(run())

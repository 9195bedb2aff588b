"""`RedisBus` against the bus contract, plus what only a real Redis can show.

The contract runs on `DEX_REDIS_URL` (else a private `redis-server`), each test under its own
key prefix, deleted afterwards, so runs sharing a server do not collide. Tests that restart,
kill or reconfigure Redis use a private server from `tests/support/redis_server.py`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
import redis.utils

from dex.bus import Bus, FencedError, TrimmedError
from dex.bus.redis import RedisBus, hash_tag
from tests.bus.contract import GUARD, BusContract, FakeClock, acquired, aio, read_all, yield_to_loop
from tests.support.polling import eventually
from tests.support.redis_server import RedisServer, private_redis_or_skip, redis_url_or_skip


class _LoopScopedRedisBus(RedisBus):
    """Closes the client it makes when its event loop shuts down.

    Contract tests build the bus outside the loop and never close it; `asyncio.run` cancels
    every remaining task before closing the loop, which runs this keeper's `finally`.
    """

    def _new_client(self) -> aioredis.Redis:
        client = super()._new_client()
        self._keeper = asyncio.get_running_loop().create_task(_close_when_cancelled(client))
        return client


async def _close_when_cancelled(client: aioredis.Redis) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await client.aclose()


def _delete_prefixed(url: str, prefix: str) -> None:
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_url_or_skip() as url:
        yield url


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test:{uuid.uuid4().hex}:"
    yield prefix
    _delete_prefixed(redis_url, prefix)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with private_redis_or_skip() as server:
        yield server


class TestRedisBus(BusContract):
    """Runs every contract test on a `RedisBus` whose lease time follows the `FakeClock`."""

    @pytest.fixture
    def bus(self, clock: FakeClock, redis_url: str, prefix: str) -> Bus:
        start = clock.now
        return _LoopScopedRedisBus(
            redis_url, clock_offset=lambda: clock.now - start, key_prefix=prefix
        )


# --- durability and server restarts -------------------------------------------------------


@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "sigkill"])
def test_state_survives_a_restart_from_the_aof(server: RedisServer, crash: bool) -> None:
    async def before() -> tuple[str, int]:
        async with RedisBus(server.url) as bus:
            lease = await acquired(bus, "me:0", "a")
            stream = "dex:{me:0}:log"
            also = {"dex:{me:0}:out": [b"o1"]}
            await bus.append(stream, [b"a", b"b", b"c"], lease=lease, expect_last=0, also=also)
            await bus.trim(stream, 2)
            await bus.put_snapshot("dex:{me:0}:snap", 3, b"state", lease=lease)
            await bus.commit_position(stream, "reader", 3)
            return await bus.identity(), lease.epoch

    async def after(old_identity: str, old_epoch: int) -> None:
        async with RedisBus(server.url) as bus:
            stream = "dex:{me:0}:log"
            assert await bus.identity() != old_identity
            assert await bus.last(stream) == 3
            assert await bus.read(stream, 1) == [(2, b"b"), (3, b"c")]
            with pytest.raises(TrimmedError):
                await bus.read(stream, 0)
            assert await read_all(bus, "dex:{me:0}:out") == [(1, b"o1")]
            assert await bus.get_snapshot("dex:{me:0}:snap") == (3, b"state")
            assert await bus.positions(stream) == {"reader": 3}
            # the lease itself survives (its expiry is absolute); the epoch counter goes on
            assert await bus.acquire("me:0", "b", 10.0) is None
            again = await acquired(bus, "me:0", "a")
            assert again.epoch == old_epoch + 1
            assert await bus.append(stream, [b"d"], lease=again, expect_last=3) == 4

    identity, epoch = asyncio.run(before())
    server.restart(kill=crash)
    asyncio.run(after(identity, epoch))


def test_scripts_are_reloaded_after_a_restart_or_flush(server: RedisServer) -> None:
    async def scenario() -> None:
        async with RedisBus(server.url) as bus:
            lease = await acquired(bus, "L", "a")
            await bus.append("{L}:s", [b"a"], lease=lease, expect_last=0)
            server.restart()  # new process: empty script cache, pooled sockets are dead
            # `restart` blocked the loop; a running service's loop sees the old server's EOF
            # at once, and the pool then replaces the dead connection on checkout
            await yield_to_loop()
            assert await bus.append("{L}:s", [b"b"], lease=lease, expect_last=1) == 2
            client = redis.Redis(port=server.port)
            client.script_flush()
            client.close()
            assert await bus.append("{L}:s", [b"c"], lease=lease, expect_last=2) == 3
            assert await bus.read("{L}:s", 0) == [(1, b"a"), (2, b"b"), (3, b"c")]

    asyncio.run(scenario())


def test_restart_from_an_older_aof_loses_the_later_writes_and_changes_identity(
    server: RedisServer,
) -> None:
    async def write(entries: list[bytes]) -> str:
        async with RedisBus(server.url) as bus:
            await bus.append("s", entries)
            return await bus.identity()

    async def check() -> tuple[int, str]:
        async with RedisBus(server.url) as bus:
            return await bus.last("s"), await bus.identity()

    first = asyncio.run(write([b"a"]))
    copy = server.snapshot_aof()
    asyncio.run(write([b"b", b"c"]))
    server.restart(from_aof=copy, kill=True)
    last, identity = asyncio.run(check())
    assert last == 1
    assert identity != first


def test_out_of_memory_refuses_the_whole_append(server: RedisServer) -> None:
    async def scenario() -> None:
        async with RedisBus(server.url) as bus:
            await bus.append("{x}:log", [b"a"])
            admin = aioredis.Redis(port=server.port)
            await admin.config_set("maxmemory", 1)
            with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
                await bus.append("{x}:log", [b"b" * 1000], also={"{x}:out": [b"c"]})
            await admin.config_set("maxmemory", 0)
            await admin.aclose()
            assert await read_all(bus, "{x}:log") == [(1, b"a")]
            assert await bus.last("{x}:out") == 0

    asyncio.run(scenario())


# --- reading --------------------------------------------------------------------------------


@aio
async def test_blocking_read_keeps_waiting_across_block_slices(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dex.bus.redis._BLOCK_SLICE", 0.01)
    async with RedisBus(server.url) as bus:
        admin = aioredis.Redis(port=server.port)
        reader = asyncio.create_task(bus.read("never-written-before", 0, timeout=30.0))
        await eventually(
            "the reader to block and come back twice",
            lambda: _xread_calls_at_least(admin, 3),
            timeout=GUARD,
            abort=lambda: "the read returned" if reader.done() else None,
        )
        await bus.append("never-written-before", [b"a"])
        assert await asyncio.wait_for(reader, GUARD) == [(1, b"a")]
        await admin.aclose()


async def _xread_calls_at_least(admin: aioredis.Redis, n: int) -> bool:
    stats = await admin.info("commandstats")
    return int(stats.get("cmdstat_xread", {}).get("calls", 0)) >= n


@aio
async def test_reader_woken_after_a_trim_past_its_position_raises(
    redis_url: str, prefix: str
) -> None:
    async def append_and_trim() -> None:
        async with RedisBus(redis_url, key_prefix=prefix) as other:
            await other.append("s", [b"c", b"d"])
            await other.trim("s", 4)

    async with RedisBus(redis_url, key_prefix=prefix) as bus:
        await bus.append("s", [b"a", b"b"])
        reader = asyncio.create_task(bus.read("s", 2, timeout=GUARD))
        await yield_to_loop()
        # Another process appends 3, 4 and trims 3 while this loop is held up (the thread's
        # loop runs both to the end before this loop, and so the reader, runs again).
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, append_and_trim()).result(timeout=GUARD)
        with pytest.raises(TrimmedError):
            await asyncio.wait_for(reader, GUARD)
        assert await bus.read("s", 3) == [(4, b"d")]


@aio
async def test_a_gap_made_behind_the_bus_is_a_trimmed_error(redis_url: str, prefix: str) -> None:
    async with RedisBus(redis_url, key_prefix=prefix) as bus:
        await bus.append("s", [b"a", b"b", b"c"])
        admin = aioredis.Redis.from_url(redis_url)
        await admin.xtrim(prefix + "s", minid="3-0", approximate=False)  # not in s#meta
        await admin.aclose()
        with pytest.raises(TrimmedError):
            await bus.read("s", 0)
        assert await bus.read("s", 2) == [(3, b"c")]


@aio
async def test_one_read_returns_a_large_batch(redis_url: str, prefix: str) -> None:
    async with RedisBus(redis_url, key_prefix=prefix) as bus:
        await bus.append("s", [b"%d" % i for i in range(1, 5001)])
        got = await bus.read("s", 0, limit=4000)
        assert [seq for seq, _ in got] == list(range(1, 4001))
        assert got[-1] == (4000, b"4000")


# --- key layout, leases, names ------------------------------------------------------------


@aio
async def test_key_layout_is_the_documented_one(redis_url: str, prefix: str) -> None:
    async with RedisBus(redis_url, key_prefix=prefix) as bus:
        lease = await acquired(bus, "me:3", "a")
        stream = "dex:{me:3}:events"
        await bus.append(stream, [b"a", b"b"], lease=lease, expect_last=0)
        await bus.trim(stream, 2)
        await bus.put_snapshot("dex:{me:3}:state", 2, b"S", lease=lease)
        await bus.commit_position(stream, "md", 2)
        admin = aioredis.Redis.from_url(redis_url)
        keys = {k.decode()[len(prefix) :] async for k in admin.scan_iter(match=prefix + "*")}
        assert keys == {
            "dex:{me:3}:events",
            "dex:{me:3}:events#meta",
            "dex:{me:3}:events#positions",
            "dex:{me:3}:state#snapshot",
            "dex:{me:3}:lease",
            "dex:{me:3}:epoch",
        }
        assert {hash_tag(k) for k in keys} == {"me:3"}
        assert await admin.xrange(prefix + stream) == [(b"2-0", {b"d": b"b"})]
        assert await admin.hgetall(prefix + stream + "#meta") == {b"last": b"2", b"trimmed": b"1"}
        assert await admin.pttl(prefix + "dex:{me:3}:lease") > 0
        assert await admin.pttl(prefix + "dex:{me:3}:epoch") == -1  # never expires
        await admin.aclose()


@aio
async def test_lease_expires_by_server_time(redis_url: str, prefix: str) -> None:
    async with RedisBus(redis_url, key_prefix=prefix) as bus:
        a = await acquired(bus, "L", "a", ttl=0.3)
        assert await bus.acquire("L", "b", 10.0) is None
        b = await eventually(
            "b acquiring L once a's lease expired",
            lambda: bus.acquire("L", "b", 10.0),
            timeout=GUARD,
        )
        assert b.epoch == a.epoch + 1
        with pytest.raises(FencedError):
            await bus.append("s", [b"x"], lease=a, expect_last=0)


@aio
async def test_lease_listing_escapes_glob_characters(redis_url: str, prefix: str) -> None:
    async with RedisBus(redis_url, key_prefix=prefix) as bus:
        star = await acquired(bus, "m*[1]", "a")
        await acquired(bus, "mx[1]", "b")
        assert await bus.leases("m*") == [star]
        assert len(await bus.leases("")) == 2


@aio
async def test_names_that_would_share_keys_are_refused(redis_url: str, prefix: str) -> None:
    async with RedisBus(redis_url, key_prefix=prefix) as bus:
        for name in ("s#meta", "s#positions", "s#snapshot", "dex:{L}:lease", "dex:{L}:epoch", ""):
            with pytest.raises(ValueError):
                await bus.append(name, [b"x"])
        with pytest.raises(ValueError):
            await bus.get_snapshot("x#meta")
        with pytest.raises(ValueError):  # `also` streams must share the main stream's slot
            await bus.append("{a}:log", [b"x"], also={"{b}:out": [b"y"]})
        assert await bus.last("{a}:log") == 0


@aio
async def test_snapshot_log_must_share_the_snapshot_hash_tag(redis_url: str, prefix: str) -> None:
    async with RedisBus(redis_url, key_prefix=prefix) as bus:
        lease = await acquired(bus, "me:0", "a")
        await bus.append("dex:{me:1}:events", [b"a"])
        with pytest.raises(ValueError, match="hash tag"):
            await bus.put_snapshot(
                "dex:{me:0}:snapshot", 1, b"x", lease=lease, log="dex:{me:1}:events"
            )
        with pytest.raises(ValueError):  # the name checks apply to `log` too
            await bus.put_snapshot(
                "dex:{me:0}:snapshot", 1, b"x", lease=lease, log="dex:{me:0}:events#meta"
            )
        assert await bus.get_snapshot("dex:{me:0}:snapshot") is None
        await bus.append("dex:{me:0}:events", [b"a"], lease=lease, expect_last=0)
        await bus.put_snapshot("dex:{me:0}:snapshot", 1, b"x", lease=lease, log="dex:{me:0}:events")
        assert await bus.get_snapshot("dex:{me:0}:snapshot") == (1, b"x")


def test_snapshot_beyond_a_log_lost_in_a_restart_is_refused(server: RedisServer) -> None:
    """The reason for `log=`: after a restart from an older AOF the log may end before the
    position a shard snapshots at; the snapshot is refused instead of stored ahead of it."""
    names = {"name": "dex:{me:0}:snapshot", "log": "dex:{me:0}:events"}

    async def before() -> None:
        async with RedisBus(server.url) as bus:
            lease = await acquired(bus, "me:0", "a")
            await bus.append(names["log"], [b"a"], lease=lease, expect_last=0)
            await bus.put_snapshot(names["name"], 1, b"one", lease=lease, log=names["log"])

    async def more() -> None:
        async with RedisBus(server.url) as bus:
            lease = await acquired(bus, "me:0", "a")
            await bus.append(names["log"], [b"b", b"c"], lease=lease, expect_last=1)

    async def after() -> None:
        async with RedisBus(server.url) as bus:
            lease = await acquired(bus, "me:0", "a")
            assert await bus.last(names["log"]) == 1  # 2 and 3 were lost
            with pytest.raises(FencedError, match="last is 1"):
                await bus.put_snapshot(names["name"], 3, b"three", lease=lease, log=names["log"])
            assert await bus.get_snapshot(names["name"]) == (1, b"one")

    asyncio.run(before())
    copy = server.snapshot_aof()
    asyncio.run(more())
    server.restart(from_aof=copy, kill=True)
    asyncio.run(after())


def test_hash_tag_follows_redis_cluster_rules() -> None:
    assert hash_tag("dex:{me:3}:events") == "me:3"
    assert hash_tag("dex:{me:3}:events#meta") == "me:3"
    assert hash_tag("a{}b{c}") == "a{}b{c}"
    assert hash_tag("plain") == "plain"
    assert hash_tag("{a}{b}") == "a"


# --- client handling --------------------------------------------------------------------


def test_client_is_bound_to_one_loop_until_closed(redis_url: str) -> None:
    bus = RedisBus.from_url(redis_url)

    async def use_and_close() -> str:
        try:
            return await bus.identity()
        finally:
            await bus.close()

    async def refused_in_another_loop() -> None:
        with pytest.raises(RuntimeError, match="event loop"):
            await bus.identity()

    assert asyncio.run(use_and_close())
    assert asyncio.run(use_and_close())  # a closed bus makes a new client in the new loop
    with asyncio.Runner() as runner:
        assert runner.run(bus.identity())
        asyncio.run(refused_in_another_loop())
        runner.run(bus.close())


def test_a_given_client_is_used_and_left_open(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        bus = RedisBus(redis_url, client=client, key_prefix=prefix)
        await bus.append("s", [b"a"])
        await bus.close()
        assert await client.ping()
        assert await bus.last("s") == 1
        await client.aclose()

    asyncio.run(scenario())


def test_hiredis_parser_is_available() -> None:
    assert redis.utils.HIREDIS_AVAILABLE

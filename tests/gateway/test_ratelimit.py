"""`dex.gateway.ratelimit`: the token buckets, in memory and shared through Redis.

One contract (`test_contract_*`) runs on both limiters; the memory limiter is then checked
against a plain reference model over fake time (hypothesis), the Redis limiter against what
only a real Redis shows (replicas sharing a bucket, NOSCRIPT, expiry, an unreachable server).
Redis is `DEX_REDIS_URL`, else a private `redis-server` (tests/support/redis_server.py); each
test uses its own key prefix, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from fractions import Fraction
from math import ceil, floor
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from dex.gateway.ratelimit import (
    Bucket,
    Decision,
    MemoryLimiter,
    RateLimiter,
    RateLimitUnavailable,
    RedisLimiter,
    limiter_for,
)
from tests.support.polling import eventually
from tests.support.redis_server import free_port, redis_url_or_skip


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_url_or_skip() as url:
        yield url


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test:rl:{uuid.uuid4().hex}:"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)


# A limiter factory: the contract builds the limiter inside the test's event loop.
Factory = Callable[[], RateLimiter]


@pytest.fixture(params=["memory", "redis"])
def make_limiter(request: pytest.FixtureRequest) -> Factory:
    if request.param == "memory":
        return lambda: MemoryLimiter(clock=FakeClock())
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("prefix")
    return lambda: RedisLimiter(url, prefix=prefix)


@contextlib.asynccontextmanager
async def opened(make: Factory) -> AsyncIterator[RateLimiter]:
    limiter = make()
    try:
        yield limiter
    finally:
        await limiter.close()


# The contract uses refill 1/s and whole-token figures, so the few milliseconds a real Redis
# clock moves during a test never change an answer.


def test_contract_capacity_then_refusal(make_limiter: Factory) -> None:
    async def run() -> list[Decision]:
        async with opened(make_limiter) as limiter:
            bucket = Bucket("public", 5, 1)
            return [await limiter.take(bucket, "10.0.0.1") for _ in range(6)]

    decisions = asyncio.run(run())

    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert all(d.limit == 5 for d in decisions)
    assert decisions[0].reset_s == 1  # one token short of full, refilled at 1/s
    assert decisions[4].reset_s == 5
    assert decisions[5].retry_after_s == 1
    assert [d.retry_after_s for d in decisions[:5]] == [0] * 5


def test_contract_weights_and_refused_take_nothing(make_limiter: Factory) -> None:
    async def run() -> list[Decision]:
        async with opened(make_limiter) as limiter:
            bucket = Bucket("orders", 10, 1)
            return [await limiter.take(bucket, "acct", cost) for cost in (3, 3, 3, 3, 1)]

    decisions = asyncio.run(run())

    assert [d.allowed for d in decisions] == [True, True, True, False, True]
    assert [d.remaining for d in decisions] == [7, 4, 1, 1, 0]
    assert decisions[3].retry_after_s == 2  # 2 more tokens at 1/s
    assert decisions[3].reset_s == 9


def test_contract_cost_above_capacity_is_always_refused(make_limiter: Factory) -> None:
    async def run() -> list[Decision]:
        async with opened(make_limiter) as limiter:
            bucket = Bucket("private", 10, 3)
            return [
                await limiter.take(bucket, "acct", 11),
                await limiter.take(bucket, "acct", 10),
                await limiter.take(bucket, "acct", 11),
            ]

    too_big, whole, again = asyncio.run(run())

    assert not too_big.allowed
    assert too_big.remaining == 10  # took nothing from a full bucket
    assert too_big.retry_after_s == 4  # documented: ceil(capacity / refill), an empty fill
    assert whole.allowed and whole.remaining == 0
    assert not again.allowed and again.retry_after_s == 4


def test_contract_keys_and_buckets_are_independent(make_limiter: Factory) -> None:
    async def run() -> list[Decision]:
        async with opened(make_limiter) as limiter:
            public, private = Bucket("public", 2, 1), Bucket("private", 2, 1)
            await limiter.take(public, "a", 2)
            return [
                await limiter.take(public, "a"),
                await limiter.take(public, "b"),
                await limiter.take(private, "a"),
            ]

    same, other_key, other_bucket = asyncio.run(run())

    assert not same.allowed
    assert other_key.allowed and other_key.remaining == 1
    assert other_bucket.allowed and other_bucket.remaining == 1


def test_contract_largest_figures_stay_exact(make_limiter: Factory) -> None:
    # 999_999_999 tokens are ~1e15 micro-tokens: within the 2^53 a Lua number holds exactly
    top = 999_999_999

    async def run() -> list[Decision]:
        async with opened(make_limiter) as limiter:
            bucket = Bucket("public", top, 1)
            return [
                await limiter.take(bucket, "k", top - 1),
                await limiter.take(bucket, "k", 2),
                await limiter.take(bucket, "k", 1),
            ]

    most, refused, last = asyncio.run(run())

    assert most.allowed and most.remaining == 1 and most.reset_s == top - 1
    assert not refused.allowed and refused.retry_after_s == 1 and refused.remaining == 1
    assert last.allowed and last.remaining == 0 and last.reset_s == top


@pytest.mark.parametrize("cost", [0, -1, True, 1.0, 1_000_000_000])
def test_contract_bad_cost_is_refused(make_limiter: Factory, cost: Any) -> None:
    async def run() -> None:
        async with opened(make_limiter) as limiter:
            await limiter.take(Bucket("public", 5, 1), "k", cost)

    with pytest.raises(ValueError, match="cost"):
        asyncio.run(run())


def test_contract_bad_key_is_refused(make_limiter: Factory) -> None:
    async def run() -> None:
        async with opened(make_limiter) as limiter:
            await limiter.take(Bucket("public", 5, 1), "")

    with pytest.raises(ValueError, match="key"):
        asyncio.run(run())


# --- values ---------------------------------------------------------------------------------


def test_bucket_parse_reads_settings_format() -> None:
    assert Bucket.parse("orders", "300/100") == Bucket("orders", 300, 100)
    assert Bucket.parse("public", "1200/20") == Bucket("public", 1200, 20)


@pytest.mark.parametrize(
    "text", ["", "1200", "1200/", "/20", "0/20", "20/0", "-1/2", "1.5/2", "1/2/3", " 1/2", "1e3/2"]
)
def test_bucket_parse_refuses_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="bucket 'public'"):
        Bucket.parse("public", text)


@pytest.mark.parametrize(
    ("name", "capacity", "refill", "field"),
    [
        ("", 1, 1, "name"),
        ("Public", 1, 1, "name"),
        ("a:b", 1, 1, "name"),
        ("public", 0, 1, "capacity"),
        ("public", 1, 0, "refill"),
        ("public", 1_000_000_000, 1, "capacity"),
        ("public", 1.0, 1, "capacity"),
    ],
)
def test_bucket_refuses_bad_fields(name: str, capacity: Any, refill: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Bucket(name, capacity, refill)


def test_headers_within_and_over_the_limit() -> None:
    ok = Decision(allowed=True, limit=10, remaining=7, reset_s=2, retry_after_s=0)
    refused = Decision(allowed=False, limit=10, remaining=0, reset_s=5, retry_after_s=1)

    assert ok.headers() == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "7",
        "X-RateLimit-Reset": "2",
    }
    assert refused.headers() == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "5",
        "Retry-After": "1",
    }


def test_limiter_for_picks_by_url() -> None:
    async def run() -> tuple[RateLimiter, RateLimiter]:
        memory, shared = limiter_for(""), limiter_for("redis://127.0.0.1:1/0")
        await memory.close()
        await shared.close()
        return memory, shared

    memory, shared = asyncio.run(run())

    assert isinstance(memory, MemoryLimiter)
    assert isinstance(shared, RedisLimiter)


@pytest.mark.parametrize("target", ["http://cache:6379", "127.0.0.1:6379", 6379])
def test_redis_limiter_refuses_what_is_not_redis(target: Any) -> None:
    with pytest.raises(ValueError, match="redis"):
        RedisLimiter(target)


# --- memory ---------------------------------------------------------------------------------


def test_memory_refills_over_time_and_rounds_up() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock)
    bucket = Bucket("public", 10, 3)

    async def run() -> list[Decision]:
        out = [await limiter.take(bucket, "ip", 10), await limiter.take(bucket, "ip")]
        clock.now += 0.2  # 0.6 token: still short of one
        out.append(await limiter.take(bucket, "ip"))
        clock.now += 0.2  # 1.2 tokens
        out.append(await limiter.take(bucket, "ip"))
        clock.now += 100  # long idle: full, never more
        out.append(await limiter.take(bucket, "ip"))
        return out

    emptied, refused, still, refilled, idle = asyncio.run(run())

    assert emptied.allowed and emptied.reset_s == 4  # ceil(10 / 3)
    assert not refused.allowed and refused.retry_after_s == 1
    assert not still.allowed and still.retry_after_s == 1 and still.remaining == 0
    assert refilled.allowed and refilled.remaining == 0
    assert idle.allowed and idle.remaining == 9


def test_memory_no_rounding_lets_an_extra_request_through() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock)
    bucket = Bucket("orders", 1, 3)  # a token every 1/3 s: never a whole number of ms

    async def run() -> list[Decision]:
        out = [await limiter.take(bucket, "acct")]
        for _ in range(3):
            clock.now += 0.333  # 0.999 token
            out.append(await limiter.take(bucket, "acct"))
            clock.now += 0.001  # 1.002 tokens
            out.append(await limiter.take(bucket, "acct"))
        return out

    decisions = asyncio.run(run())

    assert [d.allowed for d in decisions] == [True] + [False, True] * 3


def test_memory_clock_stepping_back_adds_nothing() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock)
    bucket = Bucket("public", 2, 1)

    async def run() -> list[Decision]:
        await limiter.take(bucket, "ip", 2)
        clock.now -= 50
        first = await limiter.take(bucket, "ip")
        clock.now += 50.5  # back to half a second after the bucket's last time
        return [first, await limiter.take(bucket, "ip")]

    back, later = asyncio.run(run())

    assert not back.allowed
    assert not later.allowed and later.retry_after_s == 1


def test_memory_is_bounded_by_the_buckets_not_yet_full() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock, sweep_floor=16)
    bucket = Bucket("public", 1, 1)  # full again 1 s after a take
    sizes: list[int] = []

    async def run() -> None:
        for i in range(5000):
            if i % 10 == 0:
                clock.now += 1
            await limiter.take(bucket, f"10.0.{i // 256}.{i % 256}")
            sizes.append(len(limiter))

    asyncio.run(run())

    # at most 10 buckets are not full at any time; the table holds at most twice that or the
    # floor (plus the one that triggers a sweep)
    assert max(sizes) <= 32
    assert len(limiter) >= 1


def test_memory_forgets_nothing_that_is_not_full() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock, sweep_floor=1)
    bucket = Bucket("public", 3, 1)

    async def run() -> list[Decision]:
        await limiter.take(bucket, "a", 3)
        for i in range(100):  # each take sweeps the table
            await limiter.take(bucket, f"other-{i}")
        return [await limiter.take(bucket, "a")]

    (again,) = asyncio.run(run())

    assert not again.allowed


@pytest.mark.parametrize("floor_", [0, -1, 1.5])
def test_memory_refuses_bad_sweep_floor(floor_: Any) -> None:
    with pytest.raises(ValueError, match="sweep_floor"):
        MemoryLimiter(sweep_floor=floor_)


class ReferenceBucket:
    """The token bucket as written in a textbook, in exact fractions."""

    def __init__(self, capacity: int, refill: int, now: Fraction) -> None:
        self.capacity, self.refill = capacity, refill
        self.tokens, self.at = Fraction(capacity), now

    def take(self, now: Fraction, cost: int) -> tuple[bool, int, int, int]:
        if now > self.at:
            self.tokens = min(Fraction(self.capacity), self.tokens + (now - self.at) * self.refill)
            self.at = now
        allowed = cost <= self.capacity and cost <= self.tokens
        if allowed:
            self.tokens -= cost
            retry = 0
        elif cost > self.capacity:
            retry = ceil(Fraction(self.capacity, self.refill))
        else:
            retry = max(1, ceil((cost - self.tokens) / self.refill))
        reset = ceil((self.capacity - self.tokens) / self.refill)
        return allowed, floor(self.tokens), reset, retry


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 40),
    refill=st.integers(1, 15),
    steps=st.lists(
        st.tuples(
            st.one_of(st.integers(0, 5), st.integers(0, 3000)),  # ms: near boundaries, and far
            st.integers(1, 45),
            st.sampled_from(["a", "b", "c"]),
        ),
        max_size=60,
    ),
)
def test_memory_agrees_with_reference_and_never_over_grants(
    capacity: int, refill: int, steps: list[tuple[int, int, str]]
) -> None:
    clock = FakeClock()
    start_ms = 1_000_000
    limiter = MemoryLimiter(clock=clock, sweep_floor=1)  # sweeping at every take
    bucket = Bucket("private", capacity, refill)
    reference: dict[str, ReferenceBucket] = {}
    granted: dict[str, list[tuple[int, int]]] = {}  # key -> (time in ms, cost) allowed

    async def run() -> None:
        now_ms = start_ms
        for advance_ms, cost, key in steps:
            now_ms += advance_ms
            clock.now = now_ms / 1000
            now = Fraction(now_ms, 1000)
            model = reference.setdefault(key, ReferenceBucket(capacity, refill, now))
            decision = await limiter.take(bucket, key, cost)
            expected = model.take(now, cost)
            got = (decision.allowed, decision.remaining, decision.reset_s, decision.retry_after_s)
            assert got == expected
            assert decision.limit == capacity
            if decision.allowed:
                granted.setdefault(key, []).append((now_ms, cost))

    asyncio.run(run())

    for grants in granted.values():
        for i in range(len(grants)):
            for j in range(i, len(grants)):
                window = Fraction(grants[j][0] - grants[i][0], 1000)
                assert sum(c for _, c in grants[i : j + 1]) <= capacity + refill * window


# --- Redis ----------------------------------------------------------------------------------


def test_redis_two_replicas_share_one_bucket(redis_url: str, prefix: str) -> None:
    bucket = Bucket("public", 30, 1)

    async def run() -> tuple[int, float]:
        replicas = [RedisLimiter(redis_url, prefix=prefix) for _ in range(2)]
        started = time.monotonic()
        allowed = 0
        for i in range(90):
            allowed += (await replicas[i % 2].take(bucket, "203.0.113.7")).allowed
        elapsed = time.monotonic() - started
        for replica in replicas:
            await replica.close()
        return allowed, elapsed

    allowed, elapsed = asyncio.run(run())

    # the server's clock ran at most as long as ours did between the first and last call
    assert capacity_plus_refill(bucket, elapsed) >= allowed >= bucket.capacity


def capacity_plus_refill(bucket: Bucket, elapsed: float) -> int:
    return bucket.capacity + floor(bucket.refill * elapsed)


def test_redis_one_script_call_per_take(redis_url: str, prefix: str) -> None:
    bucket = Bucket("public", 10, 1)

    async def run() -> list[tuple[Any, ...]]:
        client = aioredis.Redis.from_url(redis_url)
        calls: list[tuple[Any, ...]] = []
        original = client.execute_command

        async def counted(*args: Any, **options: Any) -> Any:
            calls.append(args)
            return await original(*args, **options)

        client.execute_command = counted  # type: ignore[method-assign]
        limiter = RedisLimiter(client, prefix=prefix)
        await limiter.take(bucket, "k")  # may load the script (first use on this server)
        calls.clear()
        for _ in range(5):
            await limiter.take(bucket, "k")
        await limiter.close()
        await client.aclose()
        return calls

    calls = asyncio.run(run())

    assert [c[0] for c in calls] == ["EVALSHA"] * 5


def test_redis_recovers_from_noscript(redis_url: str, prefix: str) -> None:
    bucket = Bucket("orders", 10, 1)

    async def run() -> tuple[Decision, Decision, list[bool]]:
        limiter = RedisLimiter(redis_url, prefix=prefix)
        first = await limiter.take(bucket, "acct", 4)
        admin = aioredis.Redis.from_url(redis_url)
        await admin.script_flush()
        second = await limiter.take(bucket, "acct", 4)
        known = await admin.script_exists(limiter._script.sha)
        await admin.aclose()
        await limiter.close()
        return first, second, known

    first, second, known = asyncio.run(run())

    assert first.allowed and first.remaining == 6
    assert second.allowed and second.remaining == 2  # the bucket survived the flush
    assert known == [True]


def test_redis_keys_expire_once_full(redis_url: str, prefix: str) -> None:
    async def run() -> tuple[int, int, bool]:
        limiter = RedisLimiter(redis_url, prefix=prefix)
        admin = aioredis.Redis.from_url(redis_url)
        await limiter.take(Bucket("public", 5, 2), "slow", 3)  # full again in 1.5 s
        slow_ttl = await admin.pttl(f"{prefix}public:slow")
        await limiter.take(Bucket("public", 5, 2), "big", 6)  # refused, nothing taken
        big_exists = await admin.exists(f"{prefix}public:big")
        await limiter.take(Bucket("private", 1, 1000), "fast")  # full again in 1 ms
        gone = await eventually(
            "the fast bucket's key to expire",
            lambda: _absent(admin, f"{prefix}private:fast"),
            timeout=5,
        )
        await admin.aclose()
        await limiter.close()
        return slow_ttl, big_exists, gone

    slow_ttl, big_exists, gone = asyncio.run(run())

    assert 0 < slow_ttl <= 1500
    assert big_exists == 0
    assert gone


async def _absent(client: aioredis.Redis, key: str) -> bool:
    return await client.exists(key) == 0


def test_redis_refused_port_raises_unavailable() -> None:
    async def run() -> None:
        limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0")
        try:
            await limiter.take(Bucket("public", 5, 1), "ip")
        finally:
            await limiter.close()

    with pytest.raises(RateLimitUnavailable, match="Redis unavailable"):
        asyncio.run(run())


def test_redis_silent_server_raises_unavailable_instead_of_hanging() -> None:
    # a socket that accepts connections (the kernel's backlog) and never answers
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]

        async def run() -> None:
            limiter = RedisLimiter(f"redis://127.0.0.1:{port}/0")
            try:
                # the guard only stops a hang from stalling the suite; the client's own
                # 1 s timeout is what must fire
                await asyncio.wait_for(limiter.take(Bucket("public", 5, 1), "ip"), 30)
            finally:
                await limiter.close()

        with pytest.raises(RateLimitUnavailable):
            asyncio.run(run())

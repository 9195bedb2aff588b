"""Token-bucket rate limits for the gateway: in memory (embedded) or shared through Redis.

Owns: the buckets (`Bucket`: `capacity` tokens, refilled continuously at `refill` tokens per
second), one decision per request (`Decision`, and the response headers it implies), and
two limiters behind one protocol (`RateLimiter`): `MemoryLimiter` for one process and
`RedisLimiter` for gateway replicas that share a Redis. Which routes use which bucket, and
turning a refusal into a 429 (or a `RateLimitUnavailable` into a 503), is the routes' job.

Why not a library: `limits` (PyPI, the well-kept choice) offers fixed window, moving window
and sliding-window counter strategies, not a token bucket with a capacity and a refill rate
set independently (its token-bucket pull requests #24 and #234 were closed unmerged; #364 is
open and unreleased), so it could not give "1200 tokens, 20 per second" nor the time until a
bucket is full again.

Invariants (both limiters compute exactly the same figures):
- Token arithmetic is integers: a bucket's level is kept in micro-tokens (1 token =
  1_000_000) and time in microseconds, so `refill` tokens/s add exactly `refill` micro-tokens
  per microsecond. No rounding, no drift: tokens granted over any window never exceed
  `capacity + refill * elapsed`.
- A bucket nobody has touched is full; a refused request takes nothing.
- A request costing more than the capacity is always refused (it could never be served);
  its `retry_after_s` is the time an empty bucket takes to fill, `ceil(capacity / refill)`,
  the same for every such request, and retrying will not help.
- A bucket is forgotten once it would be full again (Redis: the key's PEXPIRE; memory: a
  sweep), which is the same as keeping it, so idle clients cost nothing.
- A clock that steps back adds no tokens (the bucket keeps its newest time).

Complexity: O(1) per `take`; `MemoryLimiter` sweeps in amortised O(1) and holds at most about
twice the number of buckets touched within one fill period (`capacity / refill` seconds).
`RedisLimiter` makes one round trip per `take`: EVALSHA of one Lua script that reads the
server's TIME, refills, takes and sets the expiry; NOSCRIPT (a restarted or flushed Redis)
costs one SCRIPT LOAD and a second EVALSHA.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from dex.runtime.settings import rate_bucket

UNIT = 1_000_000  # micro-tokens per token, and microseconds per second
MAX_FIGURE = 999_999_999  # largest capacity/refill (DEX_RATE_LIMIT_* allow 9 digits)
DEFAULT_PREFIX = "dex:rl:"
REDIS_TIMEOUT_S = 1.0  # connect and socket timeout of a client built from a URL

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_TEXT = re.compile(r"[0-9]{1,9}/[0-9]{1,9}")


class RateLimitUnavailable(Exception):
    """The shared limiter could not be asked (Redis unreachable or too slow): answer 503."""


@dataclass(frozen=True)
class Bucket:
    """`capacity` tokens, refilled at `refill` tokens per second; `name` keys its state."""

    name: str  # "public" | "private" | "orders"
    capacity: int
    refill: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"bucket name must match {_NAME.pattern}, got {self.name!r}")
        for field in ("capacity", "refill"):
            value = getattr(self, field)
            if type(value) is not int or not 1 <= value <= MAX_FIGURE:
                raise ValueError(
                    f"bucket {self.name!r}: {field} must be an int in 1..{MAX_FIGURE}, "
                    f"got {value!r}"
                )

    @classmethod
    def parse(cls, name: str, text: str) -> Bucket:
        """A bucket from a `DEX_RATE_LIMIT_*` value, `<capacity>/<refill per second>`."""
        if not isinstance(text, str) or not _TEXT.fullmatch(text):
            raise ValueError(
                f"bucket {name!r}: expected <capacity>/<refill per second>, got {text!r}"
            )
        capacity, refill = rate_bucket(text)
        return cls(name, capacity, refill)


@dataclass(frozen=True)
class Decision:
    """The outcome of one `take`, with the figures the response headers carry."""

    allowed: bool
    limit: int  # the bucket's capacity
    remaining: int  # whole tokens left after this request
    reset_s: int  # seconds until the bucket is full again (ceil)
    retry_after_s: int  # refused: seconds until `cost` tokens are there (ceil, >= 1); else 0

    def headers(self) -> dict[str, str]:
        """X-RateLimit-Limit/-Remaining/-Reset, and Retry-After when refused."""
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after_s)
        return out


class RateLimiter(Protocol):
    async def take(self, bucket: Bucket, key: str, cost: int = 1) -> Decision: ...

    async def close(self) -> None: ...


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check(key: str, cost: int) -> None:
    if not isinstance(key, str) or key == "":
        raise ValueError(f"rate-limit key must be a non-empty str, got {key!r}")
    if type(cost) is not int or not 1 <= cost <= MAX_FIGURE:
        raise ValueError(f"rate-limit cost must be an int in 1..{MAX_FIGURE}, got {cost!r}")


def _decide(bucket: Bucket, level: int, cost: int) -> tuple[Decision, int]:
    """Take `cost` from a bucket refilled to `level` micro-tokens: the decision, new level."""
    allowed = cost <= bucket.capacity and level >= cost * UNIT
    if allowed:
        level -= cost * UNIT
        retry = 0
    elif cost > bucket.capacity:
        retry = max(1, _ceil_div(bucket.capacity, bucket.refill))
    else:
        retry = max(1, _ceil_div(cost * UNIT - level, bucket.refill * UNIT))
    decision = Decision(
        allowed=allowed,
        limit=bucket.capacity,
        remaining=level // UNIT,
        reset_s=_ceil_div(bucket.capacity * UNIT - level, bucket.refill * UNIT),
        retry_after_s=retry,
    )
    return decision, level


class MemoryLimiter:
    """Buckets in this process (embedded mode); exact, and atomic per `take` (no await).

    `clock` returns seconds (monotonic by default); it is read once per `take` and rounded
    to microseconds. Buckets that are full again are dropped by a sweep that runs when the
    table has doubled since the last one (and holds at least `sweep_floor` buckets), so the
    table stays within about twice the buckets that are not full.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, sweep_floor: int = 1024
    ) -> None:
        if type(sweep_floor) is not int or sweep_floor < 1:
            raise ValueError(f"sweep_floor must be an int >= 1, got {sweep_floor!r}")
        self._clock = clock
        self._floor = sweep_floor
        self._next_sweep = sweep_floor
        # (bucket name, key) -> (level in micro-tokens, its time in µs, full-again time in µs)
        self._states: dict[tuple[str, str], tuple[int, int, int]] = {}

    def __len__(self) -> int:
        """How many buckets are held (full ones may linger until the next sweep)."""
        return len(self._states)

    async def take(self, bucket: Bucket, key: str, cost: int = 1) -> Decision:
        _check(key, cost)
        now = round(self._clock() * UNIT)
        full = bucket.capacity * UNIT
        state = self._states.get((bucket.name, key))
        if state is None:
            level, at = full, now
        else:
            level, at, _ = state
            level = min(level, full)  # the capacity may have been lowered since
            if now > at:
                level = min(full, level + (now - at) * bucket.refill)
                at = now
        decision, level = _decide(bucket, level, cost)
        if level >= full:
            self._states.pop((bucket.name, key), None)
        else:
            full_at = at + _ceil_div(full - level, bucket.refill)
            self._states[(bucket.name, key)] = (level, at, full_at)
            if len(self._states) >= self._next_sweep:
                self._sweep(now)
        return decision

    def _sweep(self, now: int) -> None:
        self._states = {k: s for k, s in self._states.items() if s[2] > now}
        self._next_sweep = max(self._floor, 2 * len(self._states))

    async def close(self) -> None:
        self._states.clear()


# KEYS[1]: the bucket's hash {l: level in micro-tokens, t: its time in µs}.
# ARGV: capacity, refill per second, cost (whole tokens). Returns {allowed, remaining,
# reset_s, retry_after_s}. Lua numbers are doubles: every value here stays below 2^53
# (levels <= 1e15, times ~1.7e15 µs) and the divisions are corrected to exact integers.
# TIME is the server's clock, so replicas whose own clocks disagree still share one bucket.
_SCRIPT = """
local function floor_div(a, b)
  local q = math.floor(a / b)
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  return q
end
local function ceil_div(a, b)
  local q = floor_div(a, b)
  if q * b < a then q = q + 1 end
  return q
end
local unit = 1000000
local capacity = tonumber(ARGV[1])
local refill = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * unit + tonumber(clock[2])
local full = capacity * unit
local level, at = full, now
local state = redis.call('HMGET', KEYS[1], 'l', 't')
if state[1] and state[2] then
  level = math.min(tonumber(state[1]), full)
  at = tonumber(state[2])
  if now > at then
    -- a product past 2^53 is inexact but still far above any deficit, so still "full"
    if (now - at) * refill >= full - level then level = full
    else level = level + (now - at) * refill end
    at = now
  end
end
local allowed, retry = 0, 0
if cost <= capacity and level >= cost * unit then
  allowed = 1
  level = level - cost * unit
elseif cost > capacity then
  retry = math.max(1, ceil_div(capacity, refill))
else
  retry = math.max(1, ceil_div(cost * unit - level, refill * unit))
end
if level >= full then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'l', string.format('%d', level), 't', string.format('%d', at))
  -- expire when full again (from `at`, which may be ahead of `now` after a clock step back)
  local full_in_us = (at - now) + ceil_div(full - level, refill)
  redis.call('PEXPIRE', KEYS[1], math.max(1, ceil_div(full_in_us, 1000)))
end
return {allowed, floor_div(level, unit), ceil_div(full - level, refill * unit), retry}
"""


class RedisLimiter:
    """Buckets in Redis, shared by every gateway replica (distributed mode).

    `redis` is a URL (a client is built with a `REDIS_TIMEOUT_S` connect/socket timeout and
    no retries, and closed by `close`) or a `redis.asyncio.Redis` client (its owner closes
    it; its timeouts bound `take`). Keys are `<prefix><bucket name>:<key>`. When Redis cannot
    be reached or does not answer in time, `take` raises `RateLimitUnavailable`.
    """

    def __init__(self, redis: str | Redis, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(prefix, str):
            raise ValueError(f"key prefix must be a str, got {prefix!r}")
        if isinstance(redis, str):
            if not redis.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(
                    f"redis URL must start with redis://, rediss:// or unix://, got {redis!r}"
                )
            self._client: Redis = Redis.from_url(
                redis,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
            )
            self._owns = True
        elif isinstance(redis, Redis):
            self._client, self._owns = redis, False
        else:
            raise ValueError(f"expected a redis URL or a redis.asyncio.Redis, got {redis!r}")
        self._prefix = prefix
        # redis-py's Script: EVALSHA, and on NOSCRIPT one SCRIPT LOAD and EVALSHA again
        self._script = self._client.register_script(_SCRIPT)

    async def take(self, bucket: Bucket, key: str, cost: int = 1) -> Decision:
        _check(key, cost)
        name = f"{self._prefix}{bucket.name}:{key}"
        try:
            reply = await self._script(keys=[name], args=[bucket.capacity, bucket.refill, cost])
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            raise RateLimitUnavailable(f"rate limiter: Redis unavailable ({exc})") from exc
        allowed, remaining, reset_s, retry = (int(v) for v in reply)
        return Decision(
            allowed=allowed == 1,
            limit=bucket.capacity,
            remaining=remaining,
            reset_s=reset_s,
            retry_after_s=retry,
        )

    async def close(self) -> None:
        if self._owns:
            await self._client.aclose()


def limiter_for(redis_url: str) -> RateLimiter:
    """The limiter for a deployment: in memory when `redis_url` is "", else shared in Redis."""
    if redis_url == "":
        return MemoryLimiter()
    return RedisLimiter(redis_url)

"""`RedisBus`: the `Bus` on Redis Streams (Redis >= 7, redis-py asyncio with hiredis).

Owns the mapping of the bus contract (`dex.bus.base`) onto Redis keys and Lua scripts. Every
write that must be atomic or fenced is one script run on the server: a script runs alone, so
its checks and its writes cannot interleave with another client's. Scripts are registered with
`register_script` (EVALSHA, reloaded automatically on NOSCRIPT, e.g. after a Redis restart);
write scripts carry a `#!lua` shebang so that, with `maxmemory-policy noeviction`, an
out-of-memory server refuses the whole script up front instead of failing half-way through.

Key layout (`P` is the optional `key_prefix`, empty in production):

- `P<stream>`: the Redis stream. Entry `log_seq = n` has id `n-0` and one field `d` holding
  the entry, so `log_seq` is read back from the id.
- `P<stream>#meta`: hash, `last` = the stream's last `log_seq` (0 or absent before the
  first append) and `trimmed` = the highest trimmed `log_seq` (0 or absent if none). Both
  survive trimming (even of every entry) and are written by the same script as the entries,
  so after an AOF reload they agree with the stream.
- `P<stream>#positions`: hash, reader -> highest committed `log_seq`.
- `P<snapshot>#snapshot`: hash, `seq` = the snapshot's `log_seq`, `data` = its bytes.
- `Pdex:{<lease>}:lease`: hash, `owner`, `epoch` and `expires` (absolute, in milliseconds of
  server time, see below); the key also carries a PEXPIREAT at `expires` + `LEASE_KEEP` for
  clean-up (until then an expired lease nobody acquired is still its holder's, see
  `dex.bus.base`).
- `Pdex:{<lease>}:epoch`: the lease's epoch counter (INCR, never expires).

Helper keys append a suffix to the stream's name, so they keep its hash tag: callers name
shard streams with a tag (`dex:{me:3}:events`) and name the shard's lease after the tag
(`me:3`), so a fenced append touches one Cluster slot. Stream and snapshot names that end in a
reserved suffix (`#meta`, `#positions`, `#snapshot`) or look like lease keys are refused with
`ValueError`, so no two names share a key. Streams passed as `also` must have the main
stream's hash tag (`ValueError` otherwise), as they would need on a Cluster; likewise a snapshot
and the `log` stream it is checked against (`put_snapshot(..., log=)`, e.g. `dex:{me:0}:snapshot`
and `dex:{me:0}:events`). `leases()` uses SCAN and therefore sees one node only: it is for a
single Redis, not a Cluster.

Invariants: `trimmed <= last`; entries `trimmed + 1 .. last` are in the stream; epoch counters
only grow; a refused script writes nothing.

Lease time is decided by the Redis server, never by this process's clock: acquire and renew
read `redis.call('TIME')`; another owner may acquire a lease once `expires <= now`. Fenced
writes, renew and release check only that the key still names the caller's owner and epoch
(the epoch fences, the clock does not: `dex.bus.base`), so a holder whose renewals all reached
a stalled server late keeps its lease. For tests only, `clock_offset` (seconds, default none =
0) is added to the server's time in those comparisons and when computing `expires`, so a
`FakeClock` can move lease time forward without sleeping. The key's PEXPIREAT is `expires` +
`LEASE_KEEP`; with a non-decreasing offset the key therefore never disappears before the lease
has logically expired, so the stored `expires` stays authoritative.

Reads: one MULTI/EXEC returns, per stream, the trimmed point and up to `limit` entries
(XRANGE COUNT) in one round trip, so the check and the entries agree (plain commands: a Lua
script would copy every entry into Lua and back, which costs the server more than the read).
When there are none and `timeout > 0`, a blocking XREAD (BLOCK in slices of at most a second,
on its own pooled connection, so other coroutines sharing the bus are not held up) waits for
entries after the position and returns them (up to `limit`), so a reader that was waiting
needs no second round trip.

Errors: a refused fenced write raises `FencedError`, a read below the trimmed point
`TrimmedError`; connection errors from redis-py propagate unchanged. The client made by this
class does not retry commands (a retried append could be applied twice); after a connection
error the outcome of a write is unknown and the caller must re-read `last`.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from dex.bus.base import Bus, FencedError, Lease, TrimmedError

_RESERVED_SUFFIXES = ("#meta", "#positions", "#snapshot")
_LEASE_KEY = re.compile(r"dex:\{.*\}:(lease|epoch)", re.DOTALL)
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_BLOCK_SLICE = 1.0  # longest single XREAD BLOCK, in seconds
LEASE_KEEP = 600.0  # seconds a lease key outlives its expiry (an expired lease is renewable)

# Shared Lua helpers, placed after each write script's shebang line.
_LUA_LEASE = f"""
local KEEP_MS = {round(LEASE_KEEP * 1000)}
local function now_ms(offset)
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(offset)
end
local function held(key, owner, epoch)
  local h = redis.call('HMGET', key, 'owner', 'epoch')
  return h[1] == owner and h[2] == epoch
end
local function expire_at(key, expires)
  redis.call('PEXPIREAT', key, string.format('%d', expires + KEEP_MS))
end
"""

# KEYS: [lease], stream_1, meta_1, stream_2, meta_2, ...  (stream_1 is the main stream)
# ARGV: has_lease, owner, epoch, offset_ms, expect_last ('' = unchecked), then for each stream
#       in KEYS order: count, entry_1 .. entry_count
# Returns {1, main_last} or {0, reason}.
_APPEND = (
    "#!lua\n"
    + _LUA_LEASE
    + """
local k = 1
if ARGV[1] == '1' then
  if not held(KEYS[1], ARGV[2], ARGV[3]) then
    return {0, 'lease'}
  end
  k = 2
end
if ARGV[5] ~= '' then
  local last = tonumber(redis.call('HGET', KEYS[k + 1], 'last') or '0')
  if last ~= tonumber(ARGV[5]) then
    return {0, 'last', last}
  end
end
local a = 6
local main_last = 0
for s = k, #KEYS - 1, 2 do
  local n = tonumber(ARGV[a])
  a = a + 1
  local seq = tonumber(redis.call('HGET', KEYS[s + 1], 'last') or '0')
  for i = 1, n do
    seq = seq + 1
    redis.call('XADD', KEYS[s], string.format('%d-0', seq), 'd', ARGV[a])
    a = a + 1
  end
  redis.call('HSET', KEYS[s + 1], 'last', string.format('%d', seq))
  if s == k then
    main_last = seq
  end
end
return {1, main_last}
"""
)

# KEYS: stream, meta. ARGV: below.
_TRIM = """#!lua
local last = tonumber(redis.call('HGET', KEYS[2], 'last') or '0')
local trimmed = tonumber(redis.call('HGET', KEYS[2], 'trimmed') or '0')
local upto = math.min(tonumber(ARGV[1]) - 1, last)
if upto > trimmed then
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-0', upto + 1))
  redis.call('HSET', KEYS[2], 'trimmed', string.format('%d', upto))
end
return 0
"""

# KEYS: lease, epoch counter. ARGV: owner, ttl_ms, offset_ms. Returns {1, epoch} or {0}.
_ACQUIRE = (
    "#!lua\n"
    + _LUA_LEASE
    + """
local now = now_ms(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'owner', 'expires')
if h[1] ~= false and h[1] ~= ARGV[1] and h[2] ~= false and tonumber(h[2]) > now then
  return {0}
end
local epoch = redis.call('INCR', KEYS[2])
local expires = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', string.format('%d', epoch),
  'expires', string.format('%d', expires))
expire_at(KEYS[1], expires)
return {1, epoch}
"""
)

# KEYS: lease. ARGV: owner, epoch, ttl_ms, offset_ms. Returns 1 if renewed, else 0.
_RENEW = (
    "#!lua\n"
    + _LUA_LEASE
    + """
if not held(KEYS[1], ARGV[1], ARGV[2]) then
  return 0
end
local expires = now_ms(ARGV[4]) + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'expires', string.format('%d', expires))
expire_at(KEYS[1], expires)
return 1
"""
)

# KEYS: lease. ARGV: owner, epoch, offset_ms.
_RELEASE = (
    "#!lua\n"
    + _LUA_LEASE
    + """
if held(KEYS[1], ARGV[1], ARGV[2]) then
  redis.call('DEL', KEYS[1])
end
return 0
"""
)

# KEYS: lease, snapshot, [log_meta] (the `#meta` of the stream the snapshot must not be
#       beyond; absent = unchecked). ARGV: owner, epoch, offset_ms, log_seq, data.
# Returns {1}, {0, 'lease'} or {0, 'log', log_last} (log_last < log_seq).
_PUT_SNAPSHOT = (
    "#!lua\n"
    + _LUA_LEASE
    + """
if not held(KEYS[1], ARGV[1], ARGV[2]) then
  return {0, 'lease'}
end
if #KEYS >= 3 then
  local last = tonumber(redis.call('HGET', KEYS[3], 'last') or '0')
  if last < tonumber(ARGV[4]) then
    return {0, 'log', last}
  end
end
redis.call('HSET', KEYS[2], 'seq', ARGV[4], 'data', ARGV[5])
return {1}
"""
)

# KEYS: positions. ARGV: reader, log_seq.
_COMMIT_POSITION = """#!lua
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur == false or tonumber(cur) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 0
"""


def hash_tag(key: str) -> str:
    """The part of `key` Redis Cluster hashes: the first non-empty `{...}`, else all of it."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def _check_name(kind: str, name: str) -> None:
    if not name:
        raise ValueError(f"{kind} name must not be empty")
    if name.endswith(_RESERVED_SUFFIXES) or _LEASE_KEY.fullmatch(name):
        raise ValueError(f"{kind} name {name!r} collides with the bus's own keys")


def _ttl_ms(ttl: float) -> int:
    if not ttl > 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")
    return max(1, round(ttl * 1000))


def _glob_escape(text: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", text)


class _Scripts:
    """The Lua scripts, registered on one client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.append = client.register_script(_APPEND)
        self.trim = client.register_script(_TRIM)
        self.acquire = client.register_script(_ACQUIRE)
        self.renew = client.register_script(_RENEW)
        self.release = client.register_script(_RELEASE)
        self.put_snapshot = client.register_script(_PUT_SNAPSHOT)
        self.commit_position = client.register_script(_COMMIT_POSITION)


async def _run(script: AsyncScript, keys: list[str], args: list[bytes | str | int]) -> Any:
    return await script(keys=keys, args=args)


class RedisBus(Bus):
    """`Bus` on Redis Streams; lease time from the Redis server's clock (see module doc)."""

    def __init__(
        self,
        url: str,
        *,
        clock_offset: Callable[[], float] | None = None,
        client: aioredis.Redis | None = None,
        key_prefix: str = "",
    ) -> None:
        """Create a bus on the Redis at `url`; nothing connects until the first call.

        The client (redis-py asyncio, connection pool, `decode_responses=False`, RESP2, no
        command retries) is made lazily inside the running event loop and bound to it; after
        `close()` the next call makes a new one. A `client` passed in is used as is and is not
        closed by `close()`; it must not decode responses. `clock_offset` returns seconds
        added to the server's time for lease expiry (tests only). `key_prefix` is prepended
        to every key (isolation of tests sharing one server).
        """
        self._url = url
        self._clock_offset = clock_offset
        self._owns_client = client is None
        self._client = client
        self._scripts = _Scripts(client) if client is not None else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._prefix = key_prefix

    @classmethod
    def from_url(cls, url: str, *, clock_offset: Callable[[], float] | None = None) -> RedisBus:
        """A bus on the Redis at `url` (for example `redis://127.0.0.1:6379/0`)."""
        return cls(url, clock_offset=clock_offset)

    def _new_client(self) -> aioredis.Redis:
        """Make the client this bus owns (an override point for tests)."""
        return aioredis.Redis.from_url(
            self._url, decode_responses=False, protocol=2, retry=Retry(NoBackoff(), 0)
        )

    def _redis(self) -> tuple[aioredis.Redis, _Scripts]:
        if self._owns_client:
            loop = asyncio.get_running_loop()
            if self._client is None:
                self._client = self._new_client()
                self._scripts = _Scripts(self._client)
                self._loop = loop
            elif self._loop is not loop:
                raise RuntimeError("a RedisBus is bound to the event loop it was first used in")
        assert self._client is not None and self._scripts is not None
        return self._client, self._scripts

    async def close(self) -> None:
        """Close the client this bus made (its connection pool); a given client is left open."""
        client, self._loop = self._client, None
        if self._owns_client and client is not None:
            self._client = self._scripts = None
            await client.aclose()

    async def __aenter__(self) -> RedisBus:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- keys -------------------------------------------------------------------------

    def _stream_keys(self, stream: str) -> tuple[str, str]:
        _check_name("stream", stream)
        key = self._prefix + stream
        return key, key + "#meta"

    def _lease_key(self, name: str) -> str:
        return f"{self._prefix}dex:{{{name}}}:lease"

    def _offset_ms(self) -> int:
        return 0 if self._clock_offset is None else round(self._clock_offset() * 1000)

    def _lease_args(self, lease: Lease) -> list[bytes | str | int]:
        return [lease.owner, lease.epoch, self._offset_ms()]

    # --- streams ----------------------------------------------------------------------

    async def _append(
        self,
        stream: str,
        entries: list[bytes],
        lease: Lease | None,
        expect_last: int | None,
        also: Mapping[str, list[bytes]],
    ) -> int:
        """See `Bus.append`: one script checks the lease and last, then writes every stream."""
        keys: list[str] = []
        args: list[bytes | str | int] = []
        if lease is None:
            args += ["0", "", "", 0]
        else:
            keys.append(self._lease_key(lease.name))
            args += ["1", *self._lease_args(lease)]
        args.append("" if expect_last is None else expect_last)
        keys += self._stream_keys(stream)
        args += [len(entries), *entries]
        tag = hash_tag(keys[-2])
        for name, more in also.items():
            if not more:
                continue
            other = self._stream_keys(name)
            if hash_tag(other[0]) != tag:
                raise ValueError(f"{name}: an `also` stream must share {stream}'s hash tag")
            keys += other
            args += [len(more), *more]
        _, scripts = self._redis()
        result = await _run(scripts.append, keys, args)
        if result[0] == 1:
            return int(result[1])
        if result[1] == b"lease":
            assert lease is not None
            raise FencedError(f"{stream}: lease {lease.name} epoch {lease.epoch} is not held")
        raise FencedError(f"{stream}: last is {int(result[2])}, caller expected {expect_last}")

    async def read(
        self, stream: str, after: int, *, limit: int = 1000, timeout: float = 0.0
    ) -> list[tuple[int, bytes]]:
        """See `Bus.read`: `read_many` of one stream (which checks the arguments)."""
        return (await self.read_many({stream: after}, limit=limit, timeout=timeout)).get(stream, [])

    async def read_many(
        self, after: Mapping[str, int], *, limit: int = 1000, timeout: float = 0.0
    ) -> dict[str, list[tuple[int, bytes]]]:
        """See `Bus.read_many`: every stream in one transaction (one round trip); when all are
        caught up, one blocking XREAD on all of them wakes the reader (single-server only)."""
        if not after:
            return {}
        for pos in after.values():
            if pos < 0 or limit < 1:
                raise ValueError(f"need after >= 0 and limit >= 1, got {after=} {limit=}")
        streams = list(after)
        keys = [self._stream_keys(s) for s in streams]
        by_key = {key.encode(): s for (key, _), s in zip(keys, streams, strict=True)}
        client, _ = self._redis()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            out = await self._read_once(client, streams, keys, after, limit)
            if out:
                return out
            remaining = deadline - loop.time()
            if remaining <= 0:
                return out
            block_ms = math.ceil(min(remaining, _BLOCK_SLICE) * 1000)
            woke: Any = await client.xread(
                {key: f"{after[s]}-0" for (key, _), s in zip(keys, streams, strict=True)},
                count=limit,
                block=block_ms,
            )
            # What woke us is the batch: the transaction above found every stream at or past
            # its trimmed point, so a trim since then shows as a gap, which `_decode_entries`
            # refuses. Streams that stayed empty are read again next time.
            for key, entries in woke.items() if isinstance(woke, dict) else woke or ():
                s = by_key[bytes(key)]
                if entries:
                    out[s] = self._decode_entries(s, after[s], entries)
            if out:
                return out

    @staticmethod
    async def _read_once(
        client: aioredis.Redis,
        streams: list[str],
        keys: list[tuple[str, str]],
        after: Mapping[str, int],
        limit: int,
    ) -> dict[str, list[tuple[int, bytes]]]:
        """One MULTI/EXEC: per stream its trimmed point and up to `limit` entries after
        `after[stream]` (a transaction, so the two agree; plain commands, so the entries are
        not copied through Lua)."""
        async with client.pipeline(transaction=True) as pipe:
            for (key, meta), s in zip(keys, streams, strict=True):
                pipe.hget(meta, "trimmed")
                pipe.xrange(key, min=f"{after[s] + 1}-0", count=limit)
            results = await pipe.execute()
        out: dict[str, list[tuple[int, bytes]]] = {}
        for i, s in enumerate(streams):
            trimmed = int(results[2 * i] or 0)
            if after[s] < trimmed:
                raise TrimmedError(f"{s}: entry {after[s] + 1} was trimmed (up to {trimmed})")
            if results[2 * i + 1]:
                out[s] = RedisBus._decode_entries(s, after[s], results[2 * i + 1])
        return out

    @staticmethod
    def _decode_entries(stream: str, after: int, raw: list[Any]) -> list[tuple[int, bytes]]:
        # XRANGE replies arrive parsed by redis-py: (id, {field: value}); ours is field `d`
        got = [(int(entry_id.split(b"-", 1)[0]), bytes(fields[b"d"])) for entry_id, fields in raw]
        if got[0][0] != after + 1:  # numbering has no gaps, so a gap means a trim
            raise TrimmedError(f"{stream}: entry {after + 1} is missing, next is {got[0][0]}")
        return got

    async def trim(self, stream: str, below: int) -> None:
        """See `Bus.trim`: exact XTRIM MINID, and the trimmed point is recorded."""
        keys = list(self._stream_keys(stream))
        _, scripts = self._redis()
        await _run(scripts.trim, keys, [below])

    async def last(self, stream: str) -> int:
        """See `Bus.last`."""
        _, meta = self._stream_keys(stream)
        client, _ = self._redis()
        value = await client.hget(meta, "last")
        return 0 if value is None else int(value)

    # --- leases -----------------------------------------------------------------------

    async def acquire(self, name: str, owner: str, ttl: float) -> Lease | None:
        """See `Bus.acquire`: INCR of the never-expiring epoch counter, in one script."""
        ttl_ms = _ttl_ms(ttl)
        lease_key = self._lease_key(name)
        epoch_key = lease_key[: -len(":lease")] + ":epoch"
        _, scripts = self._redis()
        result = await _run(
            scripts.acquire, [lease_key, epoch_key], [owner, ttl_ms, self._offset_ms()]
        )
        if result[0] != 1:
            return None
        return Lease(name=name, owner=owner, epoch=int(result[1]))

    async def renew(self, lease: Lease, ttl: float) -> bool:
        """See `Bus.renew`."""
        ttl_ms = _ttl_ms(ttl)
        _, scripts = self._redis()
        args: list[bytes | str | int] = [lease.owner, lease.epoch, ttl_ms, self._offset_ms()]
        return int(await _run(scripts.renew, [self._lease_key(lease.name)], args)) == 1

    async def release(self, lease: Lease) -> None:
        """See `Bus.release`."""
        _, scripts = self._redis()
        await _run(scripts.release, [self._lease_key(lease.name)], self._lease_args(lease))

    async def leases(self, prefix: str) -> list[Lease]:
        """See `Bus.leases`: SCAN for the lease keys, then one pipelined round trip."""
        client, _ = self._redis()
        head = f"{self._prefix}dex:{{"
        pattern = _glob_escape(head + prefix) + "*}:lease"
        keys = sorted({bytes(k) async for k in client.scan_iter(match=pattern, count=1000)})
        if not keys:
            return []
        pipe = client.pipeline(transaction=False)
        pipe.time()
        for key in keys:
            pipe.hmget(key, ["owner", "epoch", "expires"])
        replies = await pipe.execute()
        seconds, micros = replies[0]
        now_ms = seconds * 1000 + micros // 1000 + self._offset_ms()
        found = []
        for key, (owner, epoch, expires) in zip(keys, replies[1:], strict=True):
            if owner is None or epoch is None or expires is None or int(expires) <= now_ms:
                continue
            name = key.decode()[len(head) : -len("}:lease")]
            found.append(Lease(name=name, owner=owner.decode(), epoch=int(epoch)))
        return sorted(found, key=lambda lease: lease.name)

    # --- snapshots --------------------------------------------------------------------

    def _snapshot_key(self, name: str) -> str:
        _check_name("snapshot", name)
        return self._prefix + name + "#snapshot"

    async def put_snapshot(
        self, name: str, log_seq: int, data: bytes, *, lease: Lease, log: str | None = None
    ) -> None:
        """See `Bus.put_snapshot`: written by a script that checks the lease first, then that
        `log` (its `#meta` key, which must share the snapshot's hash tag) holds `log_seq`."""
        keys = [self._lease_key(lease.name), self._snapshot_key(name)]
        if log is not None:
            _, meta = self._stream_keys(log)
            if hash_tag(meta) != hash_tag(keys[1]):
                raise ValueError(f"{log}: a snapshot's log must share {name}'s hash tag")
            keys.append(meta)
        _, scripts = self._redis()
        result = await _run(scripts.put_snapshot, keys, [*self._lease_args(lease), log_seq, data])
        if result[0] == 1:
            return
        if result[1] == b"lease":
            raise FencedError(f"snapshot {name}: lease {lease.name} epoch {lease.epoch} not held")
        raise FencedError(
            f"snapshot {name}: log {log} last is {int(result[2])},"
            f" before the snapshot's log_seq {log_seq}"
        )

    async def get_snapshot(self, name: str) -> tuple[int, bytes] | None:
        """See `Bus.get_snapshot`."""
        key = self._snapshot_key(name)
        client, _ = self._redis()
        seq, data = await client.hmget(key, ["seq", "data"])
        if seq is None or data is None:
            return None
        return int(seq), cast(bytes, data)

    # --- server identity and reader positions -------------------------------------------

    async def identity(self) -> str:
        """See `Bus.identity`: the server's `run_id` (INFO server), new at every start."""
        client, _ = self._redis()
        info = await client.info("server")
        return str(info["run_id"])

    async def commit_position(self, stream: str, reader: str, log_seq: int) -> None:
        """See `Bus.commit_position`: a script keeps the maximum."""
        key, _ = self._stream_keys(stream)
        _, scripts = self._redis()
        await _run(scripts.commit_position, [key + "#positions"], [reader, log_seq])

    async def positions(self, stream: str) -> dict[str, int]:
        """See `Bus.positions`."""
        key, _ = self._stream_keys(stream)
        client, _ = self._redis()
        raw = cast(dict[bytes, bytes], await client.hgetall(key + "#positions"))
        return {reader.decode(): int(seq) for reader, seq in raw.items()}

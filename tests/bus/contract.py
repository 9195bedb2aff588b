"""The contract every `dex.bus.Bus` implementation must pass.

Subclass `BusContract` as `Test<Impl>` and override the `bus` fixture to build the
implementation with the given `FakeClock` for lease time. Tests are plain sync functions
that drive one coroutine each with `asyncio.run` (pytest-asyncio is not a dependency).
Blocking reads are bounded by `asyncio.wait_for`, never by fixed sleeps.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from dex.bus import Bus, FencedError, Lease, TrimmedError

TTL = 10.0
GUARD = 2.0  # upper bound on any await that must finish promptly


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def aio_within(
    seconds: float,
) -> Callable[[Callable[..., Coroutine[Any, Any, None]]], Callable[..., None]]:
    """Turn an async test into a plain sync one run by `asyncio.run`, failing it after
    `seconds` (a deadline for a hung test, not a measure)."""

    def wrap(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> None:
            asyncio.run(asyncio.wait_for(test(*args, **kwargs), seconds))

        return run

    return wrap


aio = aio_within(10 * GUARD)
"""`aio_within` with the deadline of a test whose awaits must all finish promptly."""


async def yield_to_loop() -> None:
    """Let other tasks run once (a reader starts waiting): a yield, never a delay."""
    loop = asyncio.get_running_loop()
    turn: asyncio.Future[None] = loop.create_future()
    loop.call_soon(turn.set_result, None)
    await turn


async def acquired(bus: Bus, name: str, owner: str, ttl: float = TTL) -> Lease:
    lease = await bus.acquire(name, owner, ttl)
    assert lease is not None, f"{owner} could not acquire {name}"
    return lease


async def read_all(bus: Bus, stream: str) -> list[tuple[int, bytes]]:
    return await bus.read(stream, 0, limit=1_000_000)


class BusContract:
    """Behaviour shared by every bus; `bus` must be overridden by the subclass."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def bus(self, clock: FakeClock) -> Bus:
        raise NotImplementedError("subclass must provide a bus built with `clock`")

    # --- numbering and atomic batches -------------------------------------------------

    @aio
    async def test_empty_stream_has_last_zero_and_reads_nothing(self, bus: Bus) -> None:
        assert await bus.last("s") == 0
        assert await bus.read("s", 0) == []

    @aio
    async def test_numbering_is_gap_free_across_batches(self, bus: Bus) -> None:
        assert await bus.append("s", [b"a", b"b"]) == 2
        assert await bus.append("s", [b"c"]) == 3
        assert await bus.append("s", [b"d", b"e", b"f"]) == 6
        got = await read_all(bus, "s")
        assert got == [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d"), (5, b"e"), (6, b"f")]
        assert await bus.last("s") == 6

    @aio
    async def test_streams_are_numbered_independently(self, bus: Bus) -> None:
        await bus.append("s", [b"a", b"b"])
        assert await bus.append("t", [b"x"]) == 1
        assert await read_all(bus, "t") == [(1, b"x")]

    @aio
    async def test_refused_batch_writes_none_of_its_entries(self, bus: Bus) -> None:
        await bus.append("s", [b"a"])
        with pytest.raises(FencedError):
            await bus.append("s", [b"b", b"c", b"d"], expect_last=0)
        assert await read_all(bus, "s") == [(1, b"a")]
        assert await bus.append("s", [b"b", b"c"], expect_last=1) == 3

    @aio
    async def test_bad_arguments_are_broken_contracts(self, bus: Bus) -> None:
        lease = await acquired(bus, "L", "a")
        with pytest.raises(ValueError):
            await bus.append("s", [])
        with pytest.raises(ValueError):
            await bus.append("s", [b"a"], lease=lease)
        with pytest.raises(ValueError):
            await bus.read("s", -1)
        with pytest.raises(ValueError):
            await bus.read("s", 0, limit=0)
        with pytest.raises(ValueError):
            await bus.acquire("M", "a", 0)
        with pytest.raises(ValueError):
            await bus.renew(lease, -1.0)
        assert await bus.last("s") == 0

    # --- reading ----------------------------------------------------------------------

    @aio
    async def test_read_returns_entries_after_position_up_to_limit(self, bus: Bus) -> None:
        await bus.append("s", [bytes([i]) for i in range(1, 11)])
        assert await bus.read("s", 3, limit=2) == [(4, b"\x04"), (5, b"\x05")]
        assert await bus.read("s", 8) == [(9, b"\x09"), (10, b"\x0a")]
        assert await bus.read("s", 10) == []
        assert await bus.read("s", 11) == []

    @aio
    async def test_blocking_read_wakes_on_append(self, bus: Bus) -> None:
        reader = asyncio.create_task(bus.read("s", 0, timeout=60.0))
        await yield_to_loop()
        assert not reader.done()
        await bus.append("s", [b"a", b"b"])
        assert await asyncio.wait_for(reader, GUARD) == [(1, b"a"), (2, b"b")]

    @aio
    async def test_blocking_read_keeps_waiting_until_an_entry_after_position(
        self, bus: Bus
    ) -> None:
        await bus.append("s", [b"a"])
        reader = asyncio.create_task(bus.read("s", 2, timeout=60.0))
        await yield_to_loop()
        await bus.append("s", [b"b"])  # log_seq 2 is not after 2
        await yield_to_loop()
        await yield_to_loop()
        assert not reader.done()
        await bus.append("s", [b"c"])
        assert await asyncio.wait_for(reader, GUARD) == [(3, b"c")]

    @aio
    async def test_blocking_read_times_out_empty(self, bus: Bus) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        got = await asyncio.wait_for(bus.read("s", 0, timeout=0.05), GUARD)
        assert got == []
        assert loop.time() - started >= 0.04

    @aio
    async def test_non_blocking_read_returns_at_once(self, bus: Bus) -> None:
        assert await asyncio.wait_for(bus.read("s", 0, timeout=0.0), GUARD) == []

    # --- trimming ---------------------------------------------------------------------

    @aio
    async def test_trim_drops_below_and_keeps_numbering(self, bus: Bus) -> None:
        await bus.append("s", [b"a", b"b", b"c", b"d"])
        await bus.trim("s", 3)
        assert await bus.read("s", 2) == [(3, b"c"), (4, b"d")]
        assert await bus.last("s") == 4
        assert await bus.append("s", [b"e"]) == 5

    @aio
    async def test_reading_below_trimmed_point_raises(self, bus: Bus) -> None:
        await bus.append("s", [b"a", b"b", b"c", b"d"])
        await bus.trim("s", 3)
        for after in (0, 1):
            with pytest.raises(TrimmedError):
                await bus.read("s", after)
        with pytest.raises(TrimmedError):
            await bus.read("s", 1, timeout=1.0)

    @aio
    async def test_trim_past_the_end_keeps_last_and_numbering(self, bus: Bus) -> None:
        await bus.append("s", [b"a", b"b"])
        await bus.trim("s", 100)
        assert await bus.last("s") == 2
        assert await bus.read("s", 2) == []
        with pytest.raises(TrimmedError):
            await bus.read("s", 1)
        assert await bus.append("s", [b"c"]) == 3
        assert await bus.read("s", 2) == [(3, b"c")]

    @aio
    async def test_trim_is_idempotent_and_never_moves_back(self, bus: Bus) -> None:
        await bus.append("s", [b"a", b"b", b"c"])
        await bus.trim("s", 3)
        await bus.trim("s", 2)
        await bus.trim("s", 3)
        assert await bus.read("s", 2) == [(3, b"c")]

    # --- leases -----------------------------------------------------------------------

    @aio
    async def test_lease_is_exclusive_until_released(self, bus: Bus) -> None:
        a = await acquired(bus, "L", "a")
        assert await bus.acquire("L", "b", TTL) is None
        await bus.release(a)
        b = await acquired(bus, "L", "b")
        assert (b.name, b.owner) == ("L", "b")
        assert b.epoch > a.epoch

    @aio
    async def test_lease_expires_and_epochs_strictly_increase(
        self, bus: Bus, clock: FakeClock
    ) -> None:
        epochs = []
        for owner in ("a", "b", "c", "a"):
            lease = await acquired(bus, "L", owner, ttl=5.0)
            epochs.append(lease.epoch)
            clock.advance(4.9)
            assert await bus.acquire("L", "z", 5.0) is None
            clock.advance(0.2)
        assert epochs == sorted(set(epochs))
        assert epochs[0] >= 1

    @aio
    async def test_epoch_counters_are_per_name(self, bus: Bus) -> None:
        await acquired(bus, "L", "a")
        first_m = await acquired(bus, "M", "a")
        other = await acquired(bus, "N", "a")
        assert first_m.epoch == other.epoch

    @aio
    async def test_renew_extends_only_a_held_lease(self, bus: Bus, clock: FakeClock) -> None:
        a = await acquired(bus, "L", "a", ttl=5.0)
        clock.advance(4.0)
        assert await bus.renew(a, 5.0)
        clock.advance(4.0)  # 8s after acquire: alive only thanks to the renewal
        assert await bus.acquire("L", "b", 5.0) is None
        clock.advance(1.5)
        b = await acquired(bus, "L", "b")  # expired: anyone may take it
        assert not await bus.renew(a, 5.0)
        assert await bus.renew(b, 5.0)
        await bus.release(b)
        assert not await bus.renew(b, 5.0)

    @aio
    async def test_an_expired_lease_nobody_acquired_is_still_its_holders(
        self, bus: Bus, clock: FakeClock
    ) -> None:
        """A stall that delays every renewal (a stopped server, a paused machine) costs no
        lease: the epoch fences, expiry only lets someone else acquire."""
        a = await acquired(bus, "L", "a", ttl=1.0)
        clock.advance(5.0)
        assert await bus.leases("L") == []  # expired: not listed as a live holder
        assert await bus.append("s", [b"a1"], lease=a, expect_last=0) == 1
        await bus.put_snapshot("snap", 1, b"A", lease=a)
        assert await bus.renew(a, 1.0)  # renewed in place: same epoch
        assert await bus.leases("L") == [a]
        assert await bus.acquire("L", "b", 1.0) is None
        clock.advance(1.5)
        b = await acquired(bus, "L", "b")
        assert b.epoch > a.epoch
        with pytest.raises(FencedError):
            await bus.append("s", [b"a2"], lease=a, expect_last=1)
        assert not await bus.renew(a, 1.0)
        assert await read_all(bus, "s") == [(1, b"a1")]

    @aio
    async def test_release_by_a_stale_lease_leaves_the_holder(
        self, bus: Bus, clock: FakeClock
    ) -> None:
        a = await acquired(bus, "L", "a", ttl=1.0)
        clock.advance(2.0)
        b = await acquired(bus, "L", "b")
        await bus.release(a)
        assert await bus.acquire("L", "c", TTL) is None
        assert await bus.renew(b, TTL)

    @aio
    async def test_reacquire_by_same_owner_fences_its_old_lease(self, bus: Bus) -> None:
        old = await acquired(bus, "L", "a")
        new = await acquired(bus, "L", "a")
        assert new.epoch > old.epoch
        with pytest.raises(FencedError):
            await bus.append("s", [b"x"], lease=old, expect_last=0)
        assert await bus.append("s", [b"x"], lease=new, expect_last=0) == 1

    # --- fenced appends and snapshots -------------------------------------------------

    @aio
    async def test_fenced_append_succeeds_for_holder_with_right_last(self, bus: Bus) -> None:
        lease = await acquired(bus, "L", "a")
        assert await bus.append("s", [b"a", b"b"], lease=lease, expect_last=0) == 2
        assert await bus.append("s", [b"c"], lease=lease, expect_last=2) == 3

    @aio
    async def test_fenced_append_refused_for_wrong_expect_last(self, bus: Bus) -> None:
        lease = await acquired(bus, "L", "a")
        await bus.append("s", [b"a"], lease=lease, expect_last=0)
        for wrong in (0, 2):
            with pytest.raises(FencedError):
                await bus.append("s", [b"b"], lease=lease, expect_last=wrong)
        assert await read_all(bus, "s") == [(1, b"a")]

    @aio
    async def test_fenced_append_refused_for_stale_epoch(self, bus: Bus) -> None:
        a = await acquired(bus, "L", "a")
        await bus.release(a)
        b = await acquired(bus, "L", "b")
        with pytest.raises(FencedError):
            await bus.append("s", [b"a"], lease=a, expect_last=0)
        forged = Lease(name="L", owner="b", epoch=a.epoch)
        with pytest.raises(FencedError):
            await bus.append("s", [b"a"], lease=forged, expect_last=0)
        assert await bus.last("s") == 0
        assert await bus.append("s", [b"b"], lease=b, expect_last=0) == 1

    @aio
    async def test_fenced_append_refused_once_an_expired_lease_is_taken(
        self, bus: Bus, clock: FakeClock
    ) -> None:
        a = await acquired(bus, "L", "a", ttl=1.0)
        clock.advance(1.0)
        await acquired(bus, "L", "b")
        with pytest.raises(FencedError):
            await bus.append("s", [b"a"], lease=a, expect_last=0)
        assert await bus.last("s") == 0

    @aio
    async def test_paused_holder_can_never_write_again(self, bus: Bus, clock: FakeClock) -> None:
        a = await acquired(bus, "L", "a", ttl=5.0)
        await bus.append("s", [b"a1"], lease=a, expect_last=0)
        await bus.put_snapshot("snap", 1, b"A", lease=a)
        clock.advance(6.0)  # "a" is paused past its lease; "b" takes over
        b = await acquired(bus, "L", "b", ttl=5.0)
        await bus.append("s", [b"b1"], lease=b, expect_last=1)
        # "a" resumes, unaware, even with the right expect_last
        for expect in (1, 2):
            with pytest.raises(FencedError):
                await bus.append("s", [b"a2"], lease=a, expect_last=expect)
        with pytest.raises(FencedError):
            await bus.put_snapshot("snap", 2, b"A2", lease=a)
        assert not await bus.renew(a, 5.0)
        assert await read_all(bus, "s") == [(1, b"a1"), (2, b"b1")]
        assert await bus.get_snapshot("snap") == (1, b"A")

    @aio
    async def test_snapshots_round_trip_latest_wins(self, bus: Bus) -> None:
        assert await bus.get_snapshot("snap") is None
        lease = await acquired(bus, "L", "a")
        await bus.put_snapshot("snap", 5, b"five", lease=lease)
        await bus.put_snapshot("snap", 9, b"nine", lease=lease)
        assert await bus.get_snapshot("snap") == (9, b"nine")
        assert await bus.get_snapshot("other") is None

    @aio
    async def test_snapshot_refused_for_a_released_or_taken_lease(
        self, bus: Bus, clock: FakeClock
    ) -> None:
        a = await acquired(bus, "L", "a", ttl=1.0)
        await bus.release(a)
        with pytest.raises(FencedError):
            await bus.put_snapshot("snap", 1, b"x", lease=a)
        a = await acquired(bus, "L", "a", ttl=1.0)
        clock.advance(1.5)
        b = await acquired(bus, "L", "b")
        with pytest.raises(FencedError):
            await bus.put_snapshot("snap", 1, b"x", lease=a)
        assert await bus.get_snapshot("snap") is None
        await bus.put_snapshot("snap", 1, b"y", lease=b)
        assert await bus.get_snapshot("snap") == (1, b"y")

    # Snapshots checked against their log: names share a hash tag, as Redis requires.

    @aio
    async def test_snapshot_at_a_position_its_log_holds_is_stored(self, bus: Bus) -> None:
        lease = await acquired(bus, "L", "a")
        await bus.append("{s}:log", [b"a", b"b", b"c"], lease=lease, expect_last=0)
        await bus.put_snapshot("{s}:snap", 2, b"two", lease=lease, log="{s}:log")
        assert await bus.get_snapshot("{s}:snap") == (2, b"two")
        await bus.put_snapshot("{s}:snap", 3, b"three", lease=lease, log="{s}:log")
        assert await bus.get_snapshot("{s}:snap") == (3, b"three")
        await bus.trim("{s}:log", 100)  # the log keeps its last when trimmed empty
        await bus.put_snapshot("{s}:snap", 3, b"three again", lease=lease, log="{s}:log")
        assert await bus.get_snapshot("{s}:snap") == (3, b"three again")

    @aio
    async def test_snapshot_beyond_its_log_is_refused_and_the_previous_stays(
        self, bus: Bus
    ) -> None:
        lease = await acquired(bus, "L", "a")
        await bus.append("{s}:log", [b"a", b"b"], lease=lease, expect_last=0)
        await bus.put_snapshot("{s}:snap", 2, b"two", lease=lease, log="{s}:log")
        for beyond in (3, 10):
            with pytest.raises(FencedError) as refused:
                await bus.put_snapshot("{s}:snap", beyond, b"ahead", lease=lease, log="{s}:log")
            message = str(refused.value)
            assert "{s}:snap" in message and "{s}:log" in message
            assert "last is 2" in message and f"log_seq {beyond}" in message
        assert await bus.get_snapshot("{s}:snap") == (2, b"two")
        assert await bus.last("{s}:log") == 2
        # without `log`, nothing is checked against the log (as before)
        await bus.put_snapshot("{s}:snap", 3, b"unchecked", lease=lease)
        assert await bus.get_snapshot("{s}:snap") == (3, b"unchecked")

    @aio
    async def test_snapshot_checked_against_a_log_without_entries_is_refused(
        self, bus: Bus
    ) -> None:
        lease = await acquired(bus, "L", "a")
        for log_seq in (1, 2, 1000):
            with pytest.raises(FencedError, match="last is 0"):
                await bus.put_snapshot("{s}:snap", log_seq, b"x", lease=lease, log="{s}:log")
        assert await bus.get_snapshot("{s}:snap") is None
        assert await bus.last("{s}:log") == 0
        await bus.put_snapshot("{s}:snap", 0, b"initial", lease=lease, log="{s}:log")
        assert await bus.get_snapshot("{s}:snap") == (0, b"initial")

    @aio
    async def test_snapshot_checks_its_lease_before_its_log(
        self, bus: Bus, clock: FakeClock
    ) -> None:
        a = await acquired(bus, "L", "a", ttl=1.0)
        await bus.append("{s}:log", [b"a"], lease=a, expect_last=0)
        clock.advance(1.5)
        await acquired(bus, "L", "b")  # taken over
        for log_seq in (1, 2):  # within and beyond the log: the lease refuses both
            with pytest.raises(FencedError, match="not held"):
                await bus.put_snapshot("{s}:snap", log_seq, b"x", lease=a, log="{s}:log")
        assert await bus.get_snapshot("{s}:snap") is None

    # --- multi-stream appends, lease listing, identity, reader positions ------------------

    @aio
    async def test_also_streams_are_written_in_the_same_step(self, bus: Bus) -> None:
        lease = await acquired(bus, "L", "a")
        also = {"{s}:to:0": [b"x", b"y"], "{s}:to:1": [], "{s}:to:2": [b"z"]}
        assert await bus.append("{s}:log", [b"l1"], lease=lease, expect_last=0, also=also) == 1
        assert await read_all(bus, "{s}:to:0") == [(1, b"x"), (2, b"y")]
        assert await bus.last("{s}:to:1") == 0
        assert await read_all(bus, "{s}:to:2") == [(1, b"z")]
        await bus.append("{s}:log", [b"l2"], lease=lease, expect_last=1, also={"{s}:to:0": [b"w"]})
        assert await read_all(bus, "{s}:to:0") == [(1, b"x"), (2, b"y"), (3, b"w")]

    @aio
    async def test_refused_append_writes_no_also_stream(self, bus: Bus, clock: FakeClock) -> None:
        lease = await acquired(bus, "L", "a", ttl=1.0)
        with pytest.raises(FencedError):
            await bus.append("{s}:log", [b"l"], lease=lease, expect_last=5, also={"{s}:o": [b"x"]})
        clock.advance(2.0)
        await acquired(bus, "L", "b")  # taken over
        with pytest.raises(FencedError):
            await bus.append("{s}:log", [b"l"], lease=lease, expect_last=0, also={"{s}:o": [b"x"]})
        assert await bus.last("{s}:log") == 0
        assert await bus.last("{s}:o") == 0

    @aio
    async def test_blocking_reader_of_an_also_stream_wakes(self, bus: Bus) -> None:
        reader = asyncio.create_task(bus.read("{s}:o", 0, timeout=GUARD))
        await yield_to_loop()
        await bus.append("{s}:log", [b"l"], also={"{s}:o": [b"x"]})
        assert await asyncio.wait_for(reader, GUARD) == [(1, b"x")]

    @aio
    async def test_leases_lists_live_holders_by_prefix(self, bus: Bus, clock: FakeClock) -> None:
        assert await bus.leases("member:") == []
        b = await acquired(bus, "member:b", "b", ttl=5.0)
        a = await acquired(bus, "member:a", "a", ttl=1.0)
        await acquired(bus, "shard:0", "a")
        assert await bus.leases("member:") == [a, b]
        clock.advance(2.0)
        assert await bus.leases("member:") == [b]
        await bus.release(b)
        assert await bus.leases("member:") == []

    @aio
    async def test_identity_is_stable_for_one_server(self, bus: Bus) -> None:
        first = await bus.identity()
        assert isinstance(first, str) and first
        await bus.append("s", [b"a"])
        assert await bus.identity() == first

    @aio
    async def test_positions_are_per_reader_and_never_go_back(self, bus: Bus) -> None:
        assert await bus.positions("s") == {}
        await bus.commit_position("s", "r1", 5)
        await bus.commit_position("s", "r2", 3)
        await bus.commit_position("s", "r1", 4)
        await bus.commit_position("t", "r1", 9)
        assert await bus.positions("s") == {"r1": 5, "r2": 3}
        assert await bus.positions("t") == {"r1": 9}

    # --- reading several streams at once ----------------------------------------------

    @aio
    async def test_read_many_returns_only_streams_with_entries(self, bus: Bus) -> None:
        await bus.append("a", [b"a1", b"a2", b"a3"])
        await bus.append("b", [b"b1"])
        got = await bus.read_many({"a": 1, "b": 1, "c": 0}, limit=1)
        assert got == {"a": [(2, b"a2")]}
        assert await bus.read_many({"a": 3, "b": 1}) == {}

    @aio
    async def test_read_many_waits_for_any_stream(self, bus: Bus) -> None:
        await bus.append("a", [b"a1"])
        reader = asyncio.create_task(bus.read_many({"a": 1, "b": 0}, timeout=GUARD))
        await yield_to_loop()
        await bus.append("b", [b"b1"])
        assert await asyncio.wait_for(reader, 2 * GUARD) == {"b": [(1, b"b1")]}

    @aio
    async def test_read_many_times_out_empty(self, bus: Bus) -> None:
        assert await bus.read_many({"a": 0, "b": 0}, timeout=0.05) == {}

    @aio
    async def test_read_many_raises_for_a_trimmed_position(self, bus: Bus) -> None:
        await bus.append("a", [b"a1", b"a2", b"a3"])
        await bus.trim("a", 3)
        with pytest.raises(TrimmedError):
            await bus.read_many({"a": 1, "b": 0})

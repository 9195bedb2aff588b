"""The loop shared by the bus's idempotent readers (persistence, market-data).

`LogReader` tails a fixed set of shard logs with `bus.read_many`, hands each batch to its
subclass's `apply` and then records its position on every stream it read
(`bus.commit_position`), so writers trim only what every reader has consumed.

Invariants:
- `self.pos[stream]` is the last `log_seq` of `stream` whose effects are in the reader's state;
  `apply` moves it only together with the state (all of a batch or nothing), so an entry is
  never applied twice and never skipped.
- A read that finds its next entry trimmed (`TrimmedError`) stops the reader and keeps the
  service not-ready (Health key "input"): it never jumps over what it has not seen.
- An entry that does not decode (`codec.BadEntry`) is reported by `apply` and only logged
  here, with its stream and position, and counted (`bad_entries_total`); the position moves
  past it and nothing else changes.
- A log that now ends below the reader's position (a bus restored from an older copy) stops
  the reader too: entries written after that would reuse numbers it has already applied.
- The position committed on the bus is `commit_floor(stream)`, at most `self.pos[stream]`:
  a reader whose state lives in memory may keep the writer from trimming entries it would
  need to rebuild that state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import Any

from dex.bus import Bus, TrimmedError
from dex.runtime.health import Health
from dex.runtime.metrics import ServiceMetrics

Batch = dict[str, list[tuple[int, bytes]]]
BadList = list[tuple[str, int, str]]  # (stream, log_seq, message)

INPUT = "input"  # Health key: the bus (reachable, caught up, nothing trimmed)
LAG_EVERY = 1.0  # seconds between two updates of the lag gauge


class StopReading(Exception):
    """Raised by `apply` when the reader must stop for good (its state can't be trusted)."""


class LogReader(ABC):
    """Tails `streams` on `bus`, applies batches, commits positions as `reader`."""

    def __init__(
        self,
        bus: Bus,
        streams: list[str],
        reader: str,
        *,
        health: Health,
        metrics: ServiceMetrics,
        log: Any,
        batch_size: int = 1000,
        read_timeout: float = 0.1,
    ) -> None:
        self.bus = bus
        self.streams = list(streams)
        self.reader = reader
        self.health = health
        self.log = log
        self.metrics = metrics
        self.batch_size = batch_size
        self.read_timeout = read_timeout
        self.pos: dict[str, int] = dict.fromkeys(self.streams, 0)
        self.stopped_reason: str | None = None  # why the loop ended on its own
        self._committed: dict[str, int] = {}  # positions recorded on the bus
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lag_at = 0.0
        self._progress = asyncio.Event()  # replaced after every pass of the loop
        self.apply_key = INPUT  # Health key set when `apply` fails (persistence: "database")
        self._failing = INPUT
        m = metrics
        self.m_applied = m.counter("entries_applied", "total", "log entries applied", ["stream"])
        self.m_bad = m.counter(
            "bad_entries", "total", "log entries that did not decode (skipped)", ["stream"]
        )
        self.m_lag = m.gauge("input_lag", "entries", "entries of a log not yet applied", ["stream"])

    # ------------------------------------------------------------------ subclass hooks

    @abstractmethod
    async def apply(self, got: Batch) -> BadList:
        """Apply a batch and move `self.pos` with it; return the entries that did not decode.

        Raising leaves the state and `self.pos` as they were (the batch is read again), except
        `StopReading`, which ends the loop."""

    async def prepare(self) -> None:  # noqa: B027 - optional hook
        """Called before each read (persistence: make sure the store is set up)."""

    def reading(self) -> list[str]:
        """The streams read now (persistence replicas: those whose lease they hold)."""
        return self.streams

    def commit_floor(self, stream: str) -> int:
        """The position to record on the bus for `stream` (at most `self.pos[stream]`)."""
        return self.pos[stream]

    # ------------------------------------------------------------------ lifecycle

    def start_reading(self) -> None:
        self.health.set_not_ready(INPUT, "catching up with the logs")
        self._stop.clear()
        self._task = asyncio.create_task(self._run())

    async def stop_reading(self) -> None:
        """Let the batch in hand finish, then end the loop."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def progressed(self) -> Coroutine[Any, Any, bool]:
        """Await this for the loop's next pass (a batch applied, an idle read, a failure, its
        end). The pass is the one after the call, even if the awaiting starts later."""
        return self._progress.wait()

    def _passed(self) -> None:
        done, self._progress = self._progress, asyncio.Event()
        done.set()

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:
            self._passed()

    async def _loop(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                await self.step()
                backoff = 0.05
            except TrimmedError as e:
                self._end(f"input trimmed: {e}")
                self.log.error("input_trimmed", reader=self.reader, error=str(e))
                return
            except StopReading as e:
                self._end(f"stopped: {e}")
                self.log.error("reader_stopped", reader=self.reader, error=str(e))
                return
            except Exception as e:  # bus or store unreachable: not ready, retry
                self.health.set_not_ready(self._failing, f"{type(e).__name__}: {e}")
                self.log.warning(
                    "read_failed", reader=self.reader, error=f"{type(e).__name__}: {e}"
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                backoff = min(backoff * 2, 2.0)
            self._passed()

    def _end(self, reason: str) -> None:
        self.stopped_reason = reason
        self.health.set_not_ready(INPUT, reason)

    async def step(self) -> int:
        """Read one batch (waiting up to `read_timeout`), apply it, commit; entries applied."""
        self._failing = self.apply_key
        await self.prepare()
        streams = self.reading()
        after = {s: self.pos[s] for s in streams}
        self._failing = INPUT
        got = await self.bus.read_many(after, limit=self.batch_size, timeout=self.read_timeout)
        got = {s: entries for s, entries in got.items() if entries}
        n = 0
        if got:
            self._failing = self.apply_key
            bad = await self.apply(got)
            self._failing = INPUT
            if self.apply_key != INPUT:
                self.health.set_ready(self.apply_key)
            for stream, log_seq, message in bad:
                self.m_bad.labels(stream).inc()
                self.log.warning(
                    "bad_entry", reader=self.reader, stream=stream, log_seq=log_seq, error=message
                )
            for stream, entries in got.items():
                n += len(entries)
                self.m_applied.labels(stream).inc(len(entries))
                floor = self.commit_floor(stream)
                if floor > self._committed.get(stream, 0):
                    await self.bus.commit_position(stream, self.reader, floor)
                    self._committed[stream] = floor
        if all(len(entries) < self.batch_size for entries in got.values()):
            self.health.set_ready(INPUT)  # caught up with what the logs held at this read
        now = time.monotonic()
        if now - self._lag_at >= LAG_EVERY:
            self._lag_at = now
            for stream in streams:
                last = await self.bus.last(stream)
                if last < self.pos[stream]:  # the bus came back from an older copy
                    raise StopReading(
                        f"{stream} now ends at {last}, below the {self.pos[stream]} already "
                        "applied: the bus lost entries this reader has seen"
                    )
                self.m_lag.labels(stream).set(last - self.pos[stream])
        return n

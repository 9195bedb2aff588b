"""One shard's single writer: recover from snapshot + log, then read, apply, append, repeat.

`ShardWorker` owns what is common to a matching shard and a risk shard: the lease it writes
under, its log's last `log_seq`, the positions of its inputs, the time stamp, snapshots and
trimming. Subclasses (`dex.services.matching`, `dex.services.risk`) supply the pure core and
turn a batch of input entries into one log entry (plus entries for streams they feed).

Invariants:
- State in memory equals the fold of the log up to `self.last`. `process` moves the state
  ahead of the log; if it raises, or the append that follows fails for any reason, the
  state is thrown away (`dirty`) and rebuilt from the log before anything else happens. An
  input whose application raises (not a refusal) is reported as `InputFailed`, naming it.
- Input positions are recorded inside each log entry, so a restart resumes every input
  exactly where the last written entry left it: nothing is applied twice or skipped.
- Recovery re-applies the logged inputs and requires exactly the logged events; any
  difference raises `Divergence` and the shard stops (not ready, alert).
- The log is trimmed only below the snapshot and below every expected reader's position.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from dex.bus import Bus, Lease
from dex.runtime.settings import DEFAULTS
from dex.wire import codec
from dex.wire.layout import snapshot_name

SNAPSHOT_VERSION = 1
COMMIT_INTERVAL = 0.05  # seconds between two commits of our input positions (for trimming)
FORK_SNAPSHOTS = hasattr(os, "fork")  # periodic snapshots are serialized by a forked child
SNAPSHOT_STATE_SHARE = 0.25  # inputs between two snapshots, at least, per record of state
T = TypeVar("T")


PIPE_SIZE = 1 << 20  # bytes a snapshot pipe buffers (Linux), so the reader wakes less often


def threads_besides_this() -> int:
    """How many threads this process runs besides the calling one: the OS's count where
    /proc tells it (threads started by C libraries too), else Python's."""
    try:
        return len(os.listdir("/proc/self/task")) - 1
    except OSError:
        return threading.active_count() - 1


async def _read_pipe(fd: int) -> bytes:
    """Everything written to the pipe `fd` until its writer closes it, read by the event loop
    itself (no thread); closes `fd`, also when cancelled."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        while not done.done():
            try:
                chunk = os.read(fd, PIPE_SIZE)
            except BlockingIOError:
                return
            except OSError as e:
                done.set_exception(e)
                return
            if not chunk:
                done.set_result(None)
                return
            chunks.append(chunk)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return b"".join(chunks)


async def _reap(pid: int) -> int:
    """Wait for the child `pid` to end without blocking the loop or using a thread (polling
    `waitpid` with WNOHANG: a snapshot child ends right after closing its pipe); its exit code."""
    pause = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)


class TransientThreads(ThreadPoolExecutor):
    """An event loop's default executor that runs every call on a thread of its own, which
    ends with the call: a shard process at rest runs no thread but its main one, so its
    periodic snapshots may fork (`ShardWorker.take_snapshot`). The default executor's threads
    would otherwise stay for good after the first `getaddrinfo` (binding the HTTP port does
    one) and forking would never be safe."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="dex-transient")
        self._running: set[threading.Thread] = set()
        self._guard = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()

        def run() -> None:
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        result = fn(*args, **kwargs)
                    except BaseException as e:
                        future.set_exception(e)
                    else:
                        future.set_result(result)
            finally:
                with self._guard:
                    self._running.discard(threading.current_thread())

        with self._guard:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            thread = threading.Thread(target=run, name="dex-transient", daemon=True)
            self._running.add(thread)
        thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._guard:
            self._closed = True
            running = list(self._running)
        if wait:
            for thread in running:
                thread.join()
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


def keep_threads_transient(loop: asyncio.AbstractEventLoop) -> None:
    """Make `loop`'s default executor `TransientThreads` (once); the threads of the one it
    replaces end as it is freed."""
    if not isinstance(getattr(loop, "_default_executor", None), TransientThreads):
        loop.set_default_executor(TransientThreads())


class Divergence(RuntimeError):
    """Re-applying the log did not give the logged events: the shard must not go on."""


class InputFailed(RuntimeError):
    """Applying an input raised something other than a refusal (`CommandError`). The cores are
    deterministic, so a rebuild from the log meets the same failure at the same input: the
    replica retries once, then stops the shard (`dex.services.replica`).

    `where` names the input (`<stream>#<log_seq>`, or the positions a failed batch was read
    after when the failure is not in one input's application)."""

    def __init__(self, tag: str, where: str, error: BaseException) -> None:
        super().__init__(f"{tag}: applying {where} raised {type(error).__name__}: {error}")
        self.where = where


class ShardWorker(ABC):
    """The writer of one shard (`tag`, e.g. `me:0`); one instance per held lease."""

    def __init__(
        self,
        bus: Bus,
        tag: str,
        log_stream: str,
        *,
        batch_size: int = DEFAULTS.batch_size,
        snapshot_every: int = DEFAULTS.snapshot_every,
        clock_ns: Callable[[], int] = time.time_ns,
        log_readers: tuple[str, ...] = (),
        snapshot_fork: bool = DEFAULTS.snapshot_fork,
        snapshot_child_timeout: float = DEFAULTS.snapshot_child_timeout_ms / 1000,
    ) -> None:
        self.bus = bus
        self.tag = tag
        self.log_stream = log_stream
        self.snapshot = snapshot_name(tag)
        self.batch_size = batch_size
        self.snapshot_every = snapshot_every
        self.clock_ns = clock_ns
        self.log_readers = log_readers
        self.snapshot_fork = snapshot_fork and FORK_SNAPSHOTS
        self.snapshot_child_timeout = snapshot_child_timeout  # seconds; a slower child is killed
        self.lease: Lease | None = None
        self.last = 0  # last log_seq of our log
        self.pos: dict[str, int] = {}  # input stream -> last position applied
        self.ts = 0
        self.snap_seq = 0
        self.since_snapshot = 0
        self.dirty = True  # state must be rebuilt from the log before use
        self.bad_entries = 0
        # called with (stream, log_seq, message) for an entry that does not decode; the
        # replica sets it to log and count it
        self.on_bad_entry: Callable[[str, int, str], None] | None = None
        # called with (log_seq, error) when a snapshot written in the background failed
        self.on_snapshot_failed: Callable[[int, str], None] | None = None
        self._background: asyncio.Task[None] | None = None
        self.items_total = 0
        self.recovered_items = 0
        self.committed_inputs: tuple[str, ...] = ()  # inputs whose readers' positions we record
        self._committed: dict[str, int] = {}
        self._committed_at = 0.0
        self.active_at = time.monotonic()  # when an input was last applied
        # held from applying a batch until its append is done (the state is ahead of the
        # log then), so a snapshot taken beside the loop never catches that state
        self.applying = asyncio.Lock()

    # ------------------------------------------------------------------ core hooks

    @abstractmethod
    def reset(self) -> None:
        """Start from an empty core."""

    @abstractmethod
    def dump_core(self) -> bytes:
        """The core's snapshot."""

    @abstractmethod
    def load_core(self, data: bytes) -> None:
        """Replace the core with one restored from `data`."""

    @abstractmethod
    def state_hash(self) -> str:
        """The core's state hash (SHA-256 of its canonical snapshot)."""

    @abstractmethod
    def replay(self, log_seq: int, entry: bytes) -> int:
        """Re-apply one logged entry, check its events (`Divergence`); return its item count.

        Sets `self.pos` to the entry's positions and `self.ts` to its last stamp."""

    @abstractmethod
    def inputs(self) -> dict[str, int]:
        """The input streams to read now, with the position to read after."""

    @abstractmethod
    def process(
        self, got: dict[str, list[tuple[int, bytes]]]
    ) -> tuple[bytes, dict[str, list[bytes]], int] | None:
        """Apply a batch: return (log entry, entries for fed streams, item count) or None if
        nothing was applied (positions may still have moved past bad entries: the next
        entry written records them)."""

    def idle(self) -> bool:
        """Called when a read found nothing; may queue work (a `tick`). True if it did."""
        return False

    async def after_append(self) -> None:
        """After a successful append: record how far we have consumed `committed_inputs`
        (at most every COMMIT_INTERVAL), so their writers may trim below it."""
        now = time.monotonic()
        if now - self._committed_at < COMMIT_INTERVAL:
            return
        self._committed_at = now
        for stream in self.committed_inputs:
            p = self.pos.get(stream, 0)
            if p > self._committed.get(stream, 0):
                await self.bus.commit_position(stream, self.tag, p)
                self._committed[stream] = p

    # ------------------------------------------------------------------ helpers

    def _bad(self, stream: str, seq: int, message: str) -> None:
        """An input entry that is not what its stream carries: reported, skipped."""
        self.bad_entries += 1
        if self.on_bad_entry is not None:
            self.on_bad_entry(stream, seq, message)

    def stamp(self) -> int:
        """The next input time: `max(previous + 1, clock)` in integer nanoseconds."""
        ts = self.clock_ns()
        if ts <= self.ts:
            ts = self.ts + 1
        self.ts = ts
        return ts

    # ------------------------------------------------------------------ lifecycle

    async def recover(self) -> None:
        """Load the latest snapshot, then re-apply and check every logged entry after it."""
        assert self.lease is not None, "recover needs the shard's lease"
        snap = await self.bus.get_snapshot(self.snapshot)
        if snap is None:
            self.reset()
            self.pos, self.ts, last = {}, 0, 0
        else:
            last, data = snap
            env = codec.decode_snapshot(data)
            if env.v != SNAPSHOT_VERSION:
                raise Divergence(f"{self.tag}: snapshot version {env.v} is not {SNAPSHOT_VERSION}")
            self.load_core(env.core)
            self.pos, self.ts = dict(env.pos), env.ts
        self.snap_seq = last
        replayed = 0
        while True:
            got = await self.bus.read(self.log_stream, last, limit=self.batch_size)
            if not got:
                break
            for seq, entry in got:
                try:
                    replayed += self.replay(seq, entry)
                except (Divergence, InputFailed):
                    raise
                except Exception as e:  # the logged entry itself: retrying cannot help
                    raise InputFailed(self.tag, f"{self.log_stream}#{seq}", e) from e
                last = seq
        self.last = last
        self.since_snapshot = replayed
        self.recovered_items = replayed
        self.dirty = False

    async def step(self, timeout: float) -> int:
        """Read one batch (waiting up to `timeout`), apply it and append the outcome."""
        start = self.inputs()
        got = await self.bus.read_many(start, limit=self.batch_size, timeout=timeout)
        if not got and not self.idle():
            return 0
        async with self.applying:
            try:
                out = self.process(got)
            except Exception as e:  # the state is partly applied: rebuild it before going on
                self.dirty = True
                if isinstance(e, InputFailed):
                    raise
                after = ", ".join(f"{s}#{p}" for s, p in sorted(start.items()))
                raise InputFailed(self.tag, f"the batch after {after}", e) from e
            if out is None:
                return 0
            entry, also, n = out
            try:
                self.last = await self.bus.append(
                    self.log_stream, [entry], lease=self.lease, expect_last=self.last, also=also
                )
            except BaseException:
                self.dirty = True  # the state is ahead of the log: rebuild it before going on
                raise
            self.items_total += n
            self.since_snapshot += n
            self.active_at = time.monotonic()
        await self.after_append()
        return n

    def state_size(self) -> int:
        """About how many records a snapshot of the core holds (orders, accounts)."""
        return 0

    def snapshot_due(self) -> bool:
        """Every `snapshot_every` inputs, but no more often than every `SNAPSHOT_STATE_SHARE`
        of the state's size in inputs: a snapshot costs time in proportion to the state, so
        a large book would otherwise be serialized over and over (at 10,000 inputs a
        snapshot, a book of a million orders would be written out every half second), while
        recovery replays at most that share of the state's size after loading it."""
        n = self.since_snapshot
        if n < self.snapshot_every or self.snapshotting():
            return False
        return n >= self.state_size() * SNAPSHOT_STATE_SHARE

    def snapshotting(self) -> bool:
        """True while a snapshot taken in the background is still being written."""
        return self._background is not None and not self._background.done()

    async def take_snapshot(self, *, background: bool = False) -> None:
        """Store the core at `self.last` through the fenced write, then trim the log.

        With `background` (the periodic snapshots of a running shard), `snapshot_fork` set
        (`DEX_SNAPSHOT_FORK`, default true) and where the system can fork, the state is
        captured by forking: a child process serializes its copy of the state and hands the
        bytes over a pipe while this process goes on applying batches; the snapshot is stored
        and the log trimmed when the bytes have arrived. A large book takes a second or more
        to serialize, which the shard would otherwise spend not applying anything. One
        snapshot at a time: a foreground snapshot first waits for one in the background. The
        store is refused (`FencedError`) unless our log still holds the snapshot's position
        (a bus restored from an older copy may have lost it).

        A process forks only while it runs no other thread (`threads_besides_this`): a lock
        another thread holds at that moment (logging's, stdio's, a library's) would stay held
        forever in the child, which has no such thread to release it, and the child would hang
        until killed. Otherwise (the embedded mode runs persistence's SQLite connections on
        threads of their own) the snapshot is taken in place. A shard process keeps itself free
        of threads at rest (`keep_threads_transient`, and this class reads the child's pipe and
        reaps it from the event loop), so `dex serve` forks.
        """
        if background and self.snapshotting():
            return
        await self.join_snapshot()
        async with self.applying:
            assert self.lease is not None and not self.dirty
            seq = self.last
            if background and self.snapshot_fork and threads_besides_this() == 0:
                try:
                    pid, read_end = self._fork()
                except OSError as e:  # no memory or processes to fork: write it here instead
                    if self.on_snapshot_failed is not None:
                        self.on_snapshot_failed(seq, f"cannot fork ({e}); snapshot taken in place")
                else:
                    self._background = asyncio.create_task(self._finish_forked(pid, read_end, seq))
                    self.since_snapshot = 0
                    return
            data = self._snapshot_bytes()
            await self._store_snapshot(seq, data)
            self.since_snapshot = 0
            await self.trim()

    async def join_snapshot(self) -> None:
        """Wait for a snapshot being written in the background, if any."""
        task, self._background = self._background, None
        if task is not None:
            await task

    def _snapshot_bytes(self) -> bytes:
        env = codec.SnapshotEnvelope(SNAPSHOT_VERSION, self.dump_core(), dict(self.pos), self.ts)
        return codec.encode(env)

    async def _store_snapshot(self, seq: int, data: bytes) -> None:
        assert self.lease is not None
        await self.bus.put_snapshot(self.snapshot, seq, data, lease=self.lease, log=self.log_stream)
        self.snap_seq = max(self.snap_seq, seq)

    def _fork(self) -> tuple[int, int]:
        """Fork a child that writes the snapshot bytes of the current state to a pipe and
        exits; return (child pid, read end). Called with `applying` held."""
        read_end, write_end = os.pipe()
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            with contextlib.suppress(OSError):
                fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        try:
            pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise
        if pid == 0:  # the child: never returns into the event loop
            code = 1
            try:
                os.close(read_end)
                signal.set_wakeup_fd(-1)  # a signal here must not wake the parent's loop
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                gc.disable()  # collecting would copy every page of the shared state
                view = memoryview(self._snapshot_bytes())
                while view:
                    view = view[os.write(write_end, view) :]
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        return pid, read_end

    async def _finish_forked(self, pid: int, read_end: int, seq: int) -> None:
        """Collect a forked child's snapshot, store it, trim; a failure is reported to
        `on_snapshot_failed` (the next periodic snapshot tries again), or raised from
        `join_snapshot` when nothing listens."""
        try:
            try:
                data = await asyncio.wait_for(_read_pipe(read_end), self.snapshot_child_timeout)
            except TimeoutError:  # the pipe is closed by now
                os.kill(pid, signal.SIGKILL)
                await _reap(pid)
                raise RuntimeError(
                    f"the snapshot process took over {self.snapshot_child_timeout:g} s "
                    "and was killed"
                ) from None
            except asyncio.CancelledError:  # the shard is going away: so does the child
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)  # a killed child ends at once
                raise
            code = await _reap(pid)
            if code != 0 or not data:
                raise RuntimeError(f"the snapshot process exited with {code}")
            await self._store_snapshot(seq, data)
            async with self.applying:  # positions are ahead of the log while a batch is out
                await self.trim()
        except Exception as e:
            self.since_snapshot = max(self.since_snapshot, self.snapshot_every)  # due again
            if self.on_snapshot_failed is None:
                raise  # no one to tell: it surfaces where the snapshot is joined
            self.on_snapshot_failed(seq, f"{type(e).__name__}: {e}")

    async def trim(self) -> None:
        """Drop log entries no one needs: below the snapshot and every expected reader.
        Called with `applying` held: a batch being appended has moved the input positions
        past what the log holds, and inputs are trimmed by those positions."""
        below = self.snap_seq + 1
        known = await self.bus.positions(self.log_stream)
        for reader in self.log_readers:
            if reader not in known:
                return  # a reader that has not started yet still needs everything
            below = min(below, known[reader] + 1)
        if below > 1:
            await self.bus.trim(self.log_stream, below)

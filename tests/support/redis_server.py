"""Private `redis-server` processes for tests: start, stop, kill, restart, AOF copies.

`RedisServer.start()` runs `redis-server` on a free port of 127.0.0.1 in its own directory,
configured like the bus's production Redis (`appendonly yes`, `appendfsync always`, no RDB
snapshots, `maxmemory-policy noeviction`) and with automatic AOF rewrites off, so the AOF
directory only changes when a command is written. Redis 7 keeps the AOF as a directory
(`appendonlydir`: a base file, incremental files and a manifest); `snapshot_aof()` copies it
and `restart(from_aof=copy)` puts such a copy back before starting, which simulates a Redis
that came back having lost its most recent acknowledged writes.

`redis_url_or_skip()` is for fixtures: it yields `DEX_REDIS_URL` if set, else the URL of a
private server it starts (and stops afterwards), else skips the test (under `CI=true` the
suite's conftest turns a skip into a failure). Waiting for a server never sleeps blindly: it
polls PING until a deadline, waiting on the process itself between attempts so that a server
that dies is reported at once with its log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

BINARY = "redis-server"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
_POLL = 0.02  # seconds between PING attempts, spent waiting on the process


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def have_redis_server() -> bool:
    return shutil.which(BINARY) is not None


class RedisServer:
    """One private `redis-server` on `port`, with its data (AOF, log) in `dir`."""

    def __init__(
        self,
        directory: Path,
        port: int,
        *,
        owns_dir: bool = False,
        config: dict[str, str] | None = None,
    ) -> None:
        self.dir = directory
        self.port = port
        self._owns_dir = owns_dir
        self._config = dict(config or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._copies = 0

    @classmethod
    def start(
        cls,
        directory: Path | None = None,
        port: int | None = None,
        *,
        config: dict[str, str] | None = None,
    ) -> RedisServer:
        """Start a server in `directory` (default: a new temp dir, removed by `cleanup`).

        `config` overrides the durable defaults, e.g. `{"appendfsync": "everysec"}` for a
        server the bus must refuse."""
        owns = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="dex-redis-"))
        port = port if port is not None else free_port()
        server = cls(directory, port, owns_dir=owns, config=config)
        server._launch()
        return server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def aof_dir(self) -> Path:
        return self.dir / "appendonlydir"

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _launch(self) -> None:
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        config = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.dir),
            "logfile": str(self.log),
            "daemonize": "no",
            "appendonly": "yes",
            "appendfsync": "always",
            "auto-aof-rewrite-percentage": "0",
            "save": "",
            "maxmemory-policy": "noeviction",
            **self._config,
        }
        args = [BINARY]
        for name, value in config.items():
            args += [f"--{name}", value]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    if time.monotonic() > deadline:
                        self.kill()
                        raise RuntimeError(f"redis-server not ready: {self.log_tail()}") from None
                try:
                    code = self._proc.wait(timeout=_POLL)
                except subprocess.TimeoutExpired:
                    continue
                raise RuntimeError(f"redis-server exited with {code}: {self.log_tail()}")
        finally:
            client.close()

    def log_tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM and wait: Redis flushes the AOF and exits cleanly."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL and wait: a crash (with `appendfsync always` no acknowledged write is lost)."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
        proc.wait(timeout=STOP_TIMEOUT)

    def restart(self, *, from_aof: Path | None = None, kill: bool = False) -> None:
        """Stop (or kill) the server, optionally restore an AOF copy, start it again.

        Same port and directory, so the server reloads the AOF; `run_id` is new.
        """
        if kill:
            self.kill()
        else:
            self.stop()
        if from_aof is not None:
            shutil.rmtree(self.aof_dir, ignore_errors=True)
            shutil.copytree(from_aof, self.aof_dir)
        self._launch()

    def aof_files(self) -> list[Path]:
        """The files of the AOF directory (manifest, base and incremental files), sorted."""
        if not self.aof_dir.exists():
            return []
        return sorted(p for p in self.aof_dir.iterdir() if p.is_file())

    def snapshot_aof(self) -> Path:
        """Copy the AOF directory as it is now; pass the result to `restart(from_aof=...)`.

        Take it while no command is in flight: with `appendfsync always` every acknowledged
        write is then complete on disk.
        """
        self._copies += 1
        target = self.dir / "aof-copies" / str(self._copies)
        shutil.copytree(self.aof_dir, target)
        return target

    def cleanup(self) -> None:
        """Kill the server and remove its directory if `start` created it."""
        self.kill()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@contextlib.contextmanager
def private_redis_or_skip(config: dict[str, str] | None = None) -> Iterator[RedisServer]:
    """A private server for the duration of the block; skips if `redis-server` is missing
    (a failure under CI=true, like every skip)."""
    if not have_redis_server():
        pytest.skip(f"`{BINARY}` is not on PATH")
    with RedisServer.start(config=config) as server:
        yield server


@contextlib.contextmanager
def redis_url_or_skip() -> Iterator[str]:
    """`DEX_REDIS_URL` if set, else a private server's URL, else skip the test.

    Use in a fixture: `with redis_url_or_skip() as url: yield url`.
    """
    url = os.environ.get("DEX_REDIS_URL")
    if url:
        yield url
        return
    with private_redis_or_skip() as server:
        yield server.url

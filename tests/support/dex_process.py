"""A `dex` command run as a real process, its output read as it comes (JSON log records).

`DexProcess.start(args, env, cwd)` runs `python -m dex.cli <args>` with stdout and stderr
merged into a pipe that a thread drains into memory (a full pipe would block the process);
`records()` parses the lines that are JSON objects (the log records; the human lines such as
the printed URLs are skipped). `stop()` sends SIGTERM and waits, bounded.

`wait_on_process(what, check)` polls a check that asks a process (over HTTP, or in `/proc`)
until it holds, an HTTP error (the process not listening yet, or restarting) counting as "not
yet" (tests/support/polling.py).

Process-tree helpers read `/proc` (Linux): `children(pid)`, `state(pid)` (None once the
process is gone, "Z" while it is a zombie) and `cmdline(pid)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

from tests.support.polling import wait_until

DEADLINE = 60.0  # seconds a process may take to get where a test waits for it
POLL = 0.1  # seconds between two checks of a process


def ready(url: str) -> bool:
    """Whether the service at `url` (`http://host:port`) answers `/readyz` with 200; False
    while it is not listening or not ready."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_on_process(what: str, check: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    """`check()`'s first truthy value, polled every POLL s with HTTP errors retried; fails
    naming `what` after `timeout` s."""
    return wait_until(what, check, timeout=timeout, interval=POLL, retry_on=(httpx.HTTPError,))


class DexProcess:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._lines: list[str] = []
        self._lock = threading.Lock()
        assert proc.stdout is not None
        self._reader = threading.Thread(target=self._drain, args=(proc.stdout,), daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, args: list[str], env: dict[str, str], cwd: Path) -> DexProcess:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dex.cli", *args],
            env={**os.environ, **env},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _drain(self, stream: IO[bytes]) -> None:
        for raw in stream:
            with self._lock:
                self._lines.append(raw.decode(errors="replace"))

    def output(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def records(self) -> list[dict[str, Any]]:
        """The JSON object lines written so far, parsed."""
        with self._lock:
            lines = list(self._lines)
        out = []
        for line in lines:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to `timeout` (SIGKILL and fail after that); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"did not stop within {timeout} s of SIGTERM:\n{self.output()[-4000:]}"
            ) from None
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        """SIGKILL the process and whatever it started (cleanup after a failed test)."""
        for pid in children(self.pid):
            _signal(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait()


def children(pid: int) -> list[int]:
    """The ids of the processes whose parent is `pid` (empty once `pid` is gone)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def state(pid: int) -> str | None:
    """The one-letter state of process `pid` ("Z": zombie), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def cmdline(pid: int) -> list[str]:
    """The arguments of process `pid` (empty if it is gone or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)

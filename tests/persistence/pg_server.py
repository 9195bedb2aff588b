"""A private PostgreSQL server for the fault tests: `initdb` and `pg_ctl` of the installed
server, on a free port of 127.0.0.1, in a temporary folder (never the shared server).

`PgServer.create()` makes the cluster and starts it; `stop()` is `pg_ctl stop -m immediate`
(a crash: no checkpoint, recovery on the next start), `start()` starts it again on the same
port and folder, `cleanup()` stops it and removes the folder. As root, every command runs as
the `postgres` user (`initdb` refuses root), who gets the folder.

`pg_server_or_skip()` is for fixtures: skips with the reason when the binaries or the user
are missing (under `CI=true` the suite's conftest turns a skip into a failure).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import free_port

TIMEOUT = 30  # seconds for initdb and for pg_ctl's own waits


def binaries() -> Path | None:
    """The newest installed server's bin folder holding initdb and pg_ctl, or None."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all(os.access(Path(folder) / b, os.X_OK) for b in ("initdb", "pg_ctl")):
            return Path(folder)
    for name in ("initdb", "pg_ctl"):
        if shutil.which(name) is None:
            return None
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _as_server_user() -> list[str]:
    """The command prefix that runs a command as the server's user (root: `postgres`)."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


class PgServer:
    def __init__(self, bin_dir: Path, root: Path, port: int) -> None:
        self.bin = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = port

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def create(cls, bin_dir: Path) -> PgServer:
        root = Path(tempfile.mkdtemp(prefix="dex-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
        server = cls(bin_dir, root, free_port())
        server._run(
            "initdb",
            *("-D", str(server.data), "-U", "postgres", "-A", "trust"),
            *("-E", "UTF8", "--locale=C", "--no-sync"),
        )
        server.start()
        return server

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*_as_server_user(), str(self.bin / tool), *args]
        got = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        if got.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({got.returncode}): {got.stderr}\n{tail}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off"
        )
        self._run(
            "pg_ctl",
            *("start", "-w", "-t", str(TIMEOUT), "-D", str(self.data)),
            *("-l", str(self.root / "server.log"), "-o", options),
        )

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "stop", "-w", "-t", str(TIMEOUT), "-m", mode, "-D", str(self.data))

    def cleanup(self) -> None:
        if (self.data / "postmaster.pid").exists():  # running (a test may have stopped it)
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def pg_server_or_skip() -> Iterator[PgServer]:
    bin_dir = binaries()
    if bin_dir is None:
        pytest.skip("initdb / pg_ctl of a PostgreSQL server are not installed")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run initdb as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and there is no runuser to run initdb as postgres")
    server = PgServer.create(bin_dir)
    try:
        yield server
    finally:
        server.cleanup()

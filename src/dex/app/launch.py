"""What `dex up`, `dex up --distributed` and `dex serve <service>` do.

- Embedded: one process, the SQLite-kept embedded bus and SQLite history in the data folder,
  demo markets on first start, every service on its own port; prints the URLs.
- `serve`: one service against Redis; refuses a Redis without `appendonly yes` and
  `appendfsync always` unless `DEX_ALLOW_UNSAFE_REDIS` / `--allow-unsafe-redis`.
- Distributed: checks Redis, adds the demo markets, starts every service (with `--replicas`)
  as `dex serve` child processes and supervises them (`Supervisor`): every exit is reaped and
  logged, the child restarted with back-off; SIGTERM/SIGINT stops them all, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgspec

from dex.app.demo import add_demo_markets
from dex.app.run import Running, run_units
from dex.app.units import BUILDERS
from dex.runtime.logging import configure_logging, get_logger
from dex.runtime.server import run_loop
from dex.runtime.settings import DEFAULT_PORTS, SERVICES, Settings

REPLICA_PORT_STEP = 10  # replica i of a service listens on its port + 10 * i


def service_ports(base: int, replica: int = 0) -> dict[str, int]:
    """Ports of the services: the defaults (8080-8084), or `base`, `base + 1`, ... in the
    order of `SERVICES` when DEX_PORT is set; replica i adds `10 * i`."""
    if not base:
        return {s: DEFAULT_PORTS[s] + REPLICA_PORT_STEP * replica for s in SERVICES}
    return {s: base + i + REPLICA_PORT_STEP * replica for i, s in enumerate(SERVICES)}


def configure(settings: Settings, service: str) -> None:
    configure_logging(service, settings.log_level, library_level=settings.library_log_level)


_SMALL_COUNT = re.compile(r"[1-9]|1[0-9]|20")  # ASCII only: str.isdigit() takes "٣" and "²"


def parse_replicas(specs: tuple[str, ...]) -> dict[str, int]:
    counts = dict.fromkeys(SERVICES, 1)
    for spec in specs:
        name, sep, n = spec.partition("=")
        if not sep or name not in counts or not _SMALL_COUNT.fullmatch(n):
            raise click.BadParameter(
                f"{spec!r}: expected SERVICE=N with SERVICE one of {', '.join(SERVICES)} "
                "and N from 1 to 20",
                param_hint="--replicas",
            )
        counts[name] = int(n)
    return counts


def _print_urls(running: Running, settings: Settings, header: str) -> None:
    host = settings.host
    lines = [header]
    for u in running.units:
        port = running.servers[u.name].port
        lines.append(f"  {u.name:<16} http://{host}:{port}  (/healthz /readyz /metrics)")
    gw = running.servers.get("gateway")
    if gw is not None:
        lines.append(f"  API:  http://{host}:{gw.port}/v1/markets")
        lines.append(f"  docs: http://{host}:{gw.port}/docs")
    lines.append("Stop with Ctrl-C (SIGTERM): shards finish their batch and snapshot.")
    click.echo("\n".join(lines), err=False)
    sys.stdout.flush()


def _fail(message: str) -> int:
    click.echo(f"error: {message}", err=True)
    return 2


def run_embedded(settings: Settings) -> int:
    from dex.bus.sqlite import BusFileError, SqliteBus
    from dex.runtime.server import BindError

    # embedded means its own SQLite history beside its bus, whatever DEX_DATABASE_URL says: a
    # shared database would hold positions of another bus's logs
    settings = msgspec.structs.replace(settings, database_url="")
    data = Path(settings.data_dir)
    try:
        data.mkdir(parents=True, exist_ok=True)
        bus = SqliteBus(data / "bus.sqlite3")
    except (OSError, BusFileError) as e:
        return _fail(f"cannot use the data folder {data}: {e}")

    async def main() -> None:
        try:
            await add_demo_markets(bus)
            units = [build(bus, settings) for build in BUILDERS.values()]
            header = f"dex is up (embedded; data in {data.resolve()}):"
            await run_units(
                units,
                settings,
                on_ready=lambda r: _print_urls(r, settings, header),
                ports=service_ports(settings.port),
            )
        finally:
            bus.close()

    try:
        run_loop(main())
    except BindError as e:
        return _fail(f"{e} (another dex up running? set DEX_PORT to use other ports)")
    return 0


async def check_redis(url: str, allow_unsafe: bool) -> str | None:
    """None if the Redis at `url` keeps acknowledged writes; else what is wrong."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        conf: dict[Any, Any] = dict(await client.config_get("*"))
    finally:
        await client.aclose()
    appendonly = conf.get("appendonly")
    fsync = conf.get("appendfsync")
    evict = conf.get("maxmemory-policy")
    problems = []
    if appendonly != "yes":
        problems.append(f"appendonly is {appendonly!r}, need yes")
    if fsync != "always":
        problems.append(f"appendfsync is {fsync!r}, need always")
    if evict != "noeviction":
        problems.append(f"maxmemory-policy is {evict!r}, need noeviction")
    if problems and not allow_unsafe:
        return (
            f"the Redis at {url} may lose acknowledged writes ({'; '.join(problems)}); "
            "start it with --appendonly yes --appendfsync always, or pass --allow-unsafe-redis"
        )
    return None


def _redis_bus(settings: Settings) -> Any:
    from redis.exceptions import RedisError

    from dex.bus.redis import RedisBus

    if not settings.redis_url:
        sys.exit(
            _fail("DEX_REDIS_URL: must be set for the distributed mode (redis://host:port/db)")
        )
    try:
        problem = asyncio.run(check_redis(settings.redis_url, settings.allow_unsafe_redis))
    except (OSError, RedisError) as e:
        sys.exit(_fail(f"DEX_REDIS_URL: cannot reach Redis at {settings.redis_url}: {e}"))
    if problem:
        click.echo(f"error: {problem}", err=True)
        sys.exit(2)
    return RedisBus(settings.redis_url)


def run_service(settings: Settings, service: str) -> int:
    _redis_bus(settings)  # checks Redis before anything starts

    async def main() -> None:
        from dex.bus.redis import RedisBus

        bus = RedisBus(settings.redis_url)
        try:
            unit = BUILDERS[service](bus, settings)
            header = f"dex {service} is up (bus {settings.redis_url}):"
            await run_units([unit], settings, on_ready=lambda r: _print_urls(r, settings, header))
        finally:
            await bus.close()

    from dex.runtime.server import BindError

    try:
        if service == "gateway":  # the order path's front; it never forks
            run_loop(main())
        else:  # the sharded services fork for their snapshots (see run_loop)
            asyncio.run(main())
    except BindError as e:
        return _fail(str(e))
    return 0


def run_distributed(settings: Settings, counts: dict[str, int]) -> int:
    _redis_bus(settings)

    async def demo() -> None:
        from dex.bus.redis import RedisBus

        bus = RedisBus(settings.redis_url)
        try:
            await add_demo_markets(bus)
        finally:
            await bus.close()

    asyncio.run(demo())
    base = settings.port
    ports = service_ports(base)
    children: list[Child] = []
    for service in SERVICES:
        for i in range(counts[service]):
            port = service_ports(base, i)[service]
            env = dict(os.environ)
            env.update(
                DEX_PORT=str(port),
                DEX_PERSISTENCE_URL=f"http://127.0.0.1:{ports['persistence']}",
                DEX_MARKET_DATA_URL=f"http://127.0.0.1:{ports['market-data']}",
                DEX_REPLICA_ID=f"{service}-{i}-{os.getpid()}",
                DEX_REDIS_URL=settings.redis_url,
                DEX_ALLOW_UNSAFE_REDIS="true" if settings.allow_unsafe_redis else "false",
            )
            if settings.database_url:
                env["DEX_DATABASE_URL"] = settings.database_url
            cmd = (sys.executable, "-m", "dex.cli", "serve", service)
            children.append(Child(service, i, port, cmd, env))
    # a child gets stop_timeout for its service and again for its HTTP server
    kill_after = 2 * settings.stop_timeout_ms / 1000 + KILL_GRACE
    asyncio.run(Supervisor(children, kill_after=kill_after).run())
    return 0


# ---------------------------------------------------------------------- supervisor

BACKOFF_FIRST = 0.5  # seconds before the first restart of a child that exited
BACKOFF_CAP = 30.0  # the delay doubles on each quick exit, up to this
BACKOFF_RESET = 60.0  # a child up this long is healthy again: its next restart waits FIRST
KILL_GRACE = 5.0  # seconds past a child's own stop timeouts before it gets SIGKILL


@dataclass
class Child:
    """One supervised `dex serve` process: what to run, and how often it was restarted."""

    service: str
    replica: int
    port: int
    cmd: tuple[str, ...]
    env: dict[str, str]
    restarts: int = 0


class Supervisor:
    """Runs every child of `dex up --distributed` until SIGTERM/SIGINT.

    Each child has a keeper task that starts it, waits for it (which reaps it: no zombie),
    logs its exit (`child_exited` with service, replica, pid, status and signal) and starts it
    again after a back-off: BACKOFF_FIRST, doubling up to BACKOFF_CAP on each exit, back to
    BACKOFF_FIRST once a child stayed up BACKOFF_RESET seconds. Every start is logged
    (`child_started`, with the child's restart count). On SIGTERM/SIGINT nothing is restarted
    any more, every child gets SIGTERM and `kill_after` seconds to exit, then SIGKILL.
    """

    def __init__(
        self,
        children: list[Child],
        *,
        kill_after: float,
        backoff: tuple[float, float, float] = (BACKOFF_FIRST, BACKOFF_CAP, BACKOFF_RESET),
    ) -> None:
        self.children = children
        self.kill_after = kill_after
        self.first, self.cap, self.reset_after = backoff
        self.stopping = asyncio.Event()
        self.log = get_logger()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, sig)
        try:
            await asyncio.gather(*(self._keep(child) for child in self.children))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        self.log.info("supervisor_stopped")

    def _stop(self, sig: signal.Signals) -> None:
        if not self.stopping.is_set():
            self.log.info("supervisor_stopping", signal=sig.name)
        self.stopping.set()

    async def _keep(self, child: Child) -> None:
        """Run `child` again and again until the supervisor stops."""
        delay = self.first
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            started = loop.time()
            await self._run_once(child)
            if self.stopping.is_set():
                return
            if loop.time() - started >= self.reset_after:
                delay = self.first
            child.restarts += 1
            self.log.warning(
                "child_restarting",
                service=child.service,
                replica=child.replica,
                restarts=child.restarts,
                delay_s=delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, self.cap)

    async def _run_once(self, child: Child) -> None:
        """Start `child`, wait for its exit (or stop it on a stop request), log the exit."""
        try:
            proc = await asyncio.create_subprocess_exec(*child.cmd, env=child.env)
        except OSError as e:
            self.log.error("child_start_failed", service=child.service, error=str(e))
            return
        where = {"service": child.service, "replica": child.replica, "pid": proc.pid}
        self.log.info("child_started", **where, port=child.port, restarts=child.restarts)
        exited = asyncio.ensure_future(proc.wait())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                _send(proc, signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(exited), self.kill_after)
                except TimeoutError:
                    self.log.error("child_killed", **where, after_s=self.kill_after)
                    _send(proc, signal.SIGKILL)
            status = await exited
        finally:
            stop.cancel()
            if proc.returncode is None:  # cancelled (the supervisor failed): leave no child
                _send(proc, signal.SIGKILL)
        fields = {**where, "status": status, "signal": _signal_name(status)}
        if self.stopping.is_set():
            self.log.info("child_exited", **fields)
        else:
            self.log.error("child_exited", **fields)


def _send(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited
        proc.send_signal(sig)


def _signal_name(returncode: int) -> str | None:
    """The name of the signal that ended a process (negative return code), else None."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"

"""What `dex up`, `dex up --distributed` and `dex serve <service>` do.

- Embedded: one process, the SQLite-kept embedded bus and SQLite history in the data folder,
  demo markets on first start, every service on its own port; prints the URLs.
- `serve`: one service against Redis; refuses a Redis without `appendonly yes` and
  `appendfsync always` unless `DEX_ALLOW_UNSAFE_REDIS` / `--allow-unsafe-redis`.
- Distributed: checks Redis, adds the demo markets, starts every service (with `--replicas`)
  as `dex serve` child processes, forwards SIGTERM/SIGINT to them and waits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import msgspec

from dex.runtime.logging import configure_logging
from dex.runtime.settings import DEFAULT_PORTS, SERVICES, Settings
from dex.services.node import BUILDERS, Running, add_demo_markets, run_units

REPLICA_PORT_STEP = 10  # replica i of a service listens on its port + 10 * i


def service_ports(base: int, replica: int = 0) -> dict[str, int]:
    """Ports of the services: the defaults (8080-8084), or `base`, `base + 1`, ... in the
    order of `SERVICES` when DEX_PORT is set; replica i adds `10 * i`."""
    if not base:
        return {s: DEFAULT_PORTS[s] + REPLICA_PORT_STEP * replica for s in SERVICES}
    return {s: base + i + REPLICA_PORT_STEP * replica for i, s in enumerate(SERVICES)}


def configure(settings: Settings, service: str) -> None:
    configure_logging(service, settings.log_level)


def parse_replicas(specs: tuple[str, ...]) -> dict[str, int]:
    counts = dict.fromkeys(SERVICES, 1)
    for spec in specs:
        name, sep, n = spec.partition("=")
        if not sep or name not in counts or not n.isdigit() or not 1 <= int(n) <= 20:
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
        asyncio.run(main())
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
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    for service in SERVICES:
        for i in range(counts[service]):
            env = dict(os.environ)
            port = service_ports(base, i)[service]
            ports = service_ports(base)
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
            cmd = [sys.executable, "-m", "dex.cli", "serve", service]
            children.append((service, subprocess.Popen(cmd, env=env)))
            click.echo(f"  started {service} replica {i} (pid {children[-1][1].pid}) on :{port}")
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for _, child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for service, child in children:
        code = child.wait()
        if code and not stopping:
            status = code
            click.echo(f"  {service} (pid {child.pid}) exited with {code}", err=True)
    return status

"""Each service as a `Unit`: its health, metrics, HTTP routes and start/stop, built from the
settings (`BUILDERS`, started in `START_ORDER`). `dex.app.run.run_units` serves units in one
process; `dex up` runs all five, `dex serve <service>` one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dex.admin.routes import matching_admin_routes, risk_admin_routes
from dex.bus import Bus
from dex.gateway import Gateway
from dex.gateway.auth import Guard, add_rate_headers
from dex.gateway.binance import binance_api, binance_handlers
from dex.gateway.fastpath import OrderFastPath
from dex.gateway.keys import new_kek, parse_kek
from dex.gateway.ratelimit import Bucket, limiter_for
from dex.gateway.routes import order_placer, route_handlers
from dex.gateway.service import DailyTotals
from dex.runtime.health import Health
from dex.runtime.logging import get_logger
from dex.runtime.metrics import ServiceMetrics
from dex.runtime.settings import DEFAULT_PORTS, Settings, port_for, resolved_replica_id
from dex.services.matching import MatchingShard
from dex.services.replica import ShardReplica
from dex.services.risk import RiskShard
from dex.services.shard import ShardWorker
from dex.wire.layout import MATCHING, RISK

KEK_FILE = "key-encryption-key"  # in the data folder: made by the first start outside production


@dataclass
class Unit:
    """One service inside a process."""

    name: str
    port: int
    health: Health
    metrics: ServiceMetrics
    routes: list[Any]
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]
    openapi: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    app_options: dict[str, Any] = field(default_factory=dict)  # for dex.runtime.http.build_app
    # the ASGI app to serve around the built one (the gateway: its order route's fast path)
    wrap: Callable[[Any], Any] | None = None


def _unit_base(name: str, settings: Settings) -> tuple[ServiceMetrics, Health, Any]:
    metrics = ServiceMetrics(name)
    return metrics, Health(metrics), get_logger(service=name)


def _sharded(
    bus: Bus, settings: Settings, service: str, count: int, new: Callable[..., ShardWorker]
) -> tuple[ShardReplica, ServiceMetrics, Health]:
    """A replica of a sharded service: `new(index, **common)` builds the shard writer."""
    metrics, health, log = _unit_base(service, settings)
    common = {
        "matching_shards": settings.matching_shards,
        "risk_shards": settings.risk_shards,
        "batch_size": settings.batch_size,
        "snapshot_every": settings.snapshot_every,
        "snapshot_fork": settings.snapshot_fork,
        "snapshot_child_timeout": settings.snapshot_child_timeout_ms / 1000,
    }

    replica = ShardReplica(
        bus,
        service,
        count,
        lambda index: new(index, **common),
        owner=resolved_replica_id(settings),
        ttl=settings.lease_ttl_ms / 1000,
        max_shards=settings.max_shards_per_replica,
        idle_check=settings.idle_check_ms / 1000,
        health=health,
        metrics=metrics,
        log=log,
    )
    return replica, metrics, health


def matching_unit(bus: Bus, settings: Settings) -> Unit:
    replica, metrics, health = _sharded(
        bus,
        settings,
        MATCHING,
        settings.matching_shards,
        lambda m, **kw: MatchingShard(bus, m, **kw),
    )

    return Unit(
        MATCHING,
        port_for(settings, MATCHING),
        health,
        metrics,
        matching_admin_routes(bus, replica),
        replica.start,
        replica.stop,
        extra={"replica": replica},
    )


def risk_unit(bus: Bus, settings: Settings) -> Unit:
    replica, metrics, health = _sharded(
        bus,
        settings,
        RISK,
        settings.risk_shards,
        lambda r, **kw: RiskShard(
            bus, r, max_lag=settings.max_lag, max_api_keys=settings.max_api_keys, **kw
        ),
    )

    return Unit(
        RISK,
        port_for(settings, RISK),
        health,
        metrics,
        risk_admin_routes(bus, settings, replica),
        replica.start,
        replica.stop,
        extra={"replica": replica},
    )


def gateway_unit(bus: Bus, settings: Settings) -> Unit:
    metrics, health, log = _unit_base("gateway", settings)
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    persistence = settings.persistence_url or f"http://{host}:{DEFAULT_PORTS['persistence']}"
    market_data = settings.market_data_url or f"http://{host}:{DEFAULT_PORTS['market-data']}"
    limiter = limiter_for(settings.redis_url)
    daily = DailyTotals(getattr(limiter, "_client", None))
    gw = Gateway(
        bus,
        risk_shards=settings.risk_shards,
        matching_shards=settings.matching_shards,
        health=health,
        metrics=metrics,
        log=log,
        faucet=settings.faucet,
        persistence_url=persistence,
        market_data_url=market_data,
        kek=parse_kek(key_encryption_key(settings)),
        chain_id=settings.chain_id,
        recv_window_ms=settings.recv_window_ms,
        faucet_caps=(int(settings.faucet_max_per_call), int(settings.faucet_max_per_day)),
        daily=daily,
        wait=settings.gateway_wait_ms / 1000,
        outcomes_kept=settings.gateway_outcomes_kept,
        proxy_timeout=settings.gateway_proxy_timeout_ms / 1000,
        max_trades=settings.market_data_recent_trades,
        feed_max_buffer=settings.ws_max_buffer_bytes,
    )
    buckets = {
        name: Bucket.parse(name, getattr(settings, f"rate_limit_{name}"))
        for name in ("public", "private", "orders")
    }
    guard = Guard(
        gw.keys, limiter, buckets, recv_window_ms=settings.recv_window_ms, now_ms=gw.now_ms
    )
    binance = binance_api(gw, guard, getattr(limiter, "_client", None))

    async def stop() -> None:
        await gw.stop()
        await limiter.close()

    return Unit(
        "gateway",
        port_for(settings, "gateway"),
        health,
        metrics,
        route_handlers(gw) + binance_handlers(binance),
        gw.start,
        stop,
        openapi=True,
        extra={"gateway": gw},
        app_options={
            "guards": [guard],
            "before_send": [add_rate_headers],
            "cors_origins": settings.cors_origins,
            "max_body_bytes": settings.max_body_bytes,
        },
        wrap=lambda app: OrderFastPath(
            app,
            place=order_placer(gw),
            guard=guard,
            max_body_bytes=settings.max_body_bytes,
            binance=binance,
        ),
    )


def key_encryption_key(settings: Settings) -> str:
    """The key that seals API secrets: `DEX_KEY_ENCRYPTION_KEY`, else (outside production)
    the one in the data folder, made on first start (mode 0600; every replica and process
    sharing the folder uses the same)."""
    if settings.key_encryption_key:
        return settings.key_encryption_key
    path = Path(settings.data_dir) / KEK_FILE
    if not path.exists():
        # written whole under another name, then linked: a process starting beside us
        # reads either no file or the whole key, never half of one
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{KEK_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_kek() + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    return path.read_text().strip()


def persistence_unit(bus: Bus, settings: Settings) -> Unit:
    from dex.persistence.service import PersistenceService
    from dex.persistence.store import history_url

    metrics, health, log = _unit_base("persistence", settings)
    url = history_url(settings.database_url, settings.data_dir)
    svc = PersistenceService(
        bus,
        url,
        risk_shards=settings.risk_shards,
        matching_shards=settings.matching_shards,
        health=health,
        metrics=metrics,
        log=log,
        max_limit=settings.persistence_max_limit,
        sqlite_busy_timeout=settings.sqlite_busy_timeout_ms / 1000,
        proxy_timeout_ms=settings.gateway_proxy_timeout_ms,
        owner=resolved_replica_id(settings),
        lease_ttl=settings.lease_ttl_ms / 1000,
    )
    return Unit(
        "persistence",
        port_for(settings, "persistence"),
        health,
        metrics,
        svc.route_handlers(),
        svc.start,
        svc.stop,
        extra={"service": svc},
    )


def market_data_unit(bus: Bus, settings: Settings) -> Unit:
    from dex.marketdata.service import HISTORY_TIMEOUT, CandleHistory, MarketDataService

    metrics, health, log = _unit_base("market-data", settings)
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    persistence = settings.persistence_url or f"http://{host}:{DEFAULT_PORTS['persistence']}"
    # older candles than it keeps: answered before the gateway's proxy gives up on us
    timeout = min(HISTORY_TIMEOUT, settings.gateway_proxy_timeout_ms / 2000)
    svc = MarketDataService(
        bus,
        risk_shards=settings.risk_shards,
        matching_shards=settings.matching_shards,
        health=health,
        metrics=metrics,
        log=log,
        recent_trades=settings.market_data_recent_trades,
        max_levels=settings.market_data_max_levels,
        feed_keep=settings.market_data_feed_keep,
        history=CandleHistory(persistence, timeout=timeout),
    )
    return Unit(
        "market-data",
        port_for(settings, "market-data"),
        health,
        metrics,
        svc.route_handlers(),
        svc.start,
        svc.stop,
        extra={"service": svc},
    )


BUILDERS: dict[str, Callable[[Bus, Settings], Unit]] = {
    "gateway": gateway_unit,
    MATCHING: matching_unit,
    "market-data": market_data_unit,
    RISK: risk_unit,
    "persistence": persistence_unit,
}
START_ORDER = ("persistence", "market-data", MATCHING, RISK, "gateway")

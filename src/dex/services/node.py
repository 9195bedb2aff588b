"""Assembling services into a process: `dex up` (embedded) and `dex serve <service>`.

A `Unit` is one service: its health, metrics, HTTP app and start/stop. `run_units` owns the
process lifecycle: bind every port, start every unit, mark them started, wait for SIGTERM or
SIGINT, then stop taking work (`/readyz` 503), stop the units in order (each shard finishes
its batch, snapshots and deletes its lease) within `stop_timeout`, close the ports, return.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import get, post

from dex.bus import Bus, TrimmedError
from dex.core import commands as mc
from dex.core.enums import MarketStatus
from dex.core.errors import CommandError
from dex.core.markets import (
    MAX_DECIMALS,
    Asset,
    MarketParams,
    MarketSpec,
    check_asset,
    check_market_symbol,
    needed_decimals,
)
from dex.core.numbers import to_steps
from dex.risk import commands as rc
from dex.risk import events as rev
from dex.risk.address import canonical_address
from dex.runtime.health import Health
from dex.runtime.http import ApiError, build_app
from dex.runtime.logging import get_logger
from dex.runtime.metrics import ServiceMetrics
from dex.runtime.server import HttpServer
from dex.runtime.settings import DEFAULT_PORTS, Settings, port_for, resolved_replica_id
from dex.services import codec
from dex.services.gateway import Gateway
from dex.services.ids import CREDIT_PREFIX, new_credit_tx_id
from dex.services.layout import ADMIN_STREAM, MATCHING, RISK, risk_in, risk_log, shard_for
from dex.services.matching import MatchingShard
from dex.services.replica import ShardReplica
from dex.services.risk import RiskShard
from dex.services.shard import ShardWorker

DEMO_MARKETS = (
    MarketSpec(
        market="ETH-USDC",
        base="ETH",
        quote="USDC",
        tick_size="0.01",
        lot_size="0.0001",
        min_size="0.0001",
        min_notional="1",
        price_band_bps=1000,
    ),
    MarketSpec(
        market="BTC-USDC",
        base="BTC",
        quote="USDC",
        tick_size="0.1",
        lot_size="0.00001",
        min_size="0.00001",
        min_notional="1",
        price_band_bps=1000,
    ),
)


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


def _unit_base(name: str, settings: Settings) -> tuple[ServiceMetrics, Health, Any]:
    metrics = ServiceMetrics(name)
    return metrics, Health(metrics), get_logger(service=name)


# ---------------------------------------------------------------------- admin requests


class StatusRequest(msgspec.Struct, forbid_unknown_fields=True):
    status: MarketStatus


class DisableRequest(msgspec.Struct, forbid_unknown_fields=True):
    market: str | None = None


class CreditRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Test funds (no `tx_id`: the exchange makes a new one), or a chain deposit the operator
    credits by hand (`tx_id`, `log_index`): credited once, a repeat is a 409."""

    asset: str
    amount: str
    tx_id: str | None = None
    log_index: Annotated[int, msgspec.Meta(ge=0, lt=2**32)] = 0


class LimitsRequest(msgspec.Struct, forbid_unknown_fields=True):
    max_open_orders: int = 0
    max_order_notional: dict[str, str] = msgspec.field(default_factory=dict)


class FeesRequest(msgspec.Struct, forbid_unknown_fields=True):
    market: str
    maker_bps: int
    taker_bps: int


def shards_route(replica: ShardReplica) -> Any:
    """`GET /internal/shards`: what this replica writes, for operators and fault tests."""

    @get("/internal/shards")
    async def shards(hash: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for w in list(replica.workers.values()):
            info: dict[str, Any] = {
                "owner": replica.owner,
                "epoch": w.lease.epoch if w.lease else None,
                "log_seq": w.last,
                "snapshot_log_seq": w.snap_seq,
                "recovered": not w.dirty,
                "positions": dict(w.pos),
            }
            if hash and not w.dirty:
                info["state_hash"] = w.state_hash()
            out[w.tag] = info
        return {"owner": replica.owner, "shards": out}

    return shards


def _admin_account(raw: str) -> str:
    account = canonical_address(raw)
    if account is None:
        raise ApiError(400, "invalid_address", "not a wallet address (0x + 40 hex)", "account")
    return account


async def _admin_append(bus: Bus, stream: str, cmd: Any) -> dict[str, Any]:
    seq = await bus.append(stream, [codec.encode(cmd)])
    return {"accepted": True, "stream": stream, "log_seq": seq, "cmd": msgspec.to_builtins(cmd)}


class AdminView:
    """The markets and assets named on the admin stream, read to its end when a check needs
    it: what every engine will know, whichever shards this replica holds (a standby holds
    none). Mirrors the engines: a market or asset they refuse is not added."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.pos = 0
        self.markets: set[str] = set()
        self.assets: dict[str, Asset] = {}
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            while got := await self.bus.read(ADMIN_STREAM, self.pos, limit=1000):
                for seq, data in got:
                    self.pos = seq
                    with contextlib.suppress(codec.BadEntry):
                        self._apply(codec.decode_admin(data))

    def _apply(self, cmd: Any) -> None:
        if isinstance(cmd, mc.AddAsset):
            with contextlib.suppress(CommandError):
                self.assets.setdefault(cmd.asset.symbol, check_asset(cmd.asset))
        elif isinstance(cmd, mc.AddMarket) and cmd.spec.market not in self.markets:
            try:
                params = check_spec(cmd.spec, self.assets)
            except ApiError:
                return
            self.assets.setdefault(params.base.symbol, params.base)
            self.assets.setdefault(params.quote.symbol, params.quote)
            self.markets.add(cmd.spec.market)

    async def market(self, symbol: str) -> str:
        """`symbol` if it names a market; else a 404 naming it."""
        if symbol not in self.markets:
            await self.refresh()
        if symbol not in self.markets:
            raise ApiError(404, "unknown_market", f"no market {symbol!r}", "market")
        return symbol

    async def asset(self, symbol: str, field: str) -> Asset:
        """The asset `symbol`; else a 400 naming `field`."""
        if symbol not in self.assets:
            await self.refresh()
        asset = self.assets.get(symbol)
        if asset is None:
            raise ApiError(400, "unknown_asset", f"no asset {symbol!r}", field)
        return asset


CREDIT_WAIT = 10.0  # seconds a credit waits for the ledger's answer
_TX_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")


def _operator_tx_id(raw: str) -> str:
    if _TX_ID.fullmatch(raw) is None:
        raise ApiError(
            400, "invalid_request", "1 to 100 characters of A-Z a-z 0-9 . _ : -", "tx_id"
        )
    rest = raw[len(CREDIT_PREFIX) :]
    if raw.startswith(CREDIT_PREFIX) and not rest.isdigit():
        raise ApiError(
            400, "invalid_request", f"{CREDIT_PREFIX} must be followed by digits", "tx_id"
        )
    return raw


async def _risk_outcome(
    bus: Bus, log: str, after: int, stream: str, seq: int
) -> codec.RiskItem | None:
    """Risk's answer to the command at (`stream`, `seq`): the item of its log entries after
    `after` that names it; None if none came within `CREDIT_WAIT`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + CREDIT_WAIT
    while (left := end - loop.time()) > 0:
        try:
            got = await bus.read(log, after, limit=1000, timeout=min(left, 1.0))
        except TrimmedError:
            return None
        for pos, data in got:
            after = pos
            try:
                entry: codec.RiskEntry = codec.decode_risk_entry(data)
            except codec.BadEntry:
                continue
            for item in entry.items:
                if item.cmd is not None and (item.input.stream, item.input.log_seq) == (
                    stream,
                    seq,
                ):
                    return item
    return None


def check_spec(spec: MarketSpec, known: dict[str, Asset] | None = None) -> MarketParams:
    """The checks the engines apply to a new market, so the admin endpoint can refuse it:
    assets it names that are not `known` get the decimals its steps need (at most 9)."""
    known = known or {}
    try:
        check_market_symbol(spec)
        base_dec, quote_dec = needed_decimals(spec)
        pair = []
        for symbol, dec, field in (
            (spec.base, base_dec, "lot_size"),
            (spec.quote, quote_dec, "tick_size"),
        ):
            asset = known.get(symbol)
            if asset is None:
                if dec > MAX_DECIMALS:
                    raise CommandError(
                        field, f"needs {dec} decimals of {symbol}; at most {MAX_DECIMALS}"
                    )
                asset = Asset(symbol=symbol, decimals=dec)
            pair.append(asset)
        return MarketParams(spec, pair[0], pair[1])
    except CommandError as e:
        raise ApiError(400, "invalid_market", e.message, e.field) from None
    except (ValueError, msgspec.ValidationError) as e:
        raise ApiError(400, "invalid_market", str(e)) from None


# ---------------------------------------------------------------------- units


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

    view = AdminView(bus)

    @post("/admin/markets", opt={"admin": True}, status_code=200)
    async def add_market(data: MarketSpec) -> dict[str, Any]:
        known: dict[str, Asset] = {}
        for w in list(replica.workers.values()):
            known.update(w.engine.assets)  # type: ignore[attr-defined]
        if any(data.market in w.engine.markets for w in replica.workers.values()):  # type: ignore[attr-defined]
            raise ApiError(409, "market_exists", f"market {data.market} already exists", "market")
        check_spec(data, known)
        return await _admin_append(bus, ADMIN_STREAM, mc.AddMarket(spec=data))

    @post("/admin/markets/{market:str}/status", opt={"admin": True}, status_code=200)
    async def set_status(market: str, data: StatusRequest) -> dict[str, Any]:
        await view.market(market)
        return await _admin_append(
            bus, ADMIN_STREAM, mc.SetMarketStatus(market=market, status=data.status)
        )

    @post("/admin/snapshot", opt={"admin": True}, status_code=200)
    async def snapshot_now() -> dict[str, Any]:
        done = {}
        for w in list(replica.workers.values()):
            if not w.dirty:
                await w.take_snapshot()
                done[w.tag] = w.snap_seq
        return {"snapshots": done}

    return Unit(
        MATCHING,
        port_for(settings, MATCHING),
        health,
        metrics,
        [add_market, set_status, snapshot_now, shards_route(replica)],
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
        lambda r, **kw: RiskShard(bus, r, max_lag=settings.max_lag, **kw),
    )

    view = AdminView(bus)

    def to_shard(account: str) -> str:
        return risk_in(shard_for(account, settings.risk_shards))

    @post("/admin/accounts/{account:str}/freeze", opt={"admin": True}, status_code=200)
    async def freeze(account: str) -> dict[str, Any]:
        a = _admin_account(account)
        return await _admin_append(bus, to_shard(a), rc.Freeze(account=a))

    @post("/admin/accounts/{account:str}/unfreeze", opt={"admin": True}, status_code=200)
    async def unfreeze(account: str) -> dict[str, Any]:
        a = _admin_account(account)
        return await _admin_append(bus, to_shard(a), rc.Unfreeze(account=a))

    @post("/admin/accounts/{account:str}/disable", opt={"admin": True}, status_code=200)
    async def disable(account: str, data: DisableRequest) -> dict[str, Any]:
        a = _admin_account(account)
        if data.market is not None:
            await view.market(data.market)
        return await _admin_append(
            bus, to_shard(a), rc.DisableTrading(account=a, market=data.market)
        )

    @post("/admin/accounts/{account:str}/enable", opt={"admin": True}, status_code=200)
    async def enable(account: str, data: DisableRequest) -> dict[str, Any]:
        a = _admin_account(account)
        if data.market is not None:
            await view.market(data.market)
        return await _admin_append(
            bus, to_shard(a), rc.EnableTrading(account=a, market=data.market)
        )

    @post("/admin/accounts/{account:str}/credit", opt={"admin": True}, status_code=200)
    async def credit(account: str, data: CreditRequest) -> dict[str, Any]:
        """Append the deposit and answer with the ledger's outcome: credited (200), a
        deposit it already credited (409 duplicate_deposit), refused (400)."""
        if not settings.faucet:
            raise ApiError(403, "faucet_disabled", "crediting test funds is disabled here")
        a = _admin_account(account)
        asset = await view.asset(data.asset, "asset")
        try:
            amount = to_steps(
                data.amount,
                Decimal(1).scaleb(-asset.decimals),
                "amount",
                unit=f"{asset.symbol} units",
            )
        except CommandError as e:
            raise ApiError(400, "invalid_request", e.message, e.field) from None
        tx_id = new_credit_tx_id() if data.tx_id is None else _operator_tx_id(data.tx_id)
        cmd = rc.Deposit(
            account=a, asset=asset.symbol, amount=amount, tx_id=tx_id, log_index=data.log_index
        )
        stream, log = to_shard(a), risk_log(shard_for(a, settings.risk_shards))
        after = await bus.last(log)
        answer = await _admin_append(bus, stream, cmd)
        item = await _risk_outcome(bus, log, after, stream, answer["log_seq"])
        if item is None:
            raise ApiError(
                504,
                "timeout",
                f"no answer from risk within {CREDIT_WAIT:g} s; the deposit is logged "
                f"(log_seq {answer['log_seq']}) and will be applied",
            )
        if item.error is not None:
            raise ApiError(400, "invalid_request", item.error)
        for ev in item.events:
            if isinstance(ev, rev.DepositCredited):
                return {**answer, "available_units": ev.available, "locked_units": ev.locked}
            if isinstance(ev, rev.RequestRejected):
                raise ApiError(400, str(ev.code), ev.message)
        raise ApiError(
            409,
            "duplicate_deposit",
            f"deposit {tx_id} (log index {data.log_index}) was already credited; nothing changed",
            "tx_id",
        )

    @post("/admin/halt", opt={"admin": True}, status_code=200)
    async def halt() -> dict[str, Any]:
        return await _admin_append(bus, ADMIN_STREAM, rc.GlobalHalt())

    @post("/admin/resume", opt={"admin": True}, status_code=200)
    async def resume() -> dict[str, Any]:
        return await _admin_append(bus, ADMIN_STREAM, rc.Resume())

    @post("/admin/fees", opt={"admin": True}, status_code=200)
    async def fees(data: FeesRequest) -> dict[str, Any]:
        await view.market(data.market)
        if (
            not -10_000 <= data.maker_bps <= 10_000
            or not -10_000 <= data.taker_bps <= 10_000
            or data.maker_bps < -data.taker_bps
        ):
            raise ApiError(
                400, "invalid_fee_rates", "need |bps| <= 10000 and maker_bps >= -taker_bps"
            )
        return await _admin_append(
            bus,
            ADMIN_STREAM,
            rc.SetFees(market=data.market, maker_bps=data.maker_bps, taker_bps=data.taker_bps),
        )

    @post("/admin/accounts/{account:str}/limits", opt={"admin": True}, status_code=200)
    async def limits(account: str, data: LimitsRequest) -> dict[str, Any]:
        a = _admin_account(account)
        if data.max_open_orders < 0:
            raise ApiError(400, "invalid_request", "must not be negative", "max_open_orders")
        notional: dict[str, int] = {}
        for symbol, text in data.max_order_notional.items():
            asset = await view.asset(symbol, "max_order_notional")
            try:
                notional[symbol] = to_steps(
                    text,
                    Decimal(1).scaleb(-asset.decimals),
                    "max_order_notional",
                    unit=f"{symbol} units",
                )
            except CommandError as e:
                raise ApiError(400, "invalid_request", e.message, e.field) from None
        cmd = rc.SetLimits(
            account=a, max_open_orders=data.max_open_orders, max_order_notional=notional
        )
        return await _admin_append(bus, ADMIN_STREAM, cmd)

    routes = [freeze, unfreeze, disable, enable, credit, halt, resume, fees, limits]
    routes.append(shards_route(replica))
    return Unit(
        RISK,
        port_for(settings, RISK),
        health,
        metrics,
        routes,
        replica.start,
        replica.stop,
        extra={"replica": replica},
    )


def gateway_unit(bus: Bus, settings: Settings) -> Unit:
    metrics, health, log = _unit_base("gateway", settings)
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    persistence = settings.persistence_url or f"http://{host}:{DEFAULT_PORTS['persistence']}"
    market_data = settings.market_data_url or f"http://{host}:{DEFAULT_PORTS['market-data']}"
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
    )
    return Unit(
        "gateway",
        port_for(settings, "gateway"),
        health,
        metrics,
        gw.route_handlers(),
        gw.start,
        gw.stop,
        openapi=True,
        extra={"gateway": gw},
    )


def persistence_unit(bus: Bus, settings: Settings) -> Unit:
    from dex.services.persistence import PersistenceService

    metrics, health, log = _unit_base("persistence", settings)
    url = settings.database_url or f"sqlite+aiosqlite:///{Path(settings.data_dir) / 'dex.sqlite3'}"
    svc = PersistenceService(
        bus,
        url,
        risk_shards=settings.risk_shards,
        matching_shards=settings.matching_shards,
        health=health,
        metrics=metrics,
        log=log,
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
    from dex.services.marketdata import MarketDataService

    metrics, health, log = _unit_base("market-data", settings)
    svc = MarketDataService(
        bus,
        risk_shards=settings.risk_shards,
        matching_shards=settings.matching_shards,
        health=health,
        metrics=metrics,
        log=log,
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


DEMO_ASSETS = (
    Asset(symbol="ETH", decimals=9),
    Asset(symbol="BTC", decimals=8),
    Asset(symbol="USDC", decimals=6),
)


async def add_demo_markets(bus: Bus) -> bool:
    """On an empty admin stream, add the demo assets and markets; True if it did."""
    if await bus.last(ADMIN_STREAM):
        return False
    cmds: list[Any] = [mc.AddAsset(asset=a) for a in DEMO_ASSETS]
    cmds += [mc.AddMarket(spec=s) for s in DEMO_MARKETS]
    await bus.append(ADMIN_STREAM, [codec.encode(c) for c in cmds], expect_last=0)
    return True


def _local_upstreams(units: list[Unit], servers: dict[str, HttpServer], settings: Settings) -> None:
    """A gateway in the same process as persistence / market-data talks to their bound ports."""
    gw = next((u.extra["gateway"] for u in units if "gateway" in u.extra), None)
    if gw is None:
        return
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    if "persistence" in servers:
        gw.persistence_url = f"http://{host}:{servers['persistence'].port}"
    if "market-data" in servers:
        gw.market_data_url = f"http://{host}:{servers['market-data'].port}"


@dataclass
class Running:
    """What `run_units` started, for callers that print URLs or drive tests."""

    units: list[Unit]
    servers: dict[str, HttpServer]
    stop: asyncio.Event


async def run_units(
    units: list[Unit],
    settings: Settings,
    *,
    on_ready: Callable[[Running], Awaitable[None] | None] | None = None,
    stop: asyncio.Event | None = None,
    ports: dict[str, int] | None = None,
) -> None:
    """Serve `units` until SIGTERM/SIGINT (or `stop` is set), then stop them gracefully.

    `ports` overrides the units' ports (0: any free port, as tests use)."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    servers: dict[str, HttpServer] = {}
    log = get_logger()
    ordered = sorted(units, key=lambda u: START_ORDER.index(u.name))
    try:
        for u in ordered:
            app = build_app(
                u.name,
                u.health,
                u.metrics,
                route_handlers=u.routes,
                admin_token=settings.admin_token,
                openapi=u.openapi,
            )
            srv = HttpServer(app, stop_timeout=max(1, settings.stop_timeout_ms // 1000))
            await srv.start(settings.host, u.port if ports is None else ports.get(u.name, u.port))
            servers[u.name] = srv
        _local_upstreams(ordered, servers, settings)
        for u in ordered:
            await u.start()
            u.health.started = True
            log.info("service_started", service=u.name, port=servers[u.name].port)
        if on_ready is not None:
            res = on_ready(Running(ordered, servers, stop))
            if res is not None:
                await res
        await stop.wait()
    finally:
        log.info("stopping")
        for u in ordered:
            u.health.stopping = True
        for u in reversed(ordered):
            try:
                await asyncio.wait_for(u.stop(), settings.stop_timeout_ms / 1000)
            except Exception as e:
                log.error("stop_failed", service=u.name, error=f"{type(e).__name__}: {e}")
        for srv in servers.values():
            await srv.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        log.info("stopped")

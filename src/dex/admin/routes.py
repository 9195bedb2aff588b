"""The admin routes: `matching_admin_routes` (markets, market status, snapshots) served by
the matching-engine, `risk_admin_routes` (accounts, credits, fees, limits, halt) served by
the risk-engine, and `GET /internal/shards` on both. Commands go to the admin stream or the
account's risk input stream; a route that names a market or an asset checks it against the
admin stream first (`AdminView`), so an unknown one is refused and nothing is appended.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from decimal import Decimal
from typing import Any

import msgspec
from litestar import get, post

from dex.admin.models import (
    CreditRequest,
    DisableRequest,
    FeesRequest,
    LimitsRequest,
    StatusRequest,
)
from dex.bus import Bus, TrimmedError
from dex.core import commands as mc
from dex.core.errors import CommandError
from dex.core.markets import (
    Asset,
    MarketSpec,
)
from dex.core.numbers import to_steps
from dex.risk import commands as rc
from dex.risk import events as rev
from dex.runtime.http import ApiError, account_param
from dex.runtime.settings import Settings
from dex.services.replica import ShardReplica
from dex.wire import codec
from dex.wire.catalog import Catalog
from dex.wire.ids import CREDIT_PREFIX, new_credit_tx_id
from dex.wire.layout import ADMIN_STREAM, risk_in, risk_log, shard_for


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


async def _admin_append(bus: Bus, stream: str, cmd: Any) -> dict[str, Any]:
    seq = await bus.append(stream, [codec.encode(cmd)])
    return {"accepted": True, "stream": stream, "log_seq": seq, "cmd": msgspec.to_builtins(cmd)}


class AdminView:
    """The markets and assets named on the admin stream (a `Catalog`), read to its end when a
    check needs it: what every engine will know, whichever shards this replica holds (a
    standby holds none)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.pos = 0
        self.catalog = Catalog()
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            while got := await self.bus.read(ADMIN_STREAM, self.pos, limit=1000):
                for seq, data in got:
                    self.pos = seq
                    with contextlib.suppress(codec.BadEntry, CommandError):  # engines refuse it
                        self.catalog.apply(codec.decode_admin(data))

    async def market(self, symbol: str) -> str:
        """`symbol` if it names a market; else a 404 naming it."""
        if symbol not in self.catalog.params:
            await self.refresh()
        if symbol not in self.catalog.params:
            raise ApiError(404, "unknown_market", f"no market {symbol!r}", "market")
        return symbol

    async def asset(self, symbol: str, field: str) -> Asset:
        """The asset `symbol`; else a 400 naming `field`."""
        if symbol not in self.catalog.assets:
            await self.refresh()
        asset = self.catalog.assets.get(symbol)
        if asset is None:
            raise ApiError(400, "unknown_asset", f"no asset {symbol!r}", field)
        return asset


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
    bus: Bus, log: str, after: int, stream: str, seq: int, wait: float
) -> codec.RiskItem | None:
    """Risk's answer to the command at (`stream`, `seq`): the item of its log entries after
    `after` that names it; None if none came within `wait` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + wait
    while (left := end - loop.time()) > 0:
        try:
            got = await bus.read(log, after, limit=1000, timeout=min(left, 1.0))
        except TrimmedError:
            return None
        for pos, data in got:
            after = pos
            try:
                entry: codec.RiskEntry = codec.decode_risk_entry(data)
            except codec.BadEntry:  # reported by the log's readers; not this credit's answer
                continue
            for item in entry.items:
                if item.cmd is not None and (item.input.stream, item.input.log_seq) == (
                    stream,
                    seq,
                ):
                    return item
    return None


def matching_admin_routes(bus: Bus, replica: ShardReplica) -> list[Any]:
    """The matching-engine's admin routes."""
    view = AdminView(bus)

    @post("/admin/markets", opt={"admin": True}, status_code=200)
    async def add_market(data: MarketSpec) -> dict[str, Any]:
        await view.refresh()
        if data.market in view.catalog.params:
            raise ApiError(409, "market_exists", f"market {data.market} already exists", "market")
        try:
            view.catalog.resolve(data)
        except CommandError as e:
            raise ApiError(400, "invalid_market", e.message, e.field) from None
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

    return [add_market, set_status, snapshot_now, shards_route(replica)]


def risk_admin_routes(bus: Bus, settings: Settings, replica: ShardReplica) -> list[Any]:
    """The risk-engine's admin routes."""
    view = AdminView(bus)

    def to_shard(account: str) -> str:
        return risk_in(shard_for(account, settings.risk_shards))

    @post("/admin/accounts/{account:str}/freeze", opt={"admin": True}, status_code=200)
    async def freeze(account: str) -> dict[str, Any]:
        a = account_param(account)
        return await _admin_append(bus, to_shard(a), rc.Freeze(account=a))

    @post("/admin/accounts/{account:str}/unfreeze", opt={"admin": True}, status_code=200)
    async def unfreeze(account: str) -> dict[str, Any]:
        a = account_param(account)
        return await _admin_append(bus, to_shard(a), rc.Unfreeze(account=a))

    @post("/admin/accounts/{account:str}/disable", opt={"admin": True}, status_code=200)
    async def disable(account: str, data: DisableRequest) -> dict[str, Any]:
        a = account_param(account)
        if data.market is not None:
            await view.market(data.market)
        return await _admin_append(
            bus, to_shard(a), rc.DisableTrading(account=a, market=data.market)
        )

    @post("/admin/accounts/{account:str}/enable", opt={"admin": True}, status_code=200)
    async def enable(account: str, data: DisableRequest) -> dict[str, Any]:
        a = account_param(account)
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
        a = account_param(account)
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
        wait = settings.admin_credit_wait_ms / 1000
        item = await _risk_outcome(bus, log, after, stream, answer["log_seq"], wait)
        if item is None:
            raise ApiError(
                504,
                "timeout",
                f"no answer from risk within {wait:g} s; the deposit is logged "
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
        if not rc.fee_rates_ok(data.maker_bps, data.taker_bps):
            raise ApiError(400, "invalid_fee_rates", rc.FEE_RATES_RULE, "maker_bps")
        return await _admin_append(
            bus,
            ADMIN_STREAM,
            rc.SetFees(market=data.market, maker_bps=data.maker_bps, taker_bps=data.taker_bps),
        )

    @post("/admin/accounts/{account:str}/limits", opt={"admin": True}, status_code=200)
    async def limits(account: str, data: LimitsRequest) -> dict[str, Any]:
        a = account_param(account)
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
    return [*routes, shards_route(replica)]

"""The gateway's core: requests in through the account's risk shard, the engine's outcome out.

Owns: sending each command to the account's risk shard and waiting for its outcome; the
in-memory ring of every API key (`dex.gateway.keys.KeyRing`), loaded at start from each risk
shard's snapshot and then kept current from the risk logs; the markets and assets with their
current status and fees (from the admin stream); the private WebSocket channels
(`dex.gateway.private`) and the public feed (`dex.gateway.feed`). The routes are in
`dex.gateway.routes`; request authentication and rate limits in `dex.gateway.auth`.

How outcomes are found. The gateway tails the admin stream from its start, every risk log
from the shard's last snapshot (the API keys in it, then every key event after it) and every
matching log from its end when the gateway started. Risk's answer names a request by its input
position (`(stream, log_seq)` of the command on `dex:{risk:r}:in`); an accepted order's
outcome is the matching item that carries its `accepted` or `rejected` event; an amend,
cancel or cancel-all forwarded by risk is answered by the matching item whose command is the
one risk forwarded (equal structs: risk stamps the command it forwards). Fees of the fills in
an outcome come from risk's `trade_settled` for the order's side, which follows on the
account's risk log. A wait that runs out answers 504 `outcome_unknown`: the request is logged
and takes effect, and a retry with the same client order id never places twice.

Read-your-writes. Every write remembers, per account, the log positions of the entries that
answered it; a history read through persistence carries them as `after`, and persistence
answers once it has stored at least that much.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import msgspec

from dex.bus import Bus, TrimmedError
from dex.core import commands as mc
from dex.core import events as mev
from dex.core.enums import MarketStatus, OrderStatus, OrderType, Side, TimeInForce
from dex.core.errors import CommandError
from dex.core.markets import Asset, MarketParams
from dex.core.numbers import MAX_INT, Scale, to_steps
from dex.core.validation import CLIENT_ORDER_ID_RULE, client_order_id_ok
from dex.gateway.feed import MAX_BUFFER, FeedRelay
from dex.gateway.keys import KeyRing, new_kek, parse_kek
from dex.gateway.private import PrivateChannels
from dex.risk import commands as rc
from dex.risk import events as rev
from dex.risk.snapshot import api_keys as snapshot_api_keys
from dex.runtime.health import Health
from dex.runtime.http import ApiError
from dex.runtime.metrics import ServiceMetrics
from dex.runtime.settings import DEFAULTS
from dex.wire import codec
from dex.wire.catalog import Catalog
from dex.wire.ids import new_credit_tx_id
from dex.wire.layout import (
    ADMIN_STREAM,
    me_log,
    risk_in,
    risk_log,
    risk_tag,
    shard_for,
    snapshot_name,
)

UPSTREAM_CHECK_EVERY = 1.0  # seconds between two checks of persistence and market data
UPSTREAM_CHECK_TIMEOUT = 1.0
KEYS = "keys"  # Health key: the API keys of every risk shard are loaded and current
TAIL = "tail"  # Health key: the logs are being read

# risk's refusal codes that are not a 400
_REFUSAL_STATUS = {
    "account_frozen": 403,
    "trading_disabled": 403,
    "global_halt": 503,
    "market_unavailable": 409,
    "nonce_used": 409,
    "unknown_order": 404,
    "unknown_key": 404,
    "too_many_keys": 409,
    "open_orders_limit": 409,
    "amend_in_progress": 409,
}

_ENDED = (mev.Filled, mev.Cancelled, mev.Expired, mev.Rejected)


def refusal(code: str, message: str, field: str | None = None) -> ApiError:
    """A refusal by risk or the engine before the book, as the status its code deserves."""
    return ApiError(_REFUSAL_STATUS.get(code, 400), code, message, field)


class Markets(Catalog):
    """The markets and assets named on the admin stream: integer parameters, current status,
    fee rates, and the scales that render amounts as decimal strings."""

    def __init__(self) -> None:
        super().__init__()
        self.status: dict[str, MarketStatus] = {}
        self.fees: dict[str, tuple[int, int]] = {}
        self.scales: dict[str, Scale] = {}

    def apply(self, cmd: object) -> None:
        try:
            super().apply(cmd)
        except CommandError as e:
            raise codec.BadEntry(f"an admin command the engines refuse ({e})") from None
        if isinstance(cmd, mc.AddMarket):
            self.status[cmd.spec.market] = cmd.spec.status
            self.fees.setdefault(cmd.spec.market, (0, 0))
        elif isinstance(cmd, mc.SetMarketStatus) and cmd.market in self.params:
            self.status[cmd.market] = cmd.status
        elif (
            isinstance(cmd, rc.SetFees)
            and cmd.market in self.params
            and rc.fee_rates_ok(cmd.maker_bps, cmd.taker_bps)
        ):
            self.fees[cmd.market] = (cmd.maker_bps, cmd.taker_bps)

    def get(self, market: str) -> MarketParams:
        params = self.params.get(market)
        if params is None:
            raise ApiError(404, "unknown_market", f"unknown market {market[:40]!r}", "market")
        return params

    def asset(self, symbol: str, field: str = "asset") -> Asset:
        asset = self.assets.get(symbol)
        if asset is None:
            raise ApiError(404, "unknown_asset", f"no asset {symbol!r}", field)
        return asset

    def units(self, symbol: str, amount: int) -> str:
        """An amount of an asset in its units, as a decimal string at its precision."""
        scale = self.scales.get(symbol)
        if scale is None:
            decimals = self.assets[symbol].decimals if symbol in self.assets else 0
            scale = self.scales[symbol] = Scale(Decimal(1).scaleb(-decimals))
        return scale.render(amount)

    def describe(self, market: str) -> dict[str, Any]:
        """Every rule a client needs to place an order in `market`."""
        p = self.params[market]
        spec = p.spec
        maker, taker = self.fees.get(market, (0, 0))
        return {
            "market": market,
            "base": p.base.symbol,
            "quote": p.quote.symbol,
            "tick_size": p.price_scale.render(1),
            "lot_size": p.size_scale.render(1),
            "min_size": p.size_scale.render(p.min_size_lots),
            "min_notional": p.quote_scale.render(p.min_notional_units),
            "price_band_bps": p.band_bps,
            "max_open_orders": p.max_open_orders or None,
            "status": str(self.status.get(market, spec.status)),
            "maker_fee_bps": maker,
            "taker_fee_bps": taker,
        }


def _steps(text: str | None, step: Decimal, field: str, unit: str) -> int:
    return 0 if text is None else to_steps(text, step, field, unit=unit)


class Gateway:
    """Sends requests to risk shards and answers each with its outcome.

    A request waits `wait` seconds for its outcome (then 504); the last `outcomes_kept`
    outcomes of each kind are kept for waiters that register after the answer went by;
    reads of persistence and market data time out after `proxy_timeout` seconds.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        risk_shards: int,
        matching_shards: int,
        health: Health,
        metrics: ServiceMetrics,
        log: Any,
        faucet: bool,
        persistence_url: str,
        market_data_url: str,
        kek: bytes | None = None,
        chain_id: int = DEFAULTS.chain_id,
        recv_window_ms: int = DEFAULTS.recv_window_ms,
        faucet_caps: tuple[int, int] = (
            int(DEFAULTS.faucet_max_per_call),
            int(DEFAULTS.faucet_max_per_day),
        ),
        daily: DailyTotals | None = None,
        wait: float = DEFAULTS.gateway_wait_ms / 1000,
        outcomes_kept: int = DEFAULTS.gateway_outcomes_kept,
        proxy_timeout: float = DEFAULTS.gateway_proxy_timeout_ms / 1000,
        max_trades: int = DEFAULTS.market_data_recent_trades,
        feed_max_buffer: int = MAX_BUFFER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.risk_shards = risk_shards
        self.matching_shards = matching_shards
        self.health = health
        self.log = log
        self.faucet = faucet
        self.wait = wait
        self.outcomes_kept = outcomes_kept
        self.max_trades = max_trades
        self.clock = clock
        self.kek = kek
        self.chain_id = chain_id
        self.recv_window_ms = recv_window_ms
        self.faucet_caps = faucet_caps  # whole asset units: per call, per account and day
        self.daily = daily or DailyTotals()
        self.markets = Markets()
        # no configured key: one for this process (HMAC keys then last as long as it does)
        self.keys = KeyRing(kek if kek is not None else parse_kek(new_kek()))
        self.requests: dict[tuple[str, int], asyncio.Future[Any]] = {}
        self.orders: dict[int, asyncio.Future[Any]] = {}
        self.commands: dict[Any, asyncio.Future[Any]] = {}
        self.settled: dict[tuple[int, int], asyncio.Future[Any]] = {}
        self.request_results: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self.order_results: OrderedDict[int, Any] = OrderedDict()
        self.command_results: OrderedDict[Any, Any] = OrderedDict()
        self.settled_results: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self.written: OrderedDict[str, dict[str, int]] = OrderedDict()  # account -> positions
        self.pos: dict[str, int] = {}
        self.caught_up: dict[str, int] = {}  # risk log -> its end when the keys were loaded
        self._identity: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._to_append: dict[str, list[tuple[bytes, asyncio.Future[int]]]] = {}
        self._appending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._http = httpx.AsyncClient(timeout=proxy_timeout)
        self.persistence_url = persistence_url.rstrip("/")
        self.market_data_url = market_data_url.rstrip("/")
        self.m_requests = metrics.counter("requests", "total", "requests sent to risk", ["kind"])
        self.m_latency = metrics.histogram(
            "order_latency", "seconds", "submit to outcome", buckets=(0.001, 0.005, 0.02, 0.1, 1)
        )
        self.m_timeouts = metrics.counter("timeouts", "total", "requests answered by timeout")
        self._request_counters: dict[type, Any] = {}  # m_requests by command type
        self.m_keys = metrics.gauge("api_keys", "count", "API keys held in memory")
        self.feed = FeedRelay(
            bus,
            market_spec=self._market_spec,
            fetch_book=self._fetch_book,
            log=log,
            max_buffer=feed_max_buffer,
        )
        self.private = PrivateChannels(self)
        self.feed.extension = self.private

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.health.set_not_ready(KEYS, "loading the API keys")
        self.pos[ADMIN_STREAM] = 0
        for m in range(self.matching_shards):
            self.pos[me_log(m)] = await self.bus.last(me_log(m))
        for r in range(self.risk_shards):
            await self._load_keys(r)
        await self._catch_up_admin()
        self._task = asyncio.create_task(self._tail())
        self._watch = asyncio.create_task(self._watch_upstreams())
        self.feed.start()

    async def stop(self) -> None:
        await self.feed.stop()
        for task in (self._task, self._watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._http.aclose()

    async def _load_keys(self, r: int) -> None:
        """The keys in risk shard r's last snapshot; its log is then read from there on."""
        stream = risk_log(r)
        snap = await self.bus.get_snapshot(snapshot_name(risk_tag(r)))
        seq = 0
        if snap is not None:
            seq, data = snap
            try:
                core = codec.decode_snapshot(data).core
                for record in snapshot_api_keys(core):
                    self.keys.add(record)
            except (codec.BadEntry, ValueError, msgspec.DecodeError) as e:
                self.log.error("snapshot_keys_unreadable", stream=stream, error=str(e))
                seq = 0
        self.pos[stream] = seq
        self.caught_up[stream] = await self.bus.last(stream)

    def upstreams(self) -> dict[str, str]:
        return {"persistence": self.persistence_url, "market-data": self.market_data_url}

    async def _watch_upstreams(self, every: float = UPSTREAM_CHECK_EVERY) -> None:
        """Ask persistence and market data whether they are ready, every `every` seconds:
        one that is not is shown by /readyz (`degraded`) and the routes it serves answer 503
        at once, without waiting for a timeout (the order path does not need them)."""
        while True:
            for name, base in self.upstreams().items():
                try:
                    resp = await self._http.get(f"{base}/readyz", timeout=UPSTREAM_CHECK_TIMEOUT)
                    ok = resp.status_code == 200
                    why = "" if ok else f"not ready ({resp.status_code})"
                except httpx.HTTPError as e:
                    ok, why = False, f"unreachable: {type(e).__name__}"
                if ok:
                    self.health.clear_degraded(name)
                else:
                    self.health.set_degraded(name, why)
            await asyncio.sleep(every)

    def _upstream_down(self, base: str) -> str | None:
        """The name of `base`'s service if the last check could not reach it (one that
        answers but is not ready is still asked normally: it may answer reads while
        catching up)."""
        for name, url in self.upstreams().items():
            if url == base and self.health.degraded().get(name, "").startswith("unreachable"):
                return name
        return None

    def _market_spec(self, market: str) -> Any:
        params = self.markets.params.get(market)
        return None if params is None else params.spec

    async def _fetch_book(self, market: str) -> dict[str, Any]:
        """Market data's whole book of `market` in integers, at its seq (the feed's start)."""
        resp = await self._http.get(f"{self.market_data_url}/internal/feed/{market}/book")
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    async def _catch_up_admin(self) -> None:
        while True:
            got = await self.bus.read(ADMIN_STREAM, self.pos[ADMIN_STREAM], limit=1000)
            if not got:
                return
            self._admin(got)

    def _admin(self, got: list[tuple[int, bytes]]) -> None:
        for seq, data in got:
            self.pos[ADMIN_STREAM] = seq
            try:
                self.markets.apply(codec.decode_admin(data))
            except codec.BadEntry as e:
                self._bad(ADMIN_STREAM, seq, str(e))

    async def _follow_restarts(self) -> None:
        """A bus that restarted from an older state numbers new entries from where it now
        ends: read from there, or answers written after the restart would be missed."""
        identity = await self.bus.identity()
        if identity == self._identity:
            return
        if self._identity is not None:
            self.log.warning("bus_restarted", previous=self._identity, now=identity)
            for s in self.pos:
                self.pos[s] = min(self.pos[s], await self.bus.last(s))
        self._identity = identity

    async def _tail(self) -> None:
        checked = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() - checked > 1.0:
                    checked = loop.time()
                    await self._follow_restarts()
                got = await self.bus.read_many(self.pos, limit=1000, timeout=0.5)
                self.health.set_ready(TAIL)
            except TrimmedError as e:  # we fell behind a trim: start over from a snapshot
                self.health.set_not_ready(TAIL, f"input trimmed: {e}")
                try:
                    await self._restart_after_trim()
                except Exception as err:  # the bus away as well: not ready; the loop retries
                    self.health.set_not_ready(TAIL, f"bus unreachable: {type(err).__name__}")
                    self.log.warning("restart_after_trim_failed", error=f"{err!r}")
                    await asyncio.sleep(0.5)
                continue
            except Exception as e:  # bus down: not ready, retry
                self.health.set_not_ready(TAIL, f"bus unreachable: {type(e).__name__}: {e}")
                await asyncio.sleep(0.5)
                continue
            # risk logs before matching logs: matching's answer to a command risk forwarded
            # may be in the same batch, and its waiter is set up when risk's answer is read
            for stream in sorted(got, key=_reading_order):
                entries = got[stream]
                self.pos[stream] = entries[-1][0]
                if stream == ADMIN_STREAM:
                    self._admin(entries)
                elif stream.endswith(":log"):
                    for seq, data in entries:
                        self._risk_entry(stream, seq, data)
                else:
                    for seq, data in entries:
                        self._match_entry(stream, seq, data)
            self._check_caught_up()

    async def _restart_after_trim(self) -> None:
        """Matching logs go on from their end (answers there were lost: their waiters time
        out); risk logs from their newest snapshot, so that no key event is missed."""
        for m in range(self.matching_shards):
            self.pos[me_log(m)] = await self.bus.last(me_log(m))
        for r in range(self.risk_shards):
            try:
                await self.bus.read(risk_log(r), self.pos[risk_log(r)], limit=1)
            except TrimmedError:
                self.health.set_not_ready(KEYS, "reloading API keys after a trim")
                await self._load_keys(r)

    def _check_caught_up(self) -> None:
        if self.caught_up and all(self.pos[s] >= end for s, end in self.caught_up.items()):
            self.caught_up.clear()
            self.health.set_ready(KEYS)
        self.m_keys.set(len(self.keys))

    def _bad(self, stream: str, seq: int, message: str) -> None:
        """An entry we cannot use: logged with its position and skipped (changes nothing)."""
        self.log.warning("bad_entry", stream=stream, log_seq=seq, error=message)

    def _risk_entry(self, stream: str, seq: int, data: bytes) -> None:
        try:
            entry = codec.decode_risk_entry(data)
        except codec.BadEntry as e:
            self._bad(stream, seq, str(e))
            return
        for item in entry.items:
            for ev in item.events:
                kind = type(ev)
                if kind is rev.ApiKeyRegistered:
                    self.keys.add(ev)
                elif kind is rev.ApiKeyRevoked:
                    self.keys.revoke(ev.api_key)
                elif kind is rev.TradeSettled:
                    for side in (ev.maker, ev.taker):
                        if side is not None:
                            self._resolve(
                                self.settled,
                                self.settled_results,
                                (ev.trade_id, side.order_id),
                                (ev, side, seq),
                            )
            if self.private.active:
                self.private.risk_item(stream, seq, item)
            if item.cmd is None:
                continue
            key = (item.input.stream, item.input.log_seq)
            if key in self.requests:
                # matching's answer to what risk forwarded may be in this very batch, before
                # the requester runs again: wait for it from now on
                for ev in item.events:
                    if type(ev) is rev.OrderCommandForwarded:
                        fwd = _unstamped(ev.command)
                        if fwd not in self.commands:
                            self.commands[fwd] = asyncio.get_running_loop().create_future()
            self._resolve(self.requests, self.request_results, key, (item.error, item.events, seq))

    def _resolve(
        self,
        table: dict[Any, asyncio.Future[Any]],
        recent: OrderedDict[Any, Any],
        key: Any,
        result: Any,
    ) -> None:
        _remember(recent, key, result, self.outcomes_kept)
        fut = table.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    def _match_entry(self, stream: str, seq: int, data: bytes) -> None:
        try:
            entry = codec.decode_match_events(data)
        except codec.BadEntry as e:
            self._bad(stream, seq, str(e))
            return
        for item in entry.items:
            for ev in item.events:
                if isinstance(ev, mev.MarketStatusChanged):
                    self.markets.status[ev.market] = ev.status
                elif isinstance(ev, (mev.Accepted, mev.Rejected)) and ev.order_id is not None:
                    self._resolve(
                        self.orders, self.order_results, ev.order_id, (item.events, stream, seq)
                    )
            if self.commands:
                self._match_command(item, stream, seq)
            if self.private.active:
                self.private.match_item(item)

    def _match_command(self, item: Any, stream: str, seq: int) -> None:
        """The item answering a forwarded amend / cancel / cancel-all somebody waits for."""
        try:
            cmd = msgspec.msgpack.decode(item.cmd, type=codec.ForwardedCommand)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        key = _unstamped(cmd)
        if key in self.commands:
            self._resolve(self.commands, self.command_results, key, (item.events, stream, seq))

    async def _wait(
        self, table: dict[Any, asyncio.Future[Any]], recent: OrderedDict[Any, Any], key: Any
    ) -> Any:
        """The result for `key` in `table` (or `recent`, if it already went by), within
        `self.wait` seconds, else 504. Several requests may wait for one key: each awaits a
        future of its own, relayed from the key's (so one that is cancelled, its client
        gone, leaves the others waiting, as `asyncio.shield` did) and failed by a timer of
        its own (as `asyncio.wait_for` did, for a fraction of their cost: an order waits
        two or three times)."""
        if key in recent:
            return recent[key]
        loop = asyncio.get_running_loop()
        fut = table.get(key)
        if fut is None:
            fut = table[key] = loop.create_future()
        mine: asyncio.Future[Any] = loop.create_future()
        relay = functools.partial(_relay, mine)
        fut.add_done_callback(relay)
        timer = loop.call_later(self.wait, _expire, mine)
        try:
            return await mine
        except TimeoutError:
            self.m_timeouts.inc()
            table.pop(key, None)
            raise ApiError(
                504,
                "outcome_unknown",
                f"no outcome within {self.wait:g} s; the request is logged and takes effect: "
                "query the order (by its client order id) for its outcome",
            ) from None
        finally:
            timer.cancel()
            fut.remove_done_callback(relay)

    def _wrote(self, account: str, stream: str, seq: int) -> None:
        """Remember that `account`'s last write was answered at `stream`@`seq`."""
        done = self.written.get(account)
        if done is None:
            done = self.written[account] = {}
            if len(self.written) > self.outcomes_kept:
                self.written.popitem(last=False)
        else:
            self.written.move_to_end(account)
        if done.get(stream, 0) < seq:
            done[stream] = seq

    def after(self, account: str) -> str | None:
        """The `after` parameter of a history read: what `account`'s writes were answered at."""
        done = self.written.get(account)
        if not done:
            return None
        return ",".join(f"{s}@{q}" for s, q in sorted(done.items()))

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # ------------------------------------------------------------------ requests

    async def submit(self, account: str, cmd: rc.RiskCommand) -> tuple[str | None, list[Any]]:
        """Send `cmd` to the account's risk shard; return risk's (error, events) for it."""
        stream = risk_in(shard_for(account, self.risk_shards))
        if not self.health.ready:
            raise ApiError(503, "unavailable", "the gateway is not ready")
        try:
            seq = await self._append(stream, codec.encode(cmd))
        except Exception as e:
            raise ApiError(503, "unavailable", f"bus unreachable: {type(e).__name__}") from None
        counter = self._request_counters.get(type(cmd))
        if counter is None:
            counter = self._request_counters[type(cmd)] = self.m_requests.labels(
                type(cmd).__name__.lower()
            )
        counter.inc()
        error, events, log_seq = await self._wait(
            self.requests, self.request_results, (stream, seq)
        )
        self._wrote(account, risk_log(shard_for(account, self.risk_shards)), log_seq)
        return error, events

    async def _append(self, stream: str, data: bytes) -> int:
        """Append one request to `stream`, group-committed: requests that arrive while an
        append to the stream is on its way go together in the next one (one durable write
        for many, in arrival order). Returns the request's position."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiting = self._to_append.setdefault(stream, [])
        waiting.append((data, fut))
        if stream not in self._appending:
            self._appending.add(stream)
            task = asyncio.create_task(self._append_batches(stream))
            task.add_done_callback(self._tasks.discard)
            self._tasks.add(task)
        return await fut

    async def _append_batches(self, stream: str) -> None:
        try:
            while batch := self._to_append.pop(stream, None):
                try:
                    last = await self.bus.append(stream, [data for data, _ in batch])
                except Exception as e:  # every request of the batch learns it
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                first = last - len(batch) + 1
                for i, (_, fut) in enumerate(batch):
                    if not fut.done():
                        fut.set_result(first + i)
        finally:
            self._appending.discard(stream)

    def build_place(self, req: Any, account: str, via: str | None = None) -> rc.Place:
        """Risk's place command for a request (`dex.gateway.models.OrderRequest`), placed
        through the API key `via` (None: wallet-signed)."""
        params = self.markets.get(req.market)
        if req.client_order_id is not None and not client_order_id_ok(req.client_order_id):
            raise ApiError(
                400,
                "invalid_request",
                f"client_order_id must be {CLIENT_ORDER_ID_RULE}",
                "client_order_id",
            )
        tif = req.tif
        if tif is None:  # a market order takes what it can now: IOC unless told otherwise
            market = req.type in (OrderType.MARKET, OrderType.STOP_MARKET)
            tif = TimeInForce.IOC if market else TimeInForce.GTC
        try:
            return rc.Place(
                market=req.market,
                account=account,
                side=req.side,
                type=req.type,
                size=_steps(req.size, params.lot, "size", "lots"),
                price=_steps(req.price, params.tick, "price", "ticks"),
                quote_size=_steps(
                    req.quote_size,
                    Decimal(1).scaleb(-params.quote.decimals),
                    "quote_size",
                    f"{params.quote.symbol} units",
                ),
                tif=tif,
                post_only=req.post_only,
                stp=req.stp,
                client_order_id=req.client_order_id,
                expires_at=None if req.expires_at is None else req.expires_at * 1_000_000,
                trigger_price=_steps(req.trigger_price, params.tick, "trigger_price", "ticks"),
                display_size=_steps(req.display_size, params.lot, "display_size", "lots"),
                nonce=req.nonce,
                via=via,
            )
        except CommandError as e:
            raise ApiError(400, "invalid_request", e.message, e.field) from None
        except (msgspec.ValidationError, ValueError, TypeError, OverflowError) as e:
            raise ApiError(400, "invalid_request", str(e)) from None

    async def place(self, cmd: rc.Place) -> dict[str, Any]:
        started = time.perf_counter()
        error, events = await self.submit(cmd.account, cmd)
        out = await self._order_outcome(cmd, error, events)
        self.m_latency.observe(time.perf_counter() - started)
        return out

    async def _order_outcome(
        self, cmd: rc.Place, error: str | None, events: list[Any]
    ) -> dict[str, Any]:
        if error is not None:
            raise _risk_error(error)
        for ev in events:
            if isinstance(ev, rev.OrderRejected):
                raise refusal(str(ev.code), ev.message)
            if isinstance(ev, rev.RequestRejected):
                raise refusal(str(ev.code), ev.message)
            if isinstance(ev, rev.OrderDuplicate):
                return await self._duplicate(cmd, ev)
            if isinstance(ev, rev.OrderAcceptedForMatching):
                item_events, stream, seq = await self._wait(
                    self.orders, self.order_results, ev.order_id
                )
                self._wrote(cmd.account, stream, seq)
                return await self._engine_outcome(ev.order_id, cmd, item_events)
        raise ApiError(500, "internal_error", "risk gave no order outcome")

    async def _duplicate(self, cmd: rc.Place, ev: rev.OrderDuplicate) -> dict[str, Any]:
        """A place that repeated a client order id: that order as it stands, nothing placed."""
        params = self.markets.get(ev.market)
        status = str(ev.status)
        return {
            **self._order_fields(ev.order_id, cmd),
            "status": "partially_filled" if status == "open" and ev.filled else status,
            "filled": params.size_scale.render(ev.filled),
            "remaining": None,
            "fills": [],
            "reason": ev.detail or None,
            "message": None,
            "duplicate": True,
        }

    def _order_fields(self, oid: int, cmd: rc.Place) -> dict[str, Any]:
        params = self.markets.params[cmd.market]
        return {
            "order_id": oid,
            "client_order_id": cmd.client_order_id,
            "market": cmd.market,
            "side": str(cmd.side),
            "type": str(cmd.type),
            "tif": str(cmd.tif),
            "price": params.price_scale.render(cmd.price) if cmd.price else None,
            "trigger_price": (
                params.price_scale.render(cmd.trigger_price) if cmd.trigger_price else None
            ),
            "size": params.size_scale.render(cmd.size) if cmd.size else None,
            "quote_size": params.quote_scale.render(cmd.quote_size) if cmd.quote_size else None,
        }

    async def _engine_outcome(
        self, oid: int, cmd: rc.Place, item_events: list[Any]
    ) -> dict[str, Any]:
        """The order as the engine left it after the input that placed it, with its fills
        (fees from risk's settlement, which follows on the account's risk log)."""
        params = self.markets.params[cmd.market]
        status = OrderStatus.PENDING
        reason: str | None = None
        message: str | None = None
        filled = 0
        remaining: int | None = cmd.size or None
        trades: list[mev.Trade] = []
        for ev in item_events:
            if isinstance(ev, mev.Trade):
                if ev.taker_order_id == oid or ev.maker_order_id == oid:
                    trades.append(ev)
                    filled += ev.size
                    if ev.taker_order_id == oid and ev.taker_remaining is not None:
                        remaining = ev.taker_remaining
                continue
            if getattr(ev, "order_id", None) != oid:
                continue
            if isinstance(ev, mev.Accepted):
                stop = ev.order.type in (OrderType.STOP_LIMIT, OrderType.STOP_MARKET)
                status = OrderStatus.UNTRIGGERED if stop else OrderStatus.OPEN
            elif isinstance(ev, mev.Triggered):
                status = OrderStatus.OPEN
            elif isinstance(ev, mev.Rejected):
                status, reason, message = OrderStatus.REJECTED, str(ev.code), ev.message
            elif isinstance(ev, mev.Filled):
                status, remaining = OrderStatus.FILLED, 0
            elif isinstance(ev, mev.Cancelled):
                status, reason = OrderStatus.CANCELLED, str(ev.reason)
                remaining = 0
            elif isinstance(ev, mev.Expired):
                status, remaining = OrderStatus.EXPIRED, 0
        fills = [await self._fill(oid, cmd.account, t, params) for t in trades]
        shown = str(status)
        if status == OrderStatus.OPEN and filled:
            shown = "partially_filled"
        return {
            **self._order_fields(oid, cmd),
            "status": shown,
            "filled": params.size_scale.render(filled),
            "remaining": None if remaining is None else params.size_scale.render(remaining),
            "fills": fills,
            "reason": reason,
            "message": message,
            "duplicate": False,
        }

    async def _fill(
        self, oid: int, account: str, trade: mev.Trade, params: MarketParams
    ) -> dict[str, Any]:
        taker = trade.taker_order_id == oid
        out: dict[str, Any] = {
            "trade_id": trade.trade_id,
            "price": params.price_scale.render(trade.price),
            "size": params.size_scale.render(trade.size),
            "liquidity": "taker" if taker else "maker",
            "fee": None,
            "fee_asset": None,
        }
        try:
            _, side, seq = await self._wait(
                self.settled, self.settled_results, (trade.trade_id, oid)
            )
        except ApiError:
            return out  # settled later; the fill's fee is in GET /v1/fills
        fee_asset = params.base.symbol if side.side == Side.BUY else params.quote.symbol
        out["fee"] = self.markets.units(fee_asset, side.fee)
        out["fee_asset"] = fee_asset
        self._wrote(account, risk_log(shard_for(account, self.risk_shards)), seq)
        return out

    async def forwarded(self, account: str, cmd: rc.RiskCommand) -> list[Any]:
        """Send an amend / cancel / cancel-all; wait for risk, then for matching's answer to
        each command risk forwarded (a cancel-all: one per market with open orders).

        Returns matching's events for them, in order."""
        error, events = await self.submit(account, cmd)
        if error is not None:
            raise _risk_error(error)
        answered: list[Any] = []
        for ev in events:
            if isinstance(ev, (rev.OrderRejected, rev.RequestRejected)):
                raise refusal(str(ev.code), ev.message)
            if isinstance(ev, rev.OrderCommandForwarded):
                item_events, stream, seq = await self._wait(
                    self.commands, self.command_results, _unstamped(ev.command)
                )
                self._wrote(account, stream, seq)
                answered.extend(item_events)
        return answered

    async def credit(self, account: str, req: Any) -> dict[str, Any]:
        """Faucet funds for `account` (`dex.gateway.models.FaucetRequest`), within the caps."""
        if not self.faucet:
            raise ApiError(404, "not_found", "there is no faucet in this environment")
        asset = self.markets.asset(req.asset)
        one = 10**asset.decimals
        try:
            amount = to_steps(
                req.amount,
                Decimal(1).scaleb(-asset.decimals),
                "amount",
                unit=f"{asset.symbol} units",
            )
        except CommandError as e:
            raise ApiError(400, "invalid_request", e.message, e.field) from None
        per_call, per_day = self.faucet_caps
        if amount > per_call * one:
            raise ApiError(
                400,
                "faucet_limit",
                f"at most {per_call} {asset.symbol} per faucet call",
                "amount",
            )
        day = self.now_ms() // 86_400_000
        key = f"{account}:{asset.symbol}:{day}"
        total = await self.daily.add(key, amount)
        if total > per_day * one:
            await self.daily.add(key, -amount)
            left = max(0, per_day * one - (total - amount))
            raise ApiError(
                429,
                "faucet_limit",
                f"at most {per_day} {asset.symbol} per account and day from the faucet; "
                f"{self.markets.units(asset.symbol, left)} left today",
                "amount",
            )
        cmd = rc.Deposit(
            account=account, asset=asset.symbol, amount=amount, tx_id=new_credit_tx_id()
        )
        try:
            error, events = await self.submit(account, cmd)
        except ApiError:
            await self.daily.add(key, -amount)
            raise
        if error is not None:
            raise ApiError(400, "invalid_request", error)
        for ev in events:
            if isinstance(ev, rev.DepositCredited):
                return {
                    "asset": asset.symbol,
                    "amount": self.markets.units(asset.symbol, ev.amount),
                    "available": self.markets.units(asset.symbol, ev.available),
                    "locked": self.markets.units(asset.symbol, ev.locked),
                }
            if isinstance(ev, rev.RequestRejected):
                await self.daily.add(key, -amount)
                raise refusal(str(ev.code), ev.message, "amount")
        raise ApiError(409, "duplicate_deposit", f"deposit {cmd.tx_id} was already credited")

    async def proxy(self, base: str, path: str, params: dict[str, Any]) -> Any:
        # a service the last check could not reach is given a short timeout (a fast 503,
        # not the whole proxy timeout), and marked reachable again as soon as it answers
        down = self._upstream_down(base)
        timeout = UPSTREAM_CHECK_TIMEOUT if down else httpx.USE_CLIENT_DEFAULT
        try:
            resp = await self._http.get(base + path, params=params, timeout=timeout)
        except httpx.InvalidURL:
            raise ApiError(400, "invalid_request", "the path or query is not a valid URL") from None
        except httpx.HTTPError as e:
            what = f"{down} is unreachable" if down else "upstream unreachable"
            raise ApiError(503, "unavailable", f"{what}: {type(e).__name__}") from None
        if down:
            self.health.clear_degraded(down)
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {}
            err = body.get("error", {}) if isinstance(body, dict) else {}
            raise ApiError(
                resp.status_code,
                err.get("code", "upstream_error"),
                err.get("message", "upstream error"),
                err.get("field"),
            )
        return resp.json()

    async def history(self, account: str, path: str, params: dict[str, Any]) -> Any:
        """A read of the account's history from persistence, after the account's writes."""
        after = self.after(account)
        query = {k: v for k, v in params.items() if v is not None}
        if after is not None:
            query["after"] = after
        return await self.proxy(self.persistence_url, f"/v1/accounts/{account}{path}", query)


class DailyTotals:
    """Running totals that reset each UTC day (the faucet's per-account cap): in memory, or
    in Redis when the gateway has replicas (`INCRBY` on a key that expires after 2 days)."""

    def __init__(self, redis: Any = None) -> None:
        self.redis = redis
        self.totals: dict[str, int] = {}

    async def add(self, key: str, amount: int) -> int:
        if self.redis is None:
            if len(self.totals) > 100_000:  # yesterday's keys: start the day over
                self.totals.clear()
            total = self.totals[key] = self.totals.get(key, 0) + amount
            return total
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.incrby(f"dex:faucet:{key}", amount)
            pipe.expire(f"dex:faucet:{key}", 2 * 86_400)
            total, _ = await pipe.execute()
        except Exception as e:
            raise ApiError(
                503, "unavailable", f"faucet totals unreachable: {type(e).__name__}"
            ) from None
        return int(total)


def check_int(value: int, field: str) -> int:
    if not 0 < value <= MAX_INT:
        raise ApiError(400, "invalid_request", f"{field} must be from 1 to 2^63-1", field)
    return value


def _risk_error(error: str) -> ApiError:
    """A command risk could not take (`"<field>: <message>"`), as a 400 naming the field."""
    field, sep, _ = error.partition(": ")
    known = sep and field.isidentifier()
    return ApiError(400, "invalid_request", error, field if known else None)


def _reading_order(stream: str) -> int:
    if stream == ADMIN_STREAM:
        return 0
    return 1 if stream.endswith(":log") else 2


def _unstamped(cmd: Any) -> Any:
    """A forwarded command without its time stamp (risk and matching each stamp their own)."""
    return msgspec.structs.replace(cmd, ts=0)


def _relay(mine: asyncio.Future[Any], shared: asyncio.Future[Any]) -> None:
    """Done callback of a shared future: its outcome to one waiter's own future."""
    if mine.done():
        return
    if shared.cancelled():
        mine.cancel()
    elif (error := shared.exception()) is not None:
        mine.set_exception(error)
    else:
        mine.set_result(shared.result())


def _expire(mine: asyncio.Future[Any]) -> None:
    """A waiter's timer: its wait is over."""
    if not mine.done():
        mine.set_exception(TimeoutError())


def _remember(table: OrderedDict[Any, Any], key: Any, value: Any, keep: int) -> None:
    table[key] = value
    if len(table) > keep:
        table.popitem(last=False)

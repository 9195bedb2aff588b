"""Matching-engine benchmark: throughput, per-command latency and memory per resting order.

Run from the repository root with the package installed (`pip install -e .`):

    python bench/matching.py                    # the standard workload, JSON on stdout
    python bench/matching.py --resting 1000000  # ... plus bytes per resting order
    python bench/matching.py --ops 20000 --runs 1   # quick check
    python bench/matching.py --ops 20000 --only engine  # one untimed pass (for callgrind)
    python bench/matching.py --profile          # one engine pass under cProfile (stderr)
    python -m cProfile -s tottime bench/matching.py --engine-only  # the same, whole script

The standard workload (seed 12345)
----------------------------------
One market, BTC-USDC (price band 10,000 bps, no open-order limit). Every order comes from its
own account (`0x` + 40 hex digits) with its own client order id and stp `none`, and carries an
explicit, increasing `order_id`; `ts` goes up by 1,000 ns per command. Prices are integer ticks
around a mid that starts at 1,000,000 ticks and, before each op, moves one tick up or down
with probability 0.05. Each op is, drawn with `random.Random(seed)`:

- 70% a GTC limit order, buy or sell 50/50, of 1-100 lots. 22% of them are priced through the
  mid (a buy at mid + k, a sell at mid - k, k in 0..3) so they usually cross; the others are
  passive (a buy at mid - k, a sell at mid + k, k in 1..30).
- 25% a cancel of a resting order chosen uniformly among all resting orders.
- 5% an IOC market order, side 50/50, of 1-100 lots capped at the resting quantity of the
  opposite side (so it always fills completely).

When a cancel is drawn but nothing rests, or a market order is drawn but the opposite side is
empty, a limit order is generated instead (drawn afresh as above). To do this the generator
keeps its own model of the book (FIFO per price, partial fills, trades at the maker's price);
the model also gives the expected traded volume (lots) and the final best bid and ask.

What is measured
----------------
- Throughput: the commands (and their `InputRef`s) are built before any timing. Each timed run
  creates a fresh engine (and its market) or a fresh baseline book untimed, then times the whole
  op stream with `time.perf_counter_ns`; the engine runs exactly as in production (every event
  is created and returned; the returned lists are dropped). The engine and the baseline run
  interleaved (engine, baseline, engine, ...), `--runs` times each, with the garbage collector
  off (and `gc.collect()` before each run). Reported: the medians, `engine_ops_per_s`,
  `baseline_ops_per_s` and `ratio` = engine_ops_per_s / baseline_ops_per_s (the fraction of
  the baseline's speed that the engine reaches; below 1 means the engine is slower).
- The baseline is a minimal book: a dict price -> level (a deque of orders and a live count)
  per side, heaps of prices for the best price, O(1) lazy cancel (an order is marked dead and
  skipped later), no events, no validation, no accounts. It is the floor of a pure-Python book.
- Latency: a separate pass over a fresh engine times each `apply` call on its own; `p50_ns`,
  `p99_ns`, `p999_ns` are nearest-rank percentiles over the op stream. They include one
  `perf_counter_ns` call (see `timer_overhead_ns`).
- Correctness gate: before timing, one engine pass collects every event (the traded volume is
  the sum of `Trade.size`) and one baseline pass does the same; the volume and the final best
  bid and ask of each must equal the generator's, no order may be rejected, the engine's
  resting orders (id, price, remaining) must be the generator's, and every timed run must end
  with the same best prices and trade count. Otherwise the bench exits 1.
- Memory (`--resting N`): N non-crossing GTC limit orders (bids below, asks above the mid,
  over 500 price levels per side, 1-100 lots, each from its own account with its own client
  order id) are applied to a fresh engine. tracemalloc starts before the commands are built,
  so the account and client-id strings the engine keeps are counted; after the commands and
  the returned events are dropped, `bytes_per_resting_order` = (traced memory now - traced
  memory at start) / N. `baseline_bytes_per_resting_order` is the same for the baseline. Dict
  and heap growth is by steps, so the figure depends somewhat on N.

Output: one JSON object on stdout; progress and a human summary on stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any

from dex.core.commands import AddMarket, Cancel, Command, InputRef, Place
from dex.core.enums import STP, OrderType, Side, TimeInForce
from dex.core.events import Cancelled, CancelRejected, Filled, Rejected, Trade
from dex.core.markets import MarketSpec
from dex.matching.engine import Engine

SEED = 12345
OPS = 200_000
RUNS = 5
START_MID = 1_000_000
WALK_PROB = 0.05
LIMIT_SHARE = 0.70
CANCEL_SHARE = 0.25  # the remaining 5% are market orders
CROSS_SHARE = 0.22
MAX_LOTS = 100
CROSS_TICKS = 3
PASSIVE_TICKS = 30
RESTING_LEVELS = 500  # per side, for --resting

SYMBOL = "BTC-USDC"
SPEC = MarketSpec(
    market=SYMBOL,
    base="BTC",
    quote="USDC",
    tick_size="0.01",
    lot_size="0.0001",
    min_size="0.0001",
    min_notional="0",
    price_band_bps=10_000,
    max_open_orders=None,
)
T0 = 1_700_000_000_000_000_000  # ns
TS_STEP = 1_000
STREAM = "bench"

# op kinds of the neutral op stream; ops are tuples:
#   (LIMIT, oid, is_buy, price, size) | (CANCEL, oid) | (MARKET, oid, is_buy, size)
LIMIT, CANCEL, MARKET = 0, 1, 2
Op = tuple[int, ...]

_MIX = 0x9E3779B97F4A7C15F39CC0605CEDC8341082276B  # odd, so oid -> account is one-to-one
_MOD = 1 << 160


def account_of(oid: int) -> str:
    """The order's own account: `0x` + 40 hex digits, distinct for every order id."""
    return f"0x{oid * _MIX % _MOD:040x}"


def cid_of(oid: int) -> str:
    """The order's own client order id (16 characters)."""
    return f"c{oid:015d}"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ============================================================================ generator


class _ModelOrder:
    __slots__ = ("is_buy", "oid", "price", "remaining", "slot")

    def __init__(self, oid: int, is_buy: bool, price: int, remaining: int, slot: int) -> None:
        self.oid = oid
        self.is_buy = is_buy
        self.price = price
        self.remaining = remaining
        self.slot = slot  # index in BookModel.resting


class BookModel:
    """The generator's own book, the oracle of the bench.

    Built differently from both the engine and the baseline on purpose: cancels remove the
    order physically from its level, and the best price is kept as a number, recomputed by a
    scan of the side's prices when its level empties. `resting` lists every resting order
    (swap-remove on exit) so that a uniformly random one can be picked.
    """

    def __init__(self) -> None:
        self.levels: dict[bool, dict[int, deque[_ModelOrder]]] = {True: {}, False: {}}
        self.best: dict[bool, int] = {True: 0, False: 0}  # keyed by is_buy; 0: side empty
        self.total: dict[bool, int] = {True: 0, False: 0}  # resting lots per side
        self.resting: list[_ModelOrder] = []
        self.traded = 0

    def take(self, is_buy: bool, limit: int, size: int) -> int:
        """Match an incoming order (limit 0: market); return its unfilled size."""
        opp = not is_buy
        levels = self.levels[opp]
        while size and levels:
            price = self.best[opp]
            if limit and (price > limit if is_buy else price < limit):
                break
            q = levels[price]
            maker = q[0]
            n = min(size, maker.remaining)
            size -= n
            maker.remaining -= n
            self.total[opp] -= n
            self.traded += n
            if not maker.remaining:
                q.popleft()
                self._forget(maker)
                if not q:
                    self._drop_level(opp, price)
        return size

    def rest(self, oid: int, is_buy: bool, price: int, size: int) -> None:
        order = _ModelOrder(oid, is_buy, price, size, len(self.resting))
        self.resting.append(order)
        self.levels[is_buy].setdefault(price, deque()).append(order)
        self.total[is_buy] += size
        best = self.best[is_buy]
        if not best or (price > best if is_buy else price < best):
            self.best[is_buy] = price

    def cancel(self, order: _ModelOrder) -> None:
        q = self.levels[order.is_buy][order.price]
        q.remove(order)
        self.total[order.is_buy] -= order.remaining
        self._forget(order)
        if not q:
            self._drop_level(order.is_buy, order.price)

    def _forget(self, order: _ModelOrder) -> None:
        last = self.resting.pop()
        if last is not order:
            self.resting[order.slot] = last
            last.slot = order.slot

    def _drop_level(self, is_buy: bool, price: int) -> None:
        levels = self.levels[is_buy]
        del levels[price]
        if self.best[is_buy] == price:
            self.best[is_buy] = (max if is_buy else min)(levels, default=0)


@dataclass
class Workload:
    ops: list[Op]
    traded: int  # lots
    best_bid: int  # ticks, 0 when empty
    best_ask: int
    resting: dict[int, tuple[int, int]]  # order id -> (price, remaining) at the end
    stats: dict[str, int] = field(default_factory=dict)


def generate(n_ops: int, seed: int = SEED) -> Workload:
    """The standard workload (see the module docstring) and its expected outcome."""
    rng = random.Random(seed)
    book = BookModel()
    ops: list[Op] = []
    stats = dict.fromkeys(
        ("limit", "crossing", "cancel", "market", "cancel_as_limit", "market_as_limit"), 0
    )
    mid = START_MID
    next_oid = 1

    def limit_op(oid: int) -> Op:
        is_buy = rng.random() < 0.5
        size = rng.randint(1, MAX_LOTS)
        if rng.random() < CROSS_SHARE:
            k = rng.randint(0, CROSS_TICKS)
            price = mid + k if is_buy else mid - k
            stats["crossing"] += 1
        else:
            k = rng.randint(1, PASSIVE_TICKS)
            price = mid - k if is_buy else mid + k
        left = book.take(is_buy, price, size)
        if left:
            book.rest(oid, is_buy, price, left)
        stats["limit"] += 1
        return (LIMIT, oid, is_buy, price, size)

    for _ in range(n_ops):
        if rng.random() < WALK_PROB:
            mid += 1 if rng.random() < 0.5 else -1
        u = rng.random()
        if u < LIMIT_SHARE:
            op = limit_op(next_oid)
            next_oid += 1
        elif u < LIMIT_SHARE + CANCEL_SHARE:
            if book.resting:
                order = book.resting[rng.randrange(len(book.resting))]
                book.cancel(order)
                op = (CANCEL, order.oid)
                stats["cancel"] += 1
            else:
                op = limit_op(next_oid)
                next_oid += 1
                stats["cancel_as_limit"] += 1
        else:
            is_buy = rng.random() < 0.5
            available = book.total[not is_buy]
            if available:
                size = min(rng.randint(1, MAX_LOTS), available)
                left = book.take(is_buy, 0, size)
                assert left == 0, "a capped market order must fill completely"
                op = (MARKET, next_oid, is_buy, size)
                stats["market"] += 1
            else:
                op = limit_op(next_oid)
                stats["market_as_limit"] += 1
            next_oid += 1
        ops.append(op)
    stats["resting_at_end"] = len(book.resting)
    stats["final_mid"] = mid
    resting = {o.oid: (o.price, o.remaining) for o in book.resting}
    return Workload(ops, book.traded, book.best[True], book.best[False], resting, stats)


def build_engine_commands(ops: Sequence[Op]) -> list[tuple[Command, InputRef]]:
    """Every op as an engine command with its InputRef (the market is added separately)."""
    out: list[tuple[Command, InputRef]] = []
    ts = T0
    for i, op in enumerate(ops, start=1):
        ts += TS_STEP
        kind, oid = op[0], op[1]
        cmd: Command
        if kind == LIMIT:
            _, _, is_buy, price, size = op
            cmd = Place(
                ts=ts,
                market=SYMBOL,
                account=account_of(oid),
                side=Side.BUY if is_buy else Side.SELL,
                type=OrderType.LIMIT,
                price=price,
                size=size,
                tif=TimeInForce.GTC,
                stp=STP.NONE,
                client_order_id=cid_of(oid),
                order_id=oid,
            )
        elif kind == CANCEL:
            cmd = Cancel(ts=ts, market=SYMBOL, account=account_of(oid), order_id=oid)
        else:
            _, _, is_buy, size = op
            cmd = Place(
                ts=ts,
                market=SYMBOL,
                account=account_of(oid),
                side=Side.BUY if is_buy else Side.SELL,
                type=OrderType.MARKET,
                size=size,
                tif=TimeInForce.IOC,
                stp=STP.NONE,
                client_order_id=cid_of(oid),
                order_id=oid,
            )
        out.append((cmd, InputRef(STREAM, i)))
    return out


def resting_ops(n: int, seed: int = SEED) -> list[Op]:
    """N non-crossing limit orders: bids below and asks above the mid, 500 levels per side."""
    rng = random.Random(seed)
    ops: list[Op] = []
    for i in range(n):
        is_buy = i % 2 == 0
        k = 1 + (i // 2) % RESTING_LEVELS
        price = START_MID - k if is_buy else START_MID + k
        ops.append((LIMIT, i + 1, is_buy, price, rng.randint(1, MAX_LOTS)))
    return ops


def new_engine() -> Engine:
    eng = Engine()
    eng.apply(AddMarket(ts=T0, spec=SPEC), InputRef(STREAM, 0))
    return eng


def engine_best(eng: Engine) -> tuple[int, int]:
    m = eng.markets[SYMBOL]
    return m.bids.best(), m.asks.best()


# ============================================================================ baseline book


class BaselineBook:
    """A minimal price-time book: the floor a pure-Python book can reach on this workload.

    Per side a dict price -> level `[live_count, deque of orders]` and a heap of prices
    (negated for bids; lazy: a price without a level is dropped when it reaches the top, and a
    level re-created at a price simply pushes it again). An order is a list
    `[remaining, price, is_buy, oid]`; a cancel marks it dead (remaining 0), it is skipped when
    it reaches the front, and a level with no live order is deleted at once. No events.
    """

    __slots__ = ("ask_heap", "asks", "bid_heap", "bids", "orders", "traded")

    def __init__(self) -> None:
        self.bids: dict[int, list[Any]] = {}
        self.asks: dict[int, list[Any]] = {}
        self.bid_heap: list[int] = []
        self.ask_heap: list[int] = []
        self.orders: dict[int, list[Any]] = {}  # resting orders by id
        self.traded = 0

    def apply(self, op: Op) -> None:
        kind = op[0]
        if kind == LIMIT:
            self.limit(op[1], op[2], op[3], op[4])
        elif kind == CANCEL:
            self.cancel(op[1])
        else:
            self.take(op[2], 0, op[3])

    def limit(self, oid: int, is_buy: bool, price: int, size: int) -> None:
        size = self.take(is_buy, price, size)
        if not size:
            return
        if is_buy:
            levels, heap, key = self.bids, self.bid_heap, -price
        else:
            levels, heap, key = self.asks, self.ask_heap, price
        level = levels.get(price)
        if level is None:
            level = levels[price] = [0, deque()]
            heappush(heap, key)
        order = [size, price, is_buy, oid]
        level[1].append(order)
        level[0] += 1
        self.orders[oid] = order

    def cancel(self, oid: int) -> None:
        order = self.orders.pop(oid, None)
        if order is None:
            return
        levels = self.bids if order[2] else self.asks
        price = order[1]
        level = levels[price]
        order[0] = 0
        level[0] -= 1
        if not level[0]:
            del levels[price]

    def take(self, is_buy: bool, limit: int, size: int) -> int:
        """Match against the opposite side up to `limit` (0: none); return the size left."""
        if is_buy:
            levels, heap, sign = self.asks, self.ask_heap, 1
        else:
            levels, heap, sign = self.bids, self.bid_heap, -1
        orders = self.orders
        traded = 0
        while size and heap:
            price = heap[0] * sign
            level = levels.get(price)
            if level is None:
                heappop(heap)
                continue
            if limit and (price > limit if is_buy else price < limit):
                break
            q = level[1]
            while size:
                maker = q[0]
                mrem = maker[0]
                if not mrem:
                    q.popleft()
                    continue
                if mrem > size:
                    maker[0] = mrem - size
                    traded += size
                    size = 0
                    break
                traded += mrem
                size -= mrem
                maker[0] = 0
                q.popleft()
                del orders[maker[3]]
                level[0] -= 1
                if not level[0]:
                    del levels[price]
                    heappop(heap)
                    break
        self.traded += traded
        return size

    def best(self) -> tuple[int, int]:
        out = []
        for levels, heap, sign in ((self.bids, self.bid_heap, -1), (self.asks, self.ask_heap, 1)):
            while heap and heap[0] * sign not in levels:
                heappop(heap)
            out.append(heap[0] * sign if heap else 0)
        return out[0], out[1]


# ============================================================================ harness


def fail(msg: str) -> None:
    log(f"FAIL: {msg}")
    sys.exit(1)


def verify_engine(work: Workload, cmds: Sequence[tuple[Command, InputRef]]) -> int:
    """One engine pass keeping every event; exit 1 unless it agrees with the generator.

    Returns the number of trades, which every timed run must reproduce.
    """
    eng = new_engine()
    apply = eng.apply
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()  # as in the timed runs (and so that a profile of this pass is not skewed)
    try:
        results = [apply(cmd, ref) for cmd, ref in cmds]
    finally:
        if was_enabled:
            gc.enable()
    traded = trades = 0
    problems: list[str] = []
    for i, events in enumerate(results):
        for ev in events:
            if type(ev) is Trade:
                traded += ev.size
                trades += 1
            elif type(ev) in (Rejected, CancelRejected):
                problems.append(f"op {i} ({work.ops[i]}): {ev}")
            elif type(ev) is Cancelled and work.ops[i][0] == MARKET:
                problems.append(f"market op {i} ({work.ops[i]}) not fully filled: {ev}")
    if problems:
        fail(f"engine: {len(problems)} unexpected event(s), first: {problems[0]}")
    best = engine_best(eng)
    if (traded, *best) != (work.traded, work.best_bid, work.best_ask):
        fail(
            f"engine disagrees with the generator: traded {traded} lots, best {best}; "
            f"expected {work.traded} lots, best {(work.best_bid, work.best_ask)}"
        )
    left = {oid: (o.price, o.remaining) for oid, o in eng.markets[SYMBOL].orders.items()}
    if left != work.resting:
        fail(f"engine: the resting orders differ from the generator's ({len(left)} orders)")
    n_filled = sum(1 for events in results for ev in events if type(ev) is Filled)
    log(f"engine verified: {traded} lots in {trades} trades ({n_filled} filled events)")
    return trades


def verify_baseline(work: Workload) -> None:
    book = BaselineBook()
    for op in work.ops:
        book.apply(op)
    best = book.best()
    if (book.traded, *best) != (work.traded, work.best_bid, work.best_ask):
        fail(
            f"baseline disagrees with the generator: traded {book.traded} lots, best {best}; "
            f"expected {work.traded} lots, best {(work.best_bid, work.best_ask)}"
        )
    log(f"baseline verified: {book.traded} lots")


def time_engine(
    work: Workload, cmds: Sequence[tuple[Command, InputRef]], trades: int
) -> tuple[float, int]:
    """One timed engine run over the whole stream; (ops per second, elapsed ns)."""
    gc.collect()
    eng = new_engine()
    apply = eng.apply
    clock = time.perf_counter_ns
    t0 = clock()
    for cmd, ref in cmds:
        apply(cmd, ref)
    elapsed = clock() - t0
    best = engine_best(eng)
    if best != (work.best_bid, work.best_ask) or eng.markets[SYMBOL].trade_id != trades:
        fail(f"timed engine run ended with best {best}, {eng.markets[SYMBOL].trade_id} trades")
    return len(cmds) * 1e9 / elapsed, elapsed


def time_baseline(work: Workload) -> tuple[float, int]:
    gc.collect()
    book = BaselineBook()
    apply = book.apply
    ops = work.ops
    clock = time.perf_counter_ns
    t0 = clock()
    for op in ops:
        apply(op)
    elapsed = clock() - t0
    if (book.traded, *book.best()) != (work.traded, work.best_bid, work.best_ask):
        fail(f"timed baseline run ended with {book.traded} lots, best {book.best()}")
    return len(ops) * 1e9 / elapsed, elapsed


def timer_overhead_ns(n: int = 100_000) -> int:
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        t0 = clock()
        samples[i] = clock() - t0
    return int(statistics.median(samples))


def percentile(sorted_ns: Sequence[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..1, in thousandths) of an ascending sequence."""
    rank = max(1, -(-round(q * 1000) * len(sorted_ns) // 1000))  # ceil(q * n), exactly
    return sorted_ns[min(rank, len(sorted_ns)) - 1]


def latencies(work: Workload, cmds: Sequence[tuple[Command, InputRef]]) -> list[int]:
    """Each `apply` timed on its own over a fresh engine; ascending ns."""
    gc.collect()
    eng = new_engine()
    apply = eng.apply
    clock = time.perf_counter_ns
    out = [0] * len(cmds)
    for i, (cmd, ref) in enumerate(cmds):
        t0 = clock()
        apply(cmd, ref)
        out[i] = clock() - t0
    if engine_best(eng) != (work.best_bid, work.best_ask):
        fail(f"latency pass ended with best {engine_best(eng)}")
    out.sort()
    return out


def engine_bytes_per_resting(n: int, seed: int) -> float:
    """Traced memory growth of an engine holding n resting orders, per order."""
    gc.collect()
    eng = new_engine()
    apply = eng.apply
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    cmds = build_engine_commands(resting_ops(n, seed))
    for cmd, ref in cmds:
        apply(cmd, ref)  # the returned events are dropped at once
    del cmds, cmd, ref
    gc.collect()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    m = eng.markets[SYMBOL]
    if len(m.orders) != n:
        fail(f"--resting: {len(m.orders)} orders rest in the engine, expected {n}")
    return (current - start) / n


def baseline_bytes_per_resting(n: int, seed: int) -> float:
    gc.collect()
    book = BaselineBook()
    apply = book.apply
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    ops = resting_ops(n, seed)
    for op in ops:
        apply(op)
    del ops, op
    gc.collect()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if len(book.orders) != n:
        fail(f"--resting: {len(book.orders)} orders rest in the baseline, expected {n}")
    return (current - start) / n


def profile_engine(cmds: Sequence[tuple[Command, InputRef]], top: int) -> None:
    """One engine pass under cProfile; the stats (by tottime) go to stderr."""
    import cProfile
    import pstats

    eng = new_engine()
    apply = eng.apply
    prof = cProfile.Profile()
    gc.collect()
    gc.disable()
    prof.enable()
    for cmd, ref in cmds:
        apply(cmd, ref)
    prof.disable()
    gc.enable()
    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(top)


def single_pass(work: Workload, cmds: Sequence[tuple[Command, InputRef]], only: str) -> None:
    """One pass of the engine or the baseline (nothing for "none"), GC off, checked after.

    Under callgrind, the pass costs the instructions of `--only engine` (or `baseline`) minus
    those of `--only none` with the same `--ops` and `--seed`.
    """
    gc.collect()
    gc.disable()
    if only == "engine":
        eng = new_engine()
        apply = eng.apply
        for cmd, ref in cmds:
            apply(cmd, ref)
        if engine_best(eng) != (work.best_bid, work.best_ask):
            fail(f"engine pass ended with best {engine_best(eng)}")
    elif only == "baseline":
        book = BaselineBook()
        bapply = book.apply
        for op in work.ops:
            bapply(op)
        if (book.traded, *book.best()) != (work.traded, work.best_bid, work.best_ask):
            fail(f"baseline pass ended with {book.traded} lots, best {book.best()}")
    gc.enable()
    log(f"{only}: one pass over {len(cmds)} ops done")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=OPS, help="ops in the stream (default %(default)s)")
    p.add_argument("--runs", type=int, default=RUNS, help="timed runs each (default %(default)s)")
    p.add_argument("--seed", type=int, default=SEED, help="generator seed (default %(default)s)")
    p.add_argument(
        "--resting", type=int, default=0, metavar="N", help="also measure memory for N orders"
    )
    p.add_argument(
        "--engine-only",
        action="store_true",
        help="generate, verify one engine pass and stop (no timing; for python -m cProfile)",
    )
    p.add_argument(
        "--only",
        choices=("engine", "baseline", "none"),
        default=None,
        help="generate, then make one untimed pass of only this (none: no pass) and stop; "
        "for valgrind --tool=callgrind: the pass costs the difference from --only none",
    )
    p.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=25,
        default=0,
        metavar="TOP",
        help="after verifying, profile one engine pass and print the TOP functions by tottime",
    )
    args = p.parse_args(argv)
    if args.ops <= 0 or args.runs <= 0 or args.resting < 0:
        p.error("--ops and --runs must be positive, --resting not negative")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    t = time.perf_counter()
    work = generate(args.ops, args.seed)
    log(
        f"generated {args.ops} ops in {time.perf_counter() - t:.1f}s: {work.stats}; "
        f"expected {work.traded} lots traded, best bid {work.best_bid}, ask {work.best_ask}"
    )
    cmds = build_engine_commands(work.ops)
    if args.only:
        single_pass(work, cmds, args.only)
        return
    trades = verify_engine(work, cmds)
    if args.profile:
        profile_engine(cmds, args.profile)
    if args.engine_only or args.profile:
        return
    verify_baseline(work)

    engine_runs: list[float] = []
    baseline_runs: list[float] = []
    gc.disable()
    try:
        for run in range(1, args.runs + 1):  # interleaved: engine, baseline, engine, ...
            ops_per_s, elapsed = time_engine(work, cmds, trades)
            engine_runs.append(ops_per_s)
            log(f"run {run} engine   {elapsed / 1e6:8.1f} ms {ops_per_s:12,.0f} ops/s")
            ops_per_s, elapsed = time_baseline(work)
            baseline_runs.append(ops_per_s)
            log(f"run {run} baseline {elapsed / 1e6:8.1f} ms {ops_per_s:12,.0f} ops/s")
        lat = latencies(work, cmds)
        overhead = timer_overhead_ns()
    finally:
        gc.enable()

    engine_ops = statistics.median(engine_runs)
    baseline_ops = statistics.median(baseline_runs)
    result: dict[str, Any] = {
        "engine_ops_per_s": round(engine_ops),
        "baseline_ops_per_s": round(baseline_ops),
        "ratio": round(engine_ops / baseline_ops, 4),
        "p50_ns": percentile(lat, 0.50),
        "p99_ns": percentile(lat, 0.99),
        "p999_ns": percentile(lat, 0.999),
        "timer_overhead_ns": overhead,
        "ops": args.ops,
        "runs": args.runs,
        "seed": args.seed,
        "traded_lots": work.traded,
        "best_bid": work.best_bid,
        "best_ask": work.best_ask,
        "engine_ops_per_s_runs": [round(x) for x in engine_runs],
        "baseline_ops_per_s_runs": [round(x) for x in baseline_runs],
        "python": platform.python_version(),
    }
    log(
        f"engine {engine_ops:,.0f} ops/s, baseline {baseline_ops:,.0f} ops/s: the engine is "
        f"{baseline_ops / engine_ops:.2f}x slower; latency p50 {result['p50_ns']} ns, "
        f"p99 {result['p99_ns']} ns, p99.9 {result['p999_ns']} ns"
    )
    del cmds
    if args.resting:
        gc.disable()
        try:
            t = time.perf_counter()
            per_order = engine_bytes_per_resting(args.resting, args.seed)
            log(f"engine: {per_order:.1f} bytes per resting order ({time.perf_counter() - t:.0f}s)")
            gc.collect()
            base_per_order = baseline_bytes_per_resting(args.resting, args.seed)
            log(f"baseline: {base_per_order:.1f} bytes per resting order")
        finally:
            gc.enable()
        result["resting_orders"] = args.resting
        result["bytes_per_resting_order"] = round(per_order, 1)
        result["baseline_bytes_per_resting_order"] = round(base_per_order, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

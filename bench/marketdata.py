"""Market-data benchmark: matching events applied per second by the pure book builder.

Run from the repository root with the package installed (`pip install -e .`):

    python bench/marketdata.py              # the standard workload, JSON on stdout
    python bench/marketdata.py --ops 20000 --runs 1   # quick check

The workload (seed 12345): one market, BTC-USDC (price band 10,000 bps). Each op is a command
to a real `Engine`, drawn with `random.Random(seed)` around a mid that starts at 1,000,000
ticks and moves a tick with probability 0.05: 60% a GTC limit order of 1-100 lots (22% of them
priced through the mid, the others passive within 30 ticks; one in ten an iceberg showing
1-20 lots), 20% a cancel of a random resting order, 10% an amend of one (new size or price),
10% an IOC market order of 1-100 lots. The engine runs once, untimed, and its events (every
kind it emits: accepted, trade, filled, cancelled, amended, ...) are kept in a list.

What is measured (the garbage collector off, medians of `--runs` runs, each on a fresh
builder, `time.perf_counter_ns` around the whole list):
- `book_events_per_s`: `dex.marketdata.book.L2Book.apply` over every event (the figure the
  issue's target of 200,000 events/s is about);
- `market_events_per_s`: `dex.marketdata.market.MarketData.apply` (the book, plus the recent
  trades and the candles of every interval for each trade), as the service applies them.
Correctness gate: after a run the builder's book (every level) and `seq` must equal the
engine's `view` of the market; otherwise the bench exits 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time

from dex.core.commands import AddMarket, Amend, Cancel, Command, InputRef, Place
from dex.core.enums import OrderType, Side, TimeInForce
from dex.core.events import Accepted, Cancelled, Event, Expired, Filled
from dex.core.markets import MarketSpec
from dex.marketdata.book import L2Book
from dex.marketdata.market import MarketData
from dex.matching import Engine

SEED = 12345
START_MID = 1_000_000
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
)
T0 = 1_700_000_000_000_000_000  # ns
TS_STEP = 1_000_000  # 1 ms a command: candles of several minutes
TARGET = 200_000


def run_engine(ops: int, seed: int) -> tuple[list[Event], Engine]:
    """Apply the random command stream to an engine; every event it emitted, in order."""
    rng = random.Random(seed)
    eng = Engine()
    events: list[Event] = list(eng.apply(AddMarket(ts=T0, spec=SPEC), InputRef("bench", 0)))
    resting: list[int] = []
    where: dict[int, int] = {}  # order id -> index in resting
    mid = START_MID
    ts = T0

    def forget(oid: int) -> None:
        i = where.pop(oid, None)
        if i is not None:
            last = resting.pop()
            if last != oid:
                resting[i] = last
                where[last] = i

    for n in range(1, ops + 1):
        ts += TS_STEP
        if rng.random() < 0.05:
            mid += rng.choice((-1, 1))
        roll = rng.random()
        account = f"a{rng.randrange(1000)}"
        cmd: Command
        if roll < 0.2 and resting:
            oid = resting[rng.randrange(len(resting))]
            cmd = Cancel(ts=ts, market=SYMBOL, account=f"o{oid}", order_id=oid)
        elif roll < 0.3 and resting:
            oid = resting[rng.randrange(len(resting))]
            if rng.random() < 0.5:
                cmd = Amend(
                    ts=ts, market=SYMBOL, account=f"o{oid}", order_id=oid, size=rng.randint(1, 100)
                )
            else:
                price = mid + rng.randint(-30, 30)
                cmd = Amend(ts=ts, market=SYMBOL, account=f"o{oid}", order_id=oid, price=price)
        elif roll < 0.4:
            side = rng.choice((Side.BUY, Side.SELL))
            cmd = Place(
                ts=ts,
                market=SYMBOL,
                account=f"o{n}",
                side=side,
                type=OrderType.MARKET,
                size=rng.randint(1, 100),
                tif=TimeInForce.IOC,
                order_id=n,
            )
        else:
            is_buy = rng.random() < 0.5
            k = rng.randint(0, 3) if rng.random() < 0.22 else -rng.randint(1, 30)
            price = mid + k if is_buy else mid - k
            size = rng.randint(1, 100)
            display = min(size, rng.randint(1, 20)) if rng.random() < 0.1 else 0
            cmd = Place(
                ts=ts,
                market=SYMBOL,
                account=f"o{n}",
                side=Side.BUY if is_buy else Side.SELL,
                type=OrderType.LIMIT,
                price=price,
                size=size,
                display_size=display,
                order_id=n,
            )
        del account
        out = eng.apply(cmd, InputRef("bench", n))
        for e in out:
            if isinstance(e, Accepted) and e.order.type is OrderType.LIMIT:
                where[e.order_id] = len(resting)
                resting.append(e.order_id)
            elif isinstance(e, (Filled, Cancelled, Expired)):
                forget(e.order_id)
        events += out
    return events, eng


def check(book: L2Book, eng: Engine) -> None:
    view = eng.view(SYMBOL)
    bids = [(lv.price, sum(o.visible for o in lv.orders)) for lv in view.bids]
    asks = [(lv.price, sum(o.visible for o in lv.orders)) for lv in view.asks]
    expected = ([x for x in bids if x[1]], [x for x in asks if x[1]])
    if book.top(10**9) != expected or book.seq != eng.markets[SYMBOL].seq:
        print("the book built from the events differs from the engine's", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=200_000, help="commands to the engine")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()

    events, eng = run_engine(args.ops, args.seed)
    market_events = [e for e in events if e.market == SYMBOL]  # not the assets' events
    book_times: list[int] = []
    market_times: list[int] = []
    gc.disable()
    try:
        for _ in range(args.runs):
            gc.collect()
            book = L2Book(SPEC)
            apply = book.apply
            t0 = time.perf_counter_ns()
            for e in market_events:
                apply(e)
            book_times.append(time.perf_counter_ns() - t0)
            check(book, eng)

            gc.collect()
            data = MarketData.new(SPEC, "bench", 1000)
            apply_md = data.apply
            t0 = time.perf_counter_ns()
            for e in market_events:
                apply_md(e, e.log_seq)
            market_times.append(time.perf_counter_ns() - t0)
            check(data.book, eng)
    finally:
        gc.enable()
    n = len(market_events)
    kinds: dict[str, int] = {}
    for e in market_events:
        kinds[type(e).__name__] = kinds.get(type(e).__name__, 0) + 1
    book_rate = n * 1e9 / statistics.median(book_times)
    report = {
        "events": n,
        "event_kinds": kinds,
        "runs": args.runs,
        "book_events_per_s": round(book_rate),
        "market_events_per_s": round(n * 1e9 / statistics.median(market_times)),
        "target_events_per_s": TARGET,
        "meets_target": book_rate >= TARGET,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Risk-ledger benchmark: pre-trade checks and settlement on the matching benchmark's workload.

Run from the repository root with the package installed (`pip install -e .`):

    python bench/risk.py                   # the standard workload, JSON on stdout
    python bench/risk.py --ops 20000 --runs 1
    python bench/risk.py --profile         # one ledger pass under cProfile (stderr)

Measurement options (the workload is unchanged): `--save-items FILE` pickles the recorded input
stream and its state hash, `--load-items FILE` uses them instead of recording again (so the
matching engine's code does not enter the measurement), and `--callgrind N` applies the first
N inputs (0: all) once, driven by `itertools.starmap`, for an instruction count of the ledger
alone:

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=starmap_next \
        python bench/risk.py --load-items /tmp/risk-items.pkl --callgrind 100000

Workload: the op stream of bench/matching.py (its generator is imported from that file; see
its docstring), with every order's account drawn from 10,000 accounts (`account_of(oid %
10000)`), each funded with plenty of BTC and USDC, and fees of -1 bps maker (a rebate) and
5 bps taker. Limit and market orders become risk `place` commands (client order id
`cid_of(oid)`), cancels risk `cancel` commands by client order id. Commands are 1,000 ns apart.

Before timing, one pass runs the risk ledger and the real matching engine together: each
command goes to the ledger, what the ledger forwards goes to the engine, and the engine's
events come back to the ledger. That pass records the ledger's input stream: every command
and every matching event, in the order the ledger applied them, with their input refs.

Timed: a fresh ledger (set up and funded untimed) applies that input stream, with the garbage
collector off (`gc.collect()` before each run); `events_per_s` counts input items (commands
and matching events) per second, the median of `--runs` runs. Every timed run must end with
the state hash of the recording pass, and conservation (balances plus fees equal deposits per
asset) is checked at the end; otherwise the bench exits 1.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import itertools
import json
import pickle
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from dex.core.commands import InputRef
from dex.core.enums import STP, OrderType, Side, TimeInForce
from dex.matching.engine import Engine
from dex.risk import commands as rc
from dex.risk.codes import RiskCode
from dex.risk.events import OrderAcceptedForMatching, OrderCommandForwarded, OrderRejected
from dex.risk.ledger import Ledger

ACCOUNTS = 10_000
FUNDS = 10**15  # units of each asset per account
T0 = 1_700_000_000_000_000_000
TS_STEP = 1_000


def _matching_bench() -> ModuleType:
    path = Path(__file__).with_name("matching.py")
    spec = importlib.util.spec_from_file_location("bench_matching", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_matching"] = module
    spec.loader.exec_module(module)
    return module


mb = _matching_bench()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fail(msg: str) -> None:
    log(f"FAILED: {msg}")
    sys.exit(1)


Item = tuple[Any, InputRef, int]


def setup_commands(accounts: Sequence[str]) -> list[Any]:
    cmds: list[Any] = [
        rc.AddMarket(ts=T0, spec=mb.SPEC),
        rc.SetFees(ts=T0, market=mb.SYMBOL, maker_bps=-1, taker_bps=5),
    ]
    for i, account in enumerate(accounts):
        for asset in ("BTC", "USDC"):
            cmds.append(
                rc.Deposit(ts=T0, account=account, asset=asset, amount=FUNDS, tx_id=f"d{i}{asset}")
            )
    return cmds


def risk_commands(ops: Sequence[tuple[int, ...]], accounts: Sequence[str]) -> list[Any]:
    out: list[Any] = []
    ts = T0
    for op in ops:
        ts += TS_STEP
        kind, oid = op[0], op[1]
        account = accounts[oid % len(accounts)]
        if kind == mb.LIMIT:
            _, _, is_buy, price, size = op
            out.append(
                rc.Place(
                    ts=ts,
                    market=mb.SYMBOL,
                    account=account,
                    side=Side.BUY if is_buy else Side.SELL,
                    type=OrderType.LIMIT,
                    price=price,
                    size=size,
                    tif=TimeInForce.GTC,
                    stp=STP.NONE,
                    client_order_id=mb.cid_of(oid),
                )
            )
        elif kind == mb.CANCEL:
            out.append(
                rc.Cancel(ts=ts, market=mb.SYMBOL, account=account, client_order_id=mb.cid_of(oid))
            )
        else:
            _, _, is_buy, size = op
            out.append(
                rc.Place(
                    ts=ts,
                    market=mb.SYMBOL,
                    account=account,
                    side=Side.BUY if is_buy else Side.SELL,
                    type=OrderType.MARKET,
                    size=size,
                    tif=TimeInForce.IOC,
                    stp=STP.NONE,
                    client_order_id=mb.cid_of(oid),
                )
            )
    return out


def new_ledger(setup: Sequence[Any]) -> Ledger:
    led = Ledger()
    for i, cmd in enumerate(setup):
        led.apply(cmd, InputRef("setup", i))
    return led


def record(setup: Sequence[Any], cmds: Sequence[Any]) -> tuple[list[Item], Ledger, dict[str, int]]:
    """Run ledger and engine together; return the ledger's input stream and final ledger."""
    led = new_ledger(setup)
    eng = Engine()
    eng.apply(_engine_add_market(), InputRef("m", 0))
    items: list[Item] = []
    counts: dict[str, int] = {}
    n_match = 0
    for i, cmd in enumerate(cmds, start=1):
        ref = InputRef("risk-in", i)
        items.append((cmd, ref, 0))
        pending = [led.apply(cmd, ref)]
        while pending:
            out = pending.pop(0)
            for e in out:
                if isinstance(e, OrderRejected):
                    counts[e.code] = counts.get(e.code, 0) + 1
                fwd = (
                    e.place
                    if isinstance(e, OrderAcceptedForMatching)
                    else e.command
                    if isinstance(e, OrderCommandForwarded)
                    else None
                )
                if fwd is None:
                    continue
                n_match += 1
                for me in eng.apply(fwd, InputRef("risk-out", n_match)):
                    mref = InputRef("match-out", me.log_seq)
                    items.append((me, mref, cmd.ts))
                    pending.append(led.apply(me, mref, cmd.ts))
    return items, led, counts


def _engine_add_market() -> Any:
    from dex.core.commands import AddMarket

    return AddMarket(ts=T0, spec=mb.SPEC)


def conservation(led: Ledger, n_accounts: int) -> None:
    for asset in ("BTC", "USDC"):
        total = sum(sum(a.bal.get(asset, [0, 0])) for a in led.accounts.values())
        total += led.fee_balance(asset)
        if total != n_accounts * FUNDS:
            fail(f"conservation broken for {asset}: {total} != {n_accounts * FUNDS}")


def time_ledger(setup: Sequence[Any], items: Sequence[Item], want: str) -> tuple[float, int]:
    gc.collect()
    led = new_ledger(setup)
    apply = led.apply
    clock = time.perf_counter_ns
    t0 = clock()
    for item, ref, ts in items:
        apply(item, ref, ts)
    elapsed = clock() - t0
    if led.state_hash() != want:
        fail("a timed run ended in a different state than the recording pass")
    return len(items) * 1e9 / elapsed, elapsed


def profile(setup: Sequence[Any], items: Sequence[Item], top: int) -> None:
    import cProfile
    import pstats

    led = new_ledger(setup)
    apply = led.apply
    prof = cProfile.Profile()
    prof.enable()
    for item, ref, ts in items:
        apply(item, ref, ts)
    prof.disable()
    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(top)


def callgrind_pass(setup: Sequence[Any], items: Sequence[Item], want: str, count: int) -> None:
    """Apply the first `count` inputs (0: all) through `itertools.starmap`, whose C function
    `starmap_next` brackets exactly the ledger's work for callgrind's --toggle-collect."""
    led = new_ledger(setup)
    chosen = items[:count] if count else items
    gc.collect()
    gc.disable()
    try:
        for _ in itertools.starmap(led.apply, chosen):
            pass
    finally:
        gc.enable()
    if len(chosen) == len(items) and led.state_hash() != want:
        fail("the pass ended in a different state than the recording pass")
    log(f"applied {len(chosen)} inputs")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--ops", type=int, default=mb.OPS)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=mb.SEED)
    p.add_argument("--profile", type=int, nargs="?", const=25, default=0, metavar="TOP")
    p.add_argument("--save-items", metavar="FILE", help="pickle the recorded input stream")
    p.add_argument("--load-items", metavar="FILE", help="use a saved stream, do not record")
    p.add_argument("--callgrind", type=int, default=-1, metavar="N", help="one starmap pass")
    args = p.parse_args(argv)
    if args.ops <= 0 or args.runs <= 0:
        p.error("--ops and --runs must be positive")

    t = time.perf_counter()
    accounts = [mb.account_of(i) for i in range(ACCOUNTS)]
    setup = setup_commands(accounts)
    if args.load_items:
        with open(args.load_items, "rb") as f:
            saved = pickle.load(f)
        if (saved["ops"], saved["seed"]) != (args.ops, args.seed):
            fail(f"{args.load_items} holds --ops {saved['ops']} --seed {saved['seed']}")
        items, want, rejected = saved["items"], saved["want"], saved["rejected"]
        n_cmds = saved["commands"]
    else:
        work = mb.generate(args.ops, args.seed)
        cmds = risk_commands(work.ops, accounts)
        n_cmds = len(cmds)
        items, recorded, rejected = record(setup, cmds)
        want = recorded.state_hash()
        conservation(recorded, len(accounts))
    if args.save_items:
        with open(args.save_items, "wb") as f:
            pickle.dump(
                {
                    "ops": args.ops,
                    "seed": args.seed,
                    "items": items,
                    "want": want,
                    "rejected": rejected,
                    "commands": n_cmds,
                },
                f,
            )
    kinds: dict[str, int] = {}
    for item, _, _ in items:
        name = type(item).__name__
        kinds[name] = kinds.get(name, 0) + 1
    log(
        f"recorded {len(items)} inputs in {time.perf_counter() - t:.1f}s: {kinds}; "
        f"risk rejections {rejected}"
    )
    if set(rejected) - {RiskCode.NO_REFERENCE_PRICE}:
        fail(f"unexpected risk rejections: {rejected}")
    if args.profile:
        profile(setup, items, args.profile)
        return
    if args.callgrind >= 0:
        callgrind_pass(setup, items, want, args.callgrind)
        return

    runs: list[float] = []
    gc.disable()
    try:
        for run in range(1, args.runs + 1):
            per_s, elapsed = time_ledger(setup, items, want)
            runs.append(per_s)
            log(f"run {run}: {elapsed / 1e6:8.1f} ms {per_s:12,.0f} events/s")
    finally:
        gc.enable()
    result = {
        "events_per_s": round(statistics.median(runs)),
        "inputs": len(items),
        "commands": n_cmds,
        "matching_events": len(items) - n_cmds,
        "accounts": ACCOUNTS,
        "ops": args.ops,
        "runs": args.runs,
        "seed": args.seed,
        "events_per_s_runs": [round(x) for x in runs],
        "risk_rejections": dict(sorted(rejected.items())),
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

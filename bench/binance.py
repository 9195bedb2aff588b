"""The Binance-compatible adapter's cost: orders through `POST /api/v3/order` (HMAC, form
body) against the native `POST /v1/orders` in the same run, on the same exchange.

    python bench/binance.py                       # embedded, 3 rounds of 4 s each, 32 clients
    python bench/binance.py --seconds 10 --clients 64 --mode distributed

Reuses bench/gateway.py's exchange starter (`dex up`, rate limits lifted, free ports) and its
bare HTTP/1.1 client; each of `--clients` keep-alive connections sends resting post-only
limit orders (alternating sides, never crossing) and reads each answer in turn, on the native
route and on the Binance route for `--seconds` each, in `--rounds` rounds whose order
alternates (native then Binance, Binance then native, ...), so that a shared machine's drift
and the growing book weigh on both alike. Printed (JSON): orders/s and ack p50/p99 of each
route over all its rounds with the exchange's CPU time per order (from /proc: the adapter's
own cost, whatever the machine's other load and the load generator beside it do to the
rates) and the load generator's, each round's, and `binance_vs_native`, the ratio of the
totals (target: at least 0.8). Correctness gate: every order answered 200 and open (NEW),
else exit 1. A 2 s warm-up of each route is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import (
    _auth_headers,
    _cpu_s,
    _order_body,
    _raw_request,
    _raw_response,
    _start_exchange,
    _stop_exchange,
    fail,
    onboard_traders,
)

_IDS = itertools.count()  # client order ids: unique in the run


async def _onboard(url: str, n: int) -> list[dict[str, Any]]:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        return await onboard_traders(http, n)


def _order(kind: str, key: dict[str, Any], n: int, host: str) -> bytes:
    sell = n % 2 == 0
    price = f"{2101 + n % 50}.00" if sell else f"{1899 - n % 50}.00"
    if kind == "native":
        # the same order as bench/gateway.py's, as JSON, with a client order id as the
        # Binance one has (Binance, and CCXT, always give one): the same work behind
        body = _order_body(n, f"n{next(_IDS)}")
        return _raw_request(
            "POST", "/v1/orders", body, _auth_headers(key, "POST", "/v1/orders", body), host
        )
    query = urlencode(
        {
            "symbol": "ETHUSDC",
            "side": "SELL" if sell else "BUY",
            "type": "LIMIT_MAKER",
            "quantity": "0.01",
            "price": price,
            "newOrderRespType": "RESULT",
            "newClientOrderId": f"b{next(_IDS)}",
            "timestamp": int(time.time() * 1000),
        }
    )
    sig = hmac.new(key["secret"].encode(), query.encode(), hashlib.sha256).hexdigest()
    body = f"{query}&signature={sig}".encode()
    headers = {"X-MBX-APIKEY": key["api_key"], "content-type": "application/x-www-form-urlencoded"}
    return _raw_request("POST", "/api/v3/order", body, headers, host)


async def _load(
    url: str, keys: list[dict[str, Any]], kind: str, seconds: float, clients: int
) -> tuple[list[float], int]:
    """`kind`'s orders for `seconds` from `clients` connections: each one's ack latency (s)
    and how many were not answered 200 open."""
    host, port = url.removeprefix("http://").split(":")
    stop_at = time.perf_counter() + seconds
    latencies: list[float] = []
    bad = 0
    ok_mark = b'"status":"open"' if kind == "native" else b'"status":"NEW"'

    async def client(c: int) -> None:
        nonlocal bad
        key = keys[c % len(keys)]
        reader, writer = await asyncio.open_connection(host, int(port))
        n = 0
        try:
            while time.perf_counter() < stop_at:
                n += 1
                request = _order(kind, key, n, host)
                t0 = time.perf_counter()
                writer.write(request)
                status, answer = await _raw_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status != 200 or ok_mark not in answer:
                    bad += 1
                    if bad <= 3:
                        print(f"{kind}: bad answer {status} {answer[-200:]!r}", file=sys.stderr)
        finally:
            writer.close()

    await asyncio.gather(*(client(c) for c in range(clients)))
    return latencies, bad


def _figures(latencies: list[float], bad: int, seconds: float) -> dict[str, Any]:
    xs = sorted(latencies)

    def pct(q: float) -> float:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 2) if xs else 0.0

    return {
        "orders": len(xs),
        "orders_per_s": round(len(xs) / seconds),
        "ack_p50_ms": pct(0.5),
        "ack_p99_ms": pct(0.99),
        "refused_or_wrong": bad,
    }


async def _run(url: str, args: argparse.Namespace, pids: list[int]) -> dict[str, Any]:
    keys = await _onboard(url, args.traders)
    for kind in ("native", "binance"):
        await _load(url, keys, kind, 2.0, args.clients)
    got: dict[str, tuple[list[float], int]] = {"native": ([], 0), "binance": ([], 0)}
    cpu = {"native": 0.0, "binance": 0.0}
    ours = {"native": 0.0, "binance": 0.0}
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        counts = {}
        for kind in ("native", "binance") if r % 2 == 0 else ("binance", "native"):
            before, mine = _cpu_s(pids), time.process_time()
            latencies, bad = await _load(url, keys, kind, args.seconds, args.clients)
            after = _cpu_s(pids)
            ours[kind] += time.process_time() - mine
            cpu[kind] += 0.0 if before is None or after is None else after - before
            counts[kind] = len(latencies)
            got[kind] = (got[kind][0] + latencies, got[kind][1] + bad)
        rounds.append(
            {
                **{f"{k}_per_s": round(n / args.seconds) for k, n in counts.items()},
                "ratio": round(counts["binance"] / max(counts["native"], 1), 3),
            }
        )
    span = args.seconds * args.rounds
    native, binance = (_figures(*got[k], span) for k in ("native", "binance"))
    for kind, figures in (("native", native), ("binance", binance)):
        n = max(figures["orders"], 1)
        figures["server_cpu_us_per_order"] = round(cpu[kind] / n * 1e6)
        figures["generator_cpu_us_per_order"] = round(ours[kind] / n * 1e6)
    return {
        "native": native,
        "binance": binance,
        "by_round": rounds,
        "binance_vs_native": round(binance["orders"] / max(native["orders"], 1), 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--mode", default="embedded", help="embedded or distributed")
    p.add_argument("--seconds", type=float, default=4.0, help="of each route in each round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--traders", type=int, default=16)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        proc, url, extras = _start_exchange(args.mode, workdir)
        try:
            got = asyncio.run(_run(url, args, [proc.pid, *(e.pid for e in extras)]))
        finally:
            _stop_exchange(proc, extras)
    out = {
        "mode": args.mode,
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": args.rounds,
        **got,
    }
    print(json.dumps(out, indent=2))
    if got["native"]["refused_or_wrong"] or got["binance"]["refused_or_wrong"]:
        fail("some orders were not answered 200 open")


if __name__ == "__main__":
    main()

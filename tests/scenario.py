"""Helpers for scenario tests written in the replay tool's text form.

`run(lines)` replays command dicts through a fresh engine and returns the events as dicts;
`check(events, expected)` compares them with hand-written expectations: the same number of
events, the same kinds in the same order, and every field the expectation names.
"""

from __future__ import annotations

import io
import json
from typing import Any

import msgspec

from dex.matching.replay import replay
from tests.support.markets import T_USD, add_market_line

# T-USD (tests/support/markets.py), at most 5 open orders per account
SETUP: dict[str, Any] = add_market_line(msgspec.structs.replace(T_USD, max_open_orders=5))
MARKET = T_USD.market


class Clock:
    def __init__(self) -> None:
        self.ts = 1000

    def __call__(self) -> int:
        self.ts += 1
        return self.ts


def run(
    lines: list[dict[str, Any]], *, setup: dict[str, Any] | None = SETUP
) -> list[dict[str, Any]]:
    """Replay the lines (after the market setup) and return the events they produced."""
    head = [setup] if setup else []
    data = [json.dumps(line).encode() for line in head + lines]
    out, err = io.BytesIO(), io.StringIO()
    status = replay(data, out, err)
    assert status == 0, err.getvalue()
    events = [json.loads(x) for x in out.getvalue().splitlines()]
    skip = 3 if setup else 0  # two asset_added and market_added
    return events[skip:]


def check(events: list[dict[str, Any]], expected: list[tuple[str, dict[str, Any]]]) -> None:
    got = [(e["event"], e) for e in events]
    assert [k for k, _ in got] == [k for k, _ in expected], _show(events)
    for (kind, actual), (_, want) in zip(got, expected, strict=True):
        for key, value in want.items():
            assert actual.get(key) == value, (
                f"{kind}.{key}: {actual.get(key)!r} != {value!r}\n" + _show(events)
            )


def _show(events: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(e) for e in events)


def place(
    ts: int, account: str, side: str, price: int | None, size: int | None, **kw: Any
) -> dict[str, Any]:
    line: dict[str, Any] = {
        "cmd": "place",
        "ts": ts,
        "market": MARKET,
        "account": account,
        "side": side,
    }
    line["type"] = kw.pop("type", "limit" if price is not None else "market")
    if price is not None:
        line["price"] = str(price)
    if size is not None:
        line["size"] = str(size)
    if line["type"] in ("market", "stop_market") and "tif" not in kw:
        kw["tif"] = "IOC"
    for key, value in kw.items():
        line[key] = str(value) if key in _DECIMAL_FIELDS else value
    return line


_DECIMAL_FIELDS = {"quote_size", "trigger_price", "display_size", "max_price", "min_price"}


def cmd(kind: str, ts: int, **kw: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"cmd": kind, "ts": ts}
    if kind in ("cancel", "amend", "set_market_status"):
        line["market"] = MARKET
    for key, value in kw.items():
        line[key] = str(value) if key in ("price", "size") else value
    return line

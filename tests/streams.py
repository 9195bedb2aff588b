"""Seeded random command streams in the replay text form, covering every order feature."""

from __future__ import annotations

import random
from typing import Any

MARKETS = [
    {
        "cmd": "add_market",
        "market": "ETH-USDC",
        "base": "ETH",
        "quote": "USDC",
        "tick_size": "0.5",
        "lot_size": "0.1",
        "min_size": "0.1",
        "min_notional": "0",
        "price_band_bps": 1500,
        "max_open_orders": 6,
    },
    {
        "cmd": "add_market",
        "market": "BTC-USDC",
        "base": "BTC",
        "quote": "USDC",
        "tick_size": "1",
        "lot_size": "0.01",
        "min_size": "0.02",
        "min_notional": "1",
        "price_band_bps": 800,
    },
]
_TICK = {"ETH-USDC": 0.5, "BTC-USDC": 1.0}
_LOT = {"ETH-USDC": "0.1", "BTC-USDC": "0.01"}


def _price(rng: random.Random, market: str) -> str:
    ticks = rng.randint(190, 210)
    return f"{ticks * _TICK[market]:.1f}" if market == "ETH-USDC" else str(ticks)


def _size(rng: random.Random, market: str) -> str:
    lots = rng.randint(1, 30)
    return f"{lots / 10:.1f}" if market == "ETH-USDC" else f"{lots / 100:.2f}"


def stream(seed: int, n: int) -> list[dict[str, Any]]:
    """`n` commands after the two markets; every line is well formed."""
    rng = random.Random(seed)
    lines: list[dict[str, Any]] = [dict(m) for m in MARKETS]
    ts = 1_000
    next_id = 0
    accounts = ["0x" + f"{i:040x}" for i in range(1, 5)]
    placed: list[tuple[int, str, str]] = []  # (order id, account, market)
    for _ in range(n):
        ts += rng.randint(1, 5)
        market = rng.choice(list(_TICK))
        account = rng.choice(accounts)
        roll = rng.random()
        line: dict[str, Any] = {"ts": ts, "market": market, "account": account}
        if roll < 0.55:
            next_id += 1
            placed.append((next_id, account, market))
            line.update(
                cmd="place",
                side=rng.choice(["buy", "sell"]),
                client_order_id=f"c{rng.randint(1, 40)}",
            )
            kind = rng.choice(["limit"] * 6 + ["market", "stop_limit", "stop_market"])
            line["type"] = kind
            if kind in ("limit", "stop_limit"):
                line["price"] = _price(rng, market)
                line["size"] = _size(rng, market)
                line["tif"] = rng.choice(["GTC", "GTC", "IOC", "FOK", "GTD"])
                if line["tif"] == "GTD":
                    line["expires_at"] = ts + rng.randint(1, 40)
                if kind == "limit" and line["tif"] in ("GTC", "GTD"):
                    line["post_only"] = rng.random() < 0.15
                    if rng.random() < 0.2:
                        line["display_size"] = _LOT[market]
            else:
                line["tif"] = rng.choice(["IOC", "IOC", "FOK"])
                if line["tif"] == "FOK" or rng.random() < 0.6:
                    line["size"] = _size(rng, market)
                else:
                    line["quote_size"] = str(rng.randint(5, 400))
                if rng.random() < 0.5:
                    line["max_price" if line["side"] == "buy" else "min_price"] = _price(
                        rng, market
                    )
            if kind.startswith("stop"):
                line["trigger_price"] = _price(rng, market)
            line["stp"] = rng.choice(["expire_taker", "expire_maker", "expire_both", "none"])
        elif roll < 0.9 and placed and rng.random() < 0.8:
            oid, account, market = rng.choice(placed[-30:])
            line.update(market=market, account=account, order_id=oid)
            if roll < 0.75:
                line["cmd"] = "cancel"
            else:
                line["cmd"] = "amend"
                if rng.random() < 0.5:
                    line["price"] = _price(rng, market)
                if "price" not in line or rng.random() < 0.5:
                    line["size"] = _size(rng, market)
        elif roll < 0.9:
            line.update(cmd="cancel", order_id=rng.randint(1, max(1, next_id)))
        elif roll < 0.94:
            line = {"cmd": "cancel_all", "ts": ts, "account": account}
            if rng.random() < 0.5:
                line["market"] = market
        elif roll < 0.97:
            line = {"cmd": "set_market_status", "ts": ts, "market": market}
            line["status"] = rng.choice(
                ["active", "active", "active", "post_only", "cancel_only", "halted"]
            )
        else:
            line = {"cmd": "tick", "ts": ts + rng.randint(0, 30)}
            ts = line["ts"]
        lines.append(line)
    return lines

"""The history queries, each on a connection the caller opened (the service's read API)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from dex.persistence import schema
from dex.persistence.schema import balances, orders, trades


async def account_balances(conn: AsyncConnection, account: str) -> dict[str, dict[str, int]]:
    """{asset: {"available": units, "locked": units}} of an account (canonical address)."""
    got = await conn.execute(
        select(balances.c.asset, balances.c.available, balances.c.locked)
        .where(balances.c.account == account.lower())
        .order_by(balances.c.asset)
    )
    return {row.asset: {"available": int(row.available), "locked": int(row.locked)} for row in got}


async def market_trades(conn: AsyncConnection, market: str, limit: int) -> list[dict[str, Any]]:
    """The market's latest trades, newest first (price ticks, size lots, ts ns)."""
    got = await conn.execute(
        select(
            trades.c.trade_id,
            trades.c.price,
            trades.c.size,
            trades.c.maker_order_id,
            trades.c.taker_order_id,
            trades.c.taker_side,
            trades.c.ts,
        )
        .where(trades.c.market == market)
        .order_by(trades.c.trade_id.desc())
        .limit(limit)
    )
    return [dict(row) for row in got.mappings()]


async def account_orders(conn: AsyncConnection, account: str, limit: int) -> list[dict[str, Any]]:
    """The account's latest orders, newest first (as the matching events left them)."""
    got = await conn.execute(
        select(orders)
        .where(orders.c.account == account.lower())
        .order_by(orders.c.order_id.desc())
        .limit(limit)
    )
    return [dict(row) for row in got.mappings()]


async def markets(conn: AsyncConnection) -> dict[str, tuple[str, str]]:
    """market -> (base, quote) of every market stored."""
    table = schema.markets
    rows = await conn.execute(select(table.c.market, table.c.base, table.c.quote))
    return {row.market: (row.base, row.quote) for row in rows}


async def positions(conn: AsyncConnection) -> dict[str, int]:
    """stream -> the last entry of it applied."""
    table = schema.positions
    got = await conn.execute(select(table.c.stream, table.c.log_seq))
    return {row.stream: int(row.log_seq) for row in got}

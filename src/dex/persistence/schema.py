"""The history store's tables (SQLAlchemy 2 Core): what the code reads and writes.

Amounts are integers: asset units, price ticks, size lots.

- `positions(stream PK, log_seq)`: the last entry of each log applied.
- `markets(market PK, base, quote)`: from risk `market_added` (trade_settled needs them).
- `balances(account, asset, available, locked; PK account, asset)`: copied from the risk
  events that carry an account's new balance; fee accounts `fee:<r>` from `trade_settled`.
- `trades(market, trade_id, price, size, maker_order_id, taker_order_id, taker_side, ts;
  PK market, trade_id)`: matching `trade`.
- `candles_1m(market, open_time, open, high, low, close, base_volume, quote_volume,
  trade_count; PK market, open_time)`: the 1-minute candle of each minute of a market that
  holds a trade (`open_time` ns, a multiple of 60 s since the epoch; prices in ticks, base
  volume in lots, quote volume in ticks x lots), kept by the ingest writer in the
  transaction that writes the trades (migration 0005). The longer intervals are folded from
  these rows at query time (`dex.persistence.queries.candles`); `dex db verify` holds them
  equal to the trades.
- `orders(order_id PK, account, market, side, type, price, size, client_order_id, status,
  filled, reason, updated_ts, tif, trigger_price, quote_size, created_ts)`: matching order
  events (status open / untriggered / filled / cancelled / expired / rejected; `filled` in
  lots; `created_ts` the accepted or rejected event's time).
- `log_entries(stream, log_seq, body; PK stream, log_seq)`: the raw events, one row per log
  entry (unique by stream and log position): `body` the JSON array of the entry's events, in
  log order (JSON, not JSONB, on PostgreSQL: stored as sent, validated, not converted; its
  TOAST compression lz4 where the server has it). One row per entry, not per event: the
  writer's widest table costs one tuple and one key per entry (migration 0004).
- `events` (a view, in `views`, not in `metadata`): every event of every entry as a row
  `(stream, log_seq, idx, kind, body)` unpacked from `log_entries` (`json_array_elements` /
  `json_each`): what the store held before 0004, for readers (tests, `dex db`, operators).
- `catalog(stream, log_seq, idx, body; PK stream, log_seq, idx)`: the `asset_added` and
  `market_added` events (a handful), which the service learns decimals from at start.
- `fills(trade_id, market, liquidity, order_id, account, side, price, size, fee, fee_asset,
  ts, stream, log_seq; PK trade_id, market, liquidity)`: one row per side of each trade, from
  the risk `trade_settled` of the shard that owns the side (`fee` negative: a rebate; the fee
  asset is the asset the side received).
- `ledger_entries(stream, log_seq, idx, line, account, asset, bucket, delta, cause, ts;
  unique account, ts, stream, log_seq, idx, line)`: double-entry, one row per change of an account's
  `available` or `locked` (signed units) with its cause (`dex.persistence.ledger`): the risk
  event at (`stream`, `log_seq`, `idx`) as in `events`, `line` its n-th entry. Each event's
  entries sum to zero per asset, against the system accounts `external` (deposits in,
  completed withdrawals out) and `clearing:<market>` (each side of a trade against the
  market; zero once both sides of every trade are applied).
- `deposits(tx_id, log_index, account, asset, amount, ts, stream, log_seq; PK tx_id,
  log_index)`: risk `deposit_credited`.
- `withdrawals(withdrawal_id PK, account, asset, amount, status, tx_id, reason,
  requested_ts, updated_ts, stream, log_seq)`: risk `withdrawal_requested`, then
  `withdrawal_completed` / `withdrawal_failed` (status requested / completed / failed).

Every list the query API pages through has an index `(filter columns, sort key)` whose sort
key ends in the row's identity (`dex.persistence.queries`), except the ledger filtered by
asset: it reads the account's range of `ledger_by_account_ts` and filters (an account holds
a few assets; a second 7-column index on the widest table cost the writer more than a third
of its time, migration 0004).

The tables are created and changed by the migrations (`dex.persistence.migrations`), never
from here: a change to this module comes with a new revision, and a test holds the migrated
schema equal to these tables.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, MetaData, Table, Text
from sqlalchemy.dialects import postgresql

metadata = MetaData()
views = MetaData()  # the views the migrations make (`events`): not tables, not compared
BODY = JSON().with_variant(postgresql.JSONB(), "postgresql")  # the `events` bodies up to 0003

positions = Table(
    "positions",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("log_seq", BigInteger, nullable=False),
)
markets = Table(
    "markets",
    metadata,
    Column("market", Text, primary_key=True),
    Column("base", Text, nullable=False),
    Column("quote", Text, nullable=False),
)
balances = Table(
    "balances",
    metadata,
    Column("account", Text, primary_key=True),
    Column("asset", Text, primary_key=True),
    Column("available", BigInteger, nullable=False),
    Column("locked", BigInteger, nullable=False),
)
trades = Table(
    "trades",
    metadata,
    Column("market", Text, primary_key=True),
    Column("trade_id", BigInteger, primary_key=True),
    Column("price", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("maker_order_id", BigInteger, nullable=False),
    Column("taker_order_id", BigInteger, nullable=False),
    Column("taker_side", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Index("trades_by_market_ts", "market", "ts", "trade_id"),
)
candles_1m = Table(
    "candles_1m",
    metadata,
    Column("market", Text, primary_key=True),
    Column("open_time", BigInteger, primary_key=True),
    Column("open", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    Column("low", BigInteger, nullable=False),
    Column("close", BigInteger, nullable=False),
    Column("base_volume", BigInteger, nullable=False),
    Column("quote_volume", BigInteger, nullable=False),
    Column("trade_count", BigInteger, nullable=False),
)
CANDLE_ROW = tuple(candles_1m.columns)[1:]
"""A stored minute as queries and verify read it: open_time, then the candle's values in
`dex.marketdata.candles.Candle.row()` order."""
orders = Table(
    "orders",
    metadata,
    Column("order_id", BigInteger, primary_key=True),
    Column("account", Text, nullable=False),
    Column("market", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("type", Text),  # None for an order the engine rejected (the event does not say)
    Column("price", BigInteger),
    Column("size", BigInteger),
    Column("client_order_id", Text),
    Column("status", Text, nullable=False),
    Column("filled", BigInteger, nullable=False),
    Column("reason", Text),  # cancel reason or reject code
    Column("updated_ts", BigInteger, nullable=False),
    Column("tif", Text),  # None for a rejected order
    Column("trigger_price", BigInteger),  # None unless a stop order
    Column("quote_size", BigInteger),  # quote units; None unless a market buy by quote
    Column("created_ts", BigInteger, nullable=False, server_default="0"),
    Index("orders_by_account_created", "account", "created_ts", "order_id"),
    Index("orders_by_account_market_created", "account", "market", "created_ts", "order_id"),
    Index("orders_by_client_id", "account", "client_order_id", "created_ts", "order_id"),
)
log_entries = Table(
    "log_entries",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("log_seq", BigInteger, primary_key=True),
    Column("body", JSON, nullable=False),
)
catalog = Table(
    "catalog",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("log_seq", BigInteger, primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("body", JSON, nullable=False),
)
events = Table(  # a view of `log_entries` (migration 0004), read-only
    "events",
    views,
    Column("stream", Text, primary_key=True),
    Column("log_seq", BigInteger, primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("body", BODY, nullable=False),
)
fills = Table(
    "fills",
    metadata,
    Column("trade_id", BigInteger, primary_key=True),
    Column("market", Text, primary_key=True),
    Column("liquidity", Text, primary_key=True),  # maker / taker
    Column("order_id", BigInteger, nullable=False),
    Column("account", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("fee", BigInteger, nullable=False),
    Column("fee_asset", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("stream", Text, nullable=False),
    Column("log_seq", BigInteger, nullable=False),
    Index("fills_by_account_ts", "account", "ts", "trade_id", "market", "liquidity"),
    Index("fills_by_account_market_ts", "account", "market", "ts", "trade_id", "liquidity"),
)
ledger_entries = Table(
    "ledger_entries",
    metadata,
    # no primary key (0004): the unique `ledger_by_account_ts` ends in the entry's identity
    Column("stream", Text, nullable=False),
    Column("log_seq", BigInteger, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("line", BigInteger, nullable=False),
    Column("account", Text, nullable=False),
    Column("asset", Text, nullable=False),
    Column("bucket", Text, nullable=False),  # available / locked
    Column("delta", BigInteger, nullable=False),
    Column("cause", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Index("ledger_by_account_ts", "account", "ts", "stream", "log_seq", "idx", "line", unique=True),
)
deposits = Table(
    "deposits",
    metadata,
    Column("tx_id", Text, primary_key=True),
    Column("log_index", BigInteger, primary_key=True),
    Column("account", Text, nullable=False),
    Column("asset", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("stream", Text, nullable=False),
    Column("log_seq", BigInteger, nullable=False),
    Index("deposits_by_account_ts", "account", "ts", "tx_id", "log_index"),
)
withdrawals = Table(
    "withdrawals",
    metadata,
    Column("withdrawal_id", BigInteger, primary_key=True),
    Column("account", Text, nullable=False),
    Column("asset", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", Text, nullable=False),  # requested / completed / failed
    Column("tx_id", Text),
    Column("reason", Text),
    Column("requested_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    Column("stream", Text, nullable=False),
    Column("log_seq", BigInteger, nullable=False),
    Index("withdrawals_by_account_ts", "account", "requested_ts", "withdrawal_id"),
)

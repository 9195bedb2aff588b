"""Where everything lives on the bus: stream, lease and snapshot names, and shard mapping.

Keys of one shard share a Redis hash tag (`{me:3}`, `{risk:1}`), so a shard's log and the
streams it feeds are written in one atomic step. Lease names are the tags themselves, so a
lease and the streams it fences share a slot. Markets map to matching shards and accounts to
risk shards by `crc32(key) mod count`, never Python's `hash()`.

| stream | writer | readers |
|---|---|---|
| `dex:{admin}:log` | admin endpoints (unfenced) | every shard |
| `dex:{risk:r}:in` | gateway, admin endpoints (unfenced) | risk shard r |
| `dex:{risk:r}:log` | risk shard r (fenced) | persistence, gateway |
| `dex:{risk:r}:to:m` | risk shard r (fenced, with its log) | matching shard m |
| `dex:{me:m}:events` | matching shard m (fenced) | risk shards, market-data, persistence, gateway |
| `dex:{md:<market>}:feed` | market-data (unfenced, trimmed to its last entries) | gateway |
"""

from __future__ import annotations

from dex.core.sharding import shard_of

ADMIN_STREAM = "dex:{admin}:log"
MATCHING = "matching-engine"
RISK = "risk-engine"

# readers that record positions on a shard's log; the log is trimmed only below all of them
MARKET_DATA_READER = "market-data"
PERSISTENCE_READER = "persistence"


shard_for = shard_of  # the one mapping (dex.core.sharding), under the name the services use


def me_tag(m: int) -> str:
    return f"me:{m}"


def risk_tag(r: int) -> str:
    return f"risk:{r}"


def me_log(m: int) -> str:
    return f"dex:{{me:{m}}}:events"


def risk_in(r: int) -> str:
    return f"dex:{{risk:{r}}}:in"


def risk_log(r: int) -> str:
    return f"dex:{{risk:{r}}}:log"


def risk_to(r: int, m: int) -> str:
    return f"dex:{{risk:{r}}}:to:{m}"


def md_feed(market: str) -> str:
    """A market's public feed (`dex.wire.feed` entries), published by market data."""
    return f"dex:{{md:{market}}}:feed"


def snapshot_name(tag: str) -> str:
    return f"dex:{{{tag}}}:snapshot"


def member_prefix(service: str) -> str:
    """Lease-name prefix under which the live replicas of a service announce themselves."""
    return f"member:{service}:"

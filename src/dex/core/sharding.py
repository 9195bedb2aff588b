"""Which shard a key belongs to: crc32 of the key, mod the shard count.

Markets map to matching shards by their symbol, accounts to risk shards by their canonical
address. crc32, never Python's `hash()` (salted per process): every process, on every
machine, must map a key to the same shard.
"""

from __future__ import annotations

import zlib


def shard_of(key: str, count: int) -> int:
    """The shard (0 to `count` - 1) of a market symbol or canonical account address."""
    return zlib.crc32(key.encode()) % count

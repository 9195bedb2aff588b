"""Account addresses: validation, the canonical form and the shard an account belongs to.

An address is exactly `0x` followed by 40 ASCII hex digits, nothing before or after (no
whitespace, no newline, no look-alike characters). All-lower or all-upper hex digits are
accepted as they are; a mixed-case address must carry a valid EIP-55 checksum (the case of
each letter is set by the keccak-256 of the lower-case hex). The canonical form is lower
case; accounts are compared, stored and sharded in that form only.
"""

from __future__ import annotations

import re

from Crypto.Hash import keccak

# an account's risk shard: `shard_of(canonical address, risk shard count)`
from dex.core.sharding import shard_of as shard_of

# Matched with `fullmatch`: `re.match` with `$` takes a final newline ("0x...\n" would be
# another account). `[0-9a-fA-F]` in a str pattern is ASCII only (no look-alike digits).
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")

# what a request naming an invalid address is told
INVALID_ADDRESS = "account must be 0x and 40 hex digits (mixed case: a valid EIP-55 checksum)"


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def checksum_address(address: str) -> str:
    """The EIP-55 spelling of a valid address (any case in, mixed case out)."""
    hex_digits = address[2:].lower()
    digest = keccak256(hex_digits.encode()).hex()
    return "0x" + "".join(
        c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c
        for i, c in enumerate(hex_digits)
    )


def canonical_address(address: str) -> str | None:
    """The lower-case form of a valid address, or None if it is not one."""
    if not isinstance(address, str) or not _ADDRESS_RE.fullmatch(address):
        return None
    digits = address[2:]
    lower = digits.lower()
    if digits == lower:
        return address
    if digits != digits.upper() and checksum_address(address) != address:
        return None
    return "0x" + lower

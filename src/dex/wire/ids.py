"""Transaction ids of the credits the exchange makes itself: the faucet and `dex admin credit`.

A deposit is credited once per `(tx_id, log_index)`: the ledger ignores a repeat. So an id the
exchange makes up must never be made again — not after a restart, not by another replica —
or the credit is silently dropped. One scheme, here, for every such credit.
"""

from __future__ import annotations

import secrets
import time

CREDIT_PREFIX = "faucet:"  # the form the ledger checks: faucet:<decimal digits>


def new_credit_tx_id() -> str:
    """`faucet:` and 39 decimal digits: the wall clock in nanoseconds (19 digits) and 64
    random bits (20 digits, zero-padded).

    Unique without coordination: two ids are equal only if made in the same nanosecond and
    they drew the same 64 bits (about 1 in 1.8e19). Never equal to an id of the earlier
    counters, which had 16 (operator credits) or 19 (faucet) digits."""
    return f"{CREDIT_PREFIX}{time.time_ns():019d}{secrets.randbits(64):020d}"

"""Identifiers a risk shard takes from requests, whatever path they came by (the gateway
checks them too): an address is exactly `0x` and 40 ASCII hex digits, and a client order id
1 to 36 of `A-Z a-z 0-9 . _ : -`. Anything else is refused with a code and changes nothing
but the shard's clock and event counter.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from dex.risk import commands as rc
from dex.risk.address import canonical_address
from dex.risk.codes import RiskCode
from dex.risk.events import OrderAcceptedForMatching, OrderRejected
from dex.risk.ledger import Ledger
from tests.risk.harness import SIMPLE, Desk, addr
from tests.risk.test_ledger_rules import fund, of, place, rejected

A = addr(1)
CHECKSUMMED = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # from EIP-55's test vectors


@pytest.fixture
def desk() -> Desk:
    d = Desk()
    d.do(rc.AddMarket(spec=SIMPLE))
    fund(d, A, "USD", 10_000)
    return d


LOWER = CHECKSUMMED.lower()
LOOK_ALIKES = [
    LOWER + "\n",
    LOWER + "\r\n",
    LOWER + "\r",
    "\n" + LOWER,
    " " + LOWER,
    LOWER + " ",
    LOWER + "\t",
    LOWER + "\u00a0",  # no-break space
    LOWER + "\u200b",  # zero-width space
    "\uff10x" + LOWER[2:],  # fullwidth 0
    "0\uff58" + LOWER[2:],  # fullwidth x
    "\uff10\uff58" + LOWER[2:],
    "0x" + "\uff14" * 40,  # fullwidth 4
    "0x" + "\u0664" * 40,  # Arabic-Indic 4
    "0x" + "\u0967" * 40,  # Devanagari 1
    "0x" + "\u0430" * 40,  # Cyrillic a
    "0x" + LOWER[2:-1] + "\uff21",  # fullwidth A as the last digit
    "0x" + LOWER[2:-1] + "\u0391",  # Greek capital alpha
    LOWER[:-1] + "\n",  # 39 digits and a newline
]


@pytest.mark.parametrize("account", LOOK_ALIKES)
def test_canonical_address_takes_exactly_0x_and_40_ascii_hex_digits(account: str) -> None:
    assert canonical_address(LOWER) == LOWER
    assert canonical_address(account) is None


def state_but_positions(led: Ledger) -> dict[str, Any]:
    """The ledger's snapshot without its clock and event counter (refusals move them)."""
    state: dict[str, Any] = msgspec.msgpack.decode(led.snapshot())
    del state["ts"], state["log_seq"]
    return state


@pytest.mark.parametrize("account", LOOK_ALIKES)
def test_look_alike_addresses_are_refused_and_change_nothing(desk: Desk, account: str) -> None:
    before = state_but_positions(desk.ledger)
    for cmd in (
        rc.Deposit(account=account, asset="T", amount=3, tx_id="look-alike"),
        place(account, "buy", 1, 1),
        rc.Freeze(account=account),
    ):
        assert rejected(desk.do(cmd)) == RiskCode.INVALID_ADDRESS
    assert desk.ledger.balance(LOWER, "T") == (0, 0)
    assert state_but_positions(desk.ledger) == before


MALFORMED_CLIENT_ORDER_IDS = [
    "a\x00b",  # PostgreSQL cannot store a NUL in text
    "x" * 37,
    "",
    "a b",
    " a",
    "a\n",
    "a/b",
    "caf\u00e9",
    "\uff4b",  # fullwidth k
    "\u0661",  # Arabic-Indic 1
    "a\tb",
    "a\u200bb",  # zero-width space
]
LONGEST_CLIENT_ORDER_ID = ("Az09._:-" * 5)[:36]


@pytest.mark.parametrize("cid", MALFORMED_CLIENT_ORDER_IDS)
def test_a_malformed_client_order_id_is_refused_with_a_code_and_changes_nothing(
    desk: Desk, cid: str
) -> None:
    """From any path (the gateway checks it too): 1 to 36 of A-Z a-z 0-9 . _ : -"""
    before = state_but_positions(desk.ledger)
    events = desk.do(place(A, "buy", 90, 5, client_order_id=cid))
    [refused] = events
    assert isinstance(refused, OrderRejected)
    assert refused.code == RiskCode.INVALID_CLIENT_ORDER_ID
    assert refused.client_order_id is None  # the refused text is not passed on
    assert "client_order_id" in refused.message
    assert state_but_positions(desk.ledger) == before
    [acc] = of(
        desk.do(place(A, "buy", 90, 5, client_order_id=LONGEST_CLIENT_ORDER_ID)),
        OrderAcceptedForMatching,
    )
    assert acc.client_order_id == LONGEST_CLIENT_ORDER_ID

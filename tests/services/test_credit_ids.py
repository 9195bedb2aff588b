"""The transaction ids the exchange makes for its own credits (faucet, `dex admin credit`):
the ledger accepts them, and no two are equal — not in one process, not with the clock
standing still, not from two processes started at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dex.core.commands import InputRef
from dex.core.markets import Asset
from dex.risk import commands as rc
from dex.risk.events import DepositCredited
from dex.risk.ledger import Ledger
from dex.wire import ids

ALICE = "0x" + "a" * 40


def test_the_ledger_credits_each_new_id_once() -> None:
    ledger = Ledger()
    ledger.apply(rc.AddAsset(asset=Asset(symbol="USDC", decimals=6)), InputRef("t", 1))
    for seq in range(2, 12):
        events = ledger.apply(
            rc.Deposit(account=ALICE, asset="USDC", amount=7, tx_id=ids.new_credit_tx_id()),
            InputRef("t", seq),
        )
        assert [type(e) for e in events] == [DepositCredited]
    assert ledger.balance(ALICE, "USDC") == (70, 0)


def test_ids_differ_even_when_the_clock_stands_still(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_700_000_000_000_000_000)
    made = {ids.new_credit_tx_id() for _ in range(10_000)}
    assert len(made) == 10_000
    # one fixed width, never the width of the earlier counters' ids (16 and 19 digits)
    assert {len(t) for t in made} == {len("faucet:") + 39}


def test_two_processes_started_together_make_different_ids() -> None:
    code = "from dex.wire.ids import new_credit_tx_id as n; print(*(n() for _ in range(500)))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) for _ in range(2)
    ]
    outs = [p.communicate(timeout=60)[0].decode().split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs[0]) | set(outs[1])) == 1000

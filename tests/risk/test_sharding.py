"""The same command stream through 1, 3 and 7 risk shards: the same money everywhere.

Each shard applies only its own accounts' commands and its own accounts' sides of every
trade; the matching engine is one and the same. Every account's balances and the total fees
per asset (summed over the shards' fee accounts) must not depend on the shard count.
"""

from __future__ import annotations

import pytest

from dex.risk.address import canonical_address, shard_of
from dex.risk.events import TradeSettled
from tests.risk.harness import Desk
from tests.risk.streams import ACCOUNTS, ASSETS, run, stream


def outcome(
    shards: int, seed: int
) -> tuple[dict[tuple[str, str], tuple[int, int]], dict[str, int], int]:
    desk = Desk(shards)
    events = run(desk, stream(seed, 700))
    balances = {(a, asset): desk.bal(a, asset) for a in ACCOUNTS for asset in ASSETS}
    fees = {asset: desk.fees(asset) for asset in ASSETS}
    trades = sum(1 for e in events if isinstance(e, TradeSettled))
    return balances, fees, trades


@pytest.mark.parametrize("seed", [1, 2])
def test_balances_and_fees_do_not_depend_on_the_shard_count(seed: int) -> None:
    one = outcome(1, seed)
    assert one[2] > 50, "the stream should trade"
    assert any(one[1].values()), "the stream should charge fees"
    for shards in (3, 7):
        balances, fees, _ = outcome(shards, seed)
        assert balances == one[0]
        assert fees == one[1]


def test_the_stream_spreads_accounts_over_shards() -> None:
    owners = {shard_of(canonical_address(a) or a, 7) for a in ACCOUNTS}
    assert len(owners) >= 4

"""How a request waits for its outcome (`Gateway._wait`): several requests may wait for one
key, one of them cancelled (its client gone) leaves the others waiting, a wait that runs out
is a 504 `outcome_unknown` and forgets the key, an outcome that already went by is answered
at once."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from dex.app.units import gateway_unit
from dex.bus import MemoryBus
from dex.gateway.service import Gateway
from dex.runtime.http import ApiError
from dex.runtime.settings import load_settings
from tests.bus.contract import aio, yield_to_loop


@asynccontextmanager
async def a_gateway(tmp_path: Path, wait_ms: int) -> AsyncIterator[Gateway]:
    settings = load_settings({"DEX_DATA_DIR": str(tmp_path), "DEX_GATEWAY_WAIT_MS": str(wait_ms)})
    gw: Gateway = gateway_unit(MemoryBus(), settings).extra["gateway"]
    try:
        yield gw
    finally:
        await gw.stop()


@aio
async def test_a_cancelled_waiter_leaves_the_others_their_answer(tmp_path: Path) -> None:
    async with a_gateway(tmp_path, 10_000) as gw:
        table: dict[object, asyncio.Future[object]] = {}
        recent: OrderedDict[object, object] = OrderedDict()
        first = asyncio.ensure_future(gw._wait(table, recent, "k"))
        second = asyncio.ensure_future(gw._wait(table, recent, "k"))
        await yield_to_loop()  # both start waiting
        first.cancel()
        await asyncio.wait({first})
        assert first.cancelled() and not table["k"].done()
        gw._resolve(table, recent, "k", "the outcome")
        assert await asyncio.wait_for(second, 5) == "the outcome"
        # gone by: answered from `recent` without waiting
        assert await gw._wait(table, recent, "k") == "the outcome"


@aio
async def test_a_wait_that_runs_out_is_a_504_and_forgets_the_key(tmp_path: Path) -> None:
    async with a_gateway(tmp_path, 50) as gw:
        table: dict[object, asyncio.Future[object]] = {}
        with pytest.raises(ApiError) as caught:
            await asyncio.wait_for(gw._wait(table, OrderedDict(), "k"), 5)
        assert (caught.value.status, caught.value.code) == (504, "outcome_unknown")
        assert "k" not in table

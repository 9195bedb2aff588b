"""`MemoryBus` against the bus contract."""

from __future__ import annotations

import asyncio

import pytest

from dex.bus import Bus, MemoryBus
from tests.bus.contract import BusContract, FakeClock


class TestMemoryBus(BusContract):
    """Runs every contract test on a fresh `MemoryBus`."""

    @pytest.fixture
    def bus(self, clock: FakeClock) -> Bus:
        return MemoryBus(clock=clock)


def test_default_clock_is_monotonic_time() -> None:
    async def scenario() -> None:
        bus = MemoryBus()
        lease = await bus.acquire("L", "a", 60.0)
        assert lease is not None
        assert await bus.acquire("L", "b", 60.0) is None

    asyncio.run(scenario())

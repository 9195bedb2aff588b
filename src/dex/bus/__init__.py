"""The bus port (`Bus`) and its in-memory implementation; see `dex.bus.base` for the contract."""

from dex.bus.base import Bus, BusError, Clock, FencedError, Lease, TrimmedError
from dex.bus.memory import MemoryBus

__all__ = ["Bus", "BusError", "Clock", "FencedError", "Lease", "MemoryBus", "TrimmedError"]

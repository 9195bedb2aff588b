"""The matching core: a pure, deterministic, event-sourced order book engine."""

from dex.matching.engine import Engine

__all__ = ["Engine"]

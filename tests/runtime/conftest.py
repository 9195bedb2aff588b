"""Fixtures for the runtime tests: JSON logs captured in memory, undone after each test."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dex.runtime.logging import configure_logging, reset_logging

LogLines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Configure JSON logging (service "gateway", level debug) into a buffer; read it parsed."""
    stream = io.StringIO()
    configure_logging("gateway", "debug", stream)

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield read
    reset_logging()

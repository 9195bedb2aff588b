"""The polling helpers return the first truthy value and fail naming what was awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.support.polling import eventually, wait_until


def counter(truthy_from: int, value: object = "done") -> Callable[[], object]:
    """A condition false on its first `truthy_from - 1` calls, then `value`."""
    calls = iter(range(1, 10**6))
    return lambda: value if next(calls) >= truthy_from else 0


def test_wait_until_returns_the_first_truthy_value() -> None:
    assert wait_until("the third call", counter(3, "v"), timeout=5, interval=0.001) == "v"


def test_wait_until_fails_naming_what_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"after 0.05 s waiting for the moon; last: 0$"):
        wait_until("the moon", lambda: 0, timeout=0.05, interval=0.001)


def test_wait_until_retries_only_the_errors_it_is_told_to() -> None:
    calls = 0

    def up_on_the_third_call() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("refused")
        return "up"

    assert wait_until("a listener", up_on_the_third_call, timeout=5, retry_on=(OSError,)) == "up"

    def refused() -> int:
        raise ConnectionError("refused")

    with pytest.raises(AssertionError, match=r"last: ConnectionError\('refused'\)$"):
        wait_until("a listener", refused, timeout=0.05, interval=0.001, retry_on=(OSError,))
    with pytest.raises(ConnectionError):
        wait_until("a listener", refused, timeout=5, interval=0.001)


def test_eventually_awaits_an_async_condition_and_returns_its_value() -> None:
    calls = 0

    async def check() -> int:
        nonlocal calls
        calls += 1
        return calls if calls == 3 else 0

    got = asyncio.run(eventually("three calls", check, timeout=5, interval=0.001))
    assert got == 3


def test_eventually_fails_at_once_with_the_abort_reason() -> None:
    asked = 0

    def died() -> str | None:
        nonlocal asked
        asked += 1
        return "the server exited (1)" if asked == 2 else None

    with pytest.raises(AssertionError) as info:
        asyncio.run(eventually("a reply", lambda: 0, timeout=60, interval=0.001, abort=died))
    assert str(info.value) == "while waiting for a reply: the server exited (1)"


def test_eventually_times_out_with_the_detail() -> None:
    with pytest.raises(AssertionError) as info:
        asyncio.run(
            eventually(
                "a reply",
                counter(10**6),
                timeout=0.05,
                interval=0.001,
                retry_on=(OSError,),
                detail=lambda: "log tail",
            )
        )
    assert str(info.value) == "timed out after 0.05 s waiting for a reply; last: 0\nlog tail"

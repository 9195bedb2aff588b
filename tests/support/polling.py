"""Waiting in tests: poll a condition until a deadline, never sleep a fixed time to synchronise.

`wait_until(what, condition, timeout=...)` (plain code, e.g. a child process over HTTP) and
`await eventually(what, condition, timeout=...)` (in an event loop; `condition` may be a
coroutine function) call `condition()` until it returns a truthy value, and return that value.
Past `timeout` seconds they fail naming `what` and the last value seen. An exception of a type
in `retry_on` (a process not listening yet, a Redis restarting) counts as a falsy value and is
shown as the last value; any other exception propagates at once. `interval` is the pause
between two checks: the poll rate, not a synchronisation; the deadline bounds the wait.

`eventually` also takes `abort`, asked after every unsuccessful check: a reason it returns (a
watched process died) fails the wait at once; and `detail`, whose text (service log tails) is
added to the failure message.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

INTERVAL = 0.02  # seconds between two checks unless the caller says otherwise

Errors = tuple[type[BaseException], ...]


def _timed_out(what: str, timeout: float, last: Any, detail: str = "") -> AssertionError:
    message = f"timed out after {timeout} s waiting for {what}; last: {last!r}"
    return AssertionError(f"{message}\n{detail}" if detail else message)


def wait_until(
    what: str,
    condition: Callable[[], Any],
    *,
    timeout: float,
    interval: float = INTERVAL,
    retry_on: Errors = (),
) -> Any:
    """Call `condition()` until it returns a truthy value, which is returned; fail naming
    `what` once `timeout` seconds have passed (see the module docstring)."""
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except retry_on as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= end:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)  # the poll interval; the deadline bounds the wait


async def eventually(
    what: str,
    condition: Callable[[], Any | Awaitable[Any]],
    *,
    timeout: float,
    interval: float = INTERVAL,
    retry_on: Errors = (),
    abort: Callable[[], str | None] | None = None,
    detail: Callable[[], str] | None = None,
) -> Any:
    """Call (and await, if it returns an awaitable) `condition()` until it gives a truthy value,
    which is returned; fail naming `what` once `timeout` seconds have passed, or at once when
    `abort()` gives a reason (see the module docstring)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
            if inspect.isawaitable(last):
                last = await last
        except retry_on as e:
            last = e
        else:
            if last:
                return last
        if abort is not None and (reason := abort()):
            raise AssertionError(f"while waiting for {what}: {reason}")
        if loop.time() >= end:
            raise _timed_out(what, timeout, last, detail() if detail is not None else "")
        await asyncio.sleep(interval)  # the poll interval; the deadline bounds the wait

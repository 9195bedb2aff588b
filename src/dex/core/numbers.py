"""Exact conversion between decimal strings and integers.

Money never passes through a float: text is checked to be plain ASCII digits (which `Decimal`
alone does not check), parsed with `Decimal`, checked to be a whole number of the step (tick,
lot or asset unit) and scaled to an integer. Every integer is kept below 2**63 so that it
fits a signed 64-bit column anywhere downstream.
"""

from __future__ import annotations

import re
from decimal import Decimal, localcontext

from dex.core.errors import CommandError

MAX_INT = 2**63 - 1
DAY_NS = 24 * 3600 * 1_000_000_000  # time is integer nanoseconds (a command's `ts`)
# ASCII digits only, a fraction only with digits on both sides of the point. Not `\d` (any
# Unicode digit), not `$` (it matches before a final newline): `fullmatch` on `[0-9]`.
_DECIMAL_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_decimal(text: str, field: str) -> Decimal:
    """Parse a non-negative decimal string: ASCII `[0-9]+(\\.[0-9]+)?`, at most 64 characters
    (no sign, exponent, spaces, underscores, NaN/inf or non-ASCII digits, all of which
    `Decimal` itself would take)."""
    if isinstance(text, str) and len(text) <= 64 and _DECIMAL_RE.fullmatch(text):
        with localcontext() as ctx:
            ctx.prec = 80
            return Decimal(text)  # the pattern admits only text Decimal reads exactly
    negative = isinstance(text, str) and len(text) <= 65 and text[:1] == "-"
    if negative and _DECIMAL_RE.fullmatch(text[1:]):
        raise CommandError(field, f"must not be negative, got {text}")
    raise CommandError(field, f"must be a decimal string like '12.5', got {text!r}")


def decimals_of(step: Decimal) -> int:
    """Number of fractional digits a step needs (0.01 -> 2, 5 -> 0, 0.50 -> 1)."""
    exponent = step.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def to_steps(
    text: str, step: Decimal, field: str, *, allow_zero: bool = False, unit: str = "steps"
) -> int:
    """Convert text to a whole number of `step`s (called `unit` in errors: ticks, lots...);
    reject negatives, fractions and overflow."""
    value = parse_decimal(text, field)  # never negative
    if value == 0 and not allow_zero:
        raise CommandError(field, f"must be positive, got {text}")
    with localcontext() as ctx:
        ctx.prec = 80
        quotient = value / step
        if quotient != quotient.to_integral_value():
            raise CommandError(field, f"{text} is not a whole number of {unit} of {step}")
        steps = int(quotient)
    check_int(steps, field)
    return steps


def check_int(value: int, field: str) -> int:
    """Reject an integer at or above 2**63 (or below -(2**63))."""
    if value > MAX_INT or value < -MAX_INT - 1:
        raise CommandError(field, "must be below 2^63")
    return value


class Scale:
    """Renders integers counted in a fixed step (say 0.0001) as decimal strings.

    The output always has exactly the step's number of fractional digits, so the same
    integer always renders to the same text.
    """

    __slots__ = ("_digits", "_mantissa", "_pow")

    def __init__(self, step: Decimal) -> None:
        digits = decimals_of(step)
        self._digits = digits
        self._pow = 10**digits
        self._mantissa = int(step * self._pow)  # exact: the step has `digits` decimals

    def render(self, steps: int) -> str:
        value = steps * self._mantissa
        sign = "-" if value < 0 else ""
        value = abs(value)
        if not self._digits:
            return f"{sign}{value}"
        whole, frac = divmod(value, self._pow)
        return f"{sign}{whole}.{frac:0{self._digits}d}"

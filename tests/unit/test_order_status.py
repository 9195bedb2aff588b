"""The one set of order states and the one table of moves between them."""

from __future__ import annotations

from dex.core.enums import ORDER_TRANSITIONS, TERMINAL_STATUSES, OrderStatus

S = OrderStatus


def test_every_status_has_its_moves_and_the_ends_have_none() -> None:
    assert set(ORDER_TRANSITIONS) == set(OrderStatus)
    assert {S.FILLED, S.CANCELLED, S.EXPIRED, S.REJECTED} == TERMINAL_STATUSES
    for end in TERMINAL_STATUSES:
        assert ORDER_TRANSITIONS[end] == set()


def test_an_order_moves_forward_only() -> None:
    assert ORDER_TRANSITIONS[S.PENDING] == {S.UNTRIGGERED, S.OPEN} | TERMINAL_STATUSES
    assert ORDER_TRANSITIONS[S.UNTRIGGERED] == {S.OPEN} | TERMINAL_STATUSES
    assert ORDER_TRANSITIONS[S.OPEN] == TERMINAL_STATUSES
    for status, moves in ORDER_TRANSITIONS.items():
        assert status not in moves  # no move to itself
        assert S.PENDING not in moves  # nothing goes back to pending

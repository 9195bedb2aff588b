"""The Binance adapter's parameter parsing (`dex.gateway.binance.common`): `form_pairs` gives
exactly what `urllib.parse.parse_qsl(..., keep_blank_values=True)` gives, for any text."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dex.gateway.binance.common import BinanceError, form_pairs, parse_params

# the characters that matter to a form: separators, escapes, and what escapes decode to
_FORM_TEXT = st.text(alphabet=st.sampled_from("a=&%+;2Fé0 AzC3\u00ff"), max_size=40)


@given(_FORM_TEXT)
def test_form_pairs_are_parse_qsl_s(text: str) -> None:
    assert form_pairs(text) == parse_qsl(text, keep_blank_values=True)


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=6))
def test_encoded_parameters_come_back_as_they_were(params: dict[str, str]) -> None:
    text = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in params.items())
    assert parse_params(text.encode(), b"", "") == params


def test_query_and_body_together_each_name_once() -> None:
    got = parse_params(b"symbol=ETHUSDC&a=", b"side=BUY&price=1%2C0&x", "")
    assert got == {"symbol": "ETHUSDC", "a": "", "side": "BUY", "price": "1,0", "x": ""}
    with pytest.raises(BinanceError) as e:
        parse_params(b"side=BUY", b"side=SELL", "application/x-www-form-urlencoded")
    assert e.value.code == -1101 and "'side'" in e.value.msg
    with pytest.raises(BinanceError) as e:
        parse_params(b"", b"\xff", "")
    assert e.value.code == -1100
    with pytest.raises(BinanceError) as e:
        parse_params(b"", b"{}", "application/json")
    assert (e.value.code, e.value.status) == (-1100, 415)

"""What `Client` signs is what it sends: through an `httpx.MockTransport`, each signed call's
DEX-SIGNATURE verifies over timestamp + method + the path and query as they went on the wire
+ the body bytes as they went on the wire, for an hmac and an Ed25519 key."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from dex.client import Client, Credentials
from dex.client.wallet import ed25519_key_pair
from dex.wire import signing

ACCOUNT = "0x" + "ab" * 20
SECRET = "5e" * 32

ORDER = {"order_id": 7, "status": "open", "market": "ETH-USDC"}
PAGE: dict[str, Any] = {"items": [], "next_cursor": None}


def recording(sent: list[httpx.Request]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=PAGE if request.method == "GET" else ORDER)

    return httpx.MockTransport(answer)


def wire_payload(request: httpx.Request) -> bytes:
    """What the server would verify: the bytes of the request line's target and the body."""
    return signing.request_payload(
        request.headers["DEX-TIMESTAMP"],
        request.method,
        request.url.raw_path.decode("ascii"),
        request.content,
    )


CALLS: dict[str, tuple[Callable[[Client], Any], str, str]] = {
    # name: (the call, method, what the target must contain)
    "GET with a query": (
        lambda c: c.orders(status="open", market="ETH-USDC", cursor="a+b/c==", limit=2),
        "GET",
        "?",
    ),
    "POST with a body": (
        lambda c: c.place(
            "ETH-USDC", "sell", "limit", size="1.5", price="2000.10", client_order_id="é x"
        ),
        "POST",
        "/v1/orders",
    ),
    "DELETE by client id": (
        lambda c: c.cancel_by_client_id("a b/ç?&", market="ETH-USDC"),
        "DELETE",
        "/v1/orders/by-client-id/",
    ),
    "PATCH with a query and a body": (
        lambda c: c.amend(7, price="2001", market="ETH-USDC"),
        "PATCH",
        "?market=ETH-USDC",
    ),
}


def send(credentials: Credentials, name: str) -> httpx.Request:
    call, method, target = CALLS[name]
    sent: list[httpx.Request] = []
    with Client("http://dex.test", credentials, transport=recording(sent)) as c:
        call(c)
    (request,) = sent
    assert request.method == method
    assert target in request.url.raw_path.decode("ascii")
    assert request.headers["DEX-API-KEY"] == credentials.api_key
    if method in ("POST", "PATCH"):
        assert request.content and json.loads(request.content)  # a real body was signed
    return request


@pytest.mark.parametrize("name", list(CALLS))
def test_hmac_signature_covers_the_bytes_sent(name: str) -> None:
    request = send(Credentials("k-hmac", ACCOUNT, "hmac", secret=SECRET), name)
    expected = signing.hmac_signature(SECRET, wire_payload(request))
    assert request.headers["DEX-SIGNATURE"] == expected


@pytest.mark.parametrize("name", list(CALLS))
def test_ed25519_signature_covers_the_bytes_sent(name: str) -> None:
    private, public_hex = ed25519_key_pair()
    request = send(Credentials("k-ed", ACCOUNT, "ed25519", private_key=private), name)
    signature = request.headers["DEX-SIGNATURE"]
    assert len(base64.b64decode(signature, validate=True)) == 64
    assert signing.ed25519_ok(bytes.fromhex(public_hex), wire_payload(request), signature)
    # and over anything else it does not verify
    other = wire_payload(request) + b" "
    assert not signing.ed25519_ok(bytes.fromhex(public_hex), other, signature)


def test_a_public_call_sends_no_key_headers() -> None:
    sent: list[httpx.Request] = []
    with Client("http://dex.test", transport=recording(sent)) as c:
        c.book("ETH-USDC", depth=5)
    (request,) = sent
    assert request.url.raw_path == b"/v1/markets/ETH-USDC/book?depth=5"
    assert "dex-api-key" not in request.headers and "dex-signature" not in request.headers

"""The public API's request bodies, as typed models (the OpenAPI document is built from them).

Amounts are decimal strings, ASCII `[0-9]+(.[0-9]+)?`, turned into integer steps with the
market's or asset's precision by the routes (a bad one is a 400 naming the field). Integers
are below 2^63. Every body refuses unknown fields. The wallet-signed bodies keep the field
names of their EIP-712 types (`dex.wire.signing.TYPES`), so a client signs the body it sends.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from dex.core.enums import STP, OrderType, Side, TimeInForce

DECIMAL = r"^[0-9]{1,30}(\.[0-9]{1,30})?$"
ADDRESS = r"^0x[0-9a-fA-F]{40}$"
CLIENT_ORDER_ID = r"^[A-Za-z0-9._:-]{1,36}$"
SIGNATURE = r"^0x[0-9a-fA-F]{130}$"
API_KEY = r"^dk_[0-9a-f]{32}$"
MAX_INT = 2**63 - 1

Decimal_ = Annotated[str, msgspec.Meta(pattern=DECIMAL, description="a decimal string")]
Address = Annotated[str, msgspec.Meta(pattern=ADDRESS, description="a wallet address")]
ClientOrderId = Annotated[str, msgspec.Meta(pattern=CLIENT_ORDER_ID)]
Signature = Annotated[
    str, msgspec.Meta(pattern=SIGNATURE, description="65-byte secp256k1 signature, 0x-hex")
]
UInt = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1, le=MAX_INT)]


class _Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class OrderRequest(_Body, kw_only=True):
    """A new order. With API-key headers the account is the key's (no `account` here); an
    order with no key carries `account`, a fresh `nonce` and the wallet's EIP-712 `Order`
    `signature` instead."""

    market: str
    side: Side
    type: OrderType
    size: Decimal_ | None = None
    price: Decimal_ | None = None
    quote_size: Decimal_ | None = None
    tif: TimeInForce | None = None  # default GTC; IOC for market orders
    post_only: bool = False
    stp: STP = STP.EXPIRE_TAKER
    client_order_id: ClientOrderId | None = None
    expires_at: PositiveInt | None = None  # GTD: ms since the epoch
    trigger_price: Decimal_ | None = None
    display_size: Decimal_ | None = None
    account: Address | None = None
    nonce: PositiveInt | None = None
    signature: Signature | None = None


class AmendRequest(_Body, kw_only=True):
    """A new price and/or a new total size of an open order (at least one)."""

    price: Decimal_ | None = None
    size: Decimal_ | None = None


class FaucetRequest(_Body, kw_only=True):
    asset: str
    amount: Decimal_


class RegisterApiKeyRequest(_Body, kw_only=True):
    """The `RegisterApiKey` typed data and the wallet's signature of it."""

    account: Address
    keyType: str
    publicKey: str = ""
    permissions: str
    nonce: UInt
    expiresAt: UInt = 0
    signature: Signature


class RevokeApiKeyRequest(_Body, kw_only=True):
    """The `RevokeApiKey` typed data and the wallet's signature of it (for a lost key)."""

    account: Address
    apiKey: Annotated[str, msgspec.Meta(pattern=API_KEY)]
    nonce: UInt
    signature: Signature


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    field: str | None


class ErrorBody(msgspec.Struct):
    """Every refusal: `{"error": {"code", "message", "field"}}`."""

    error: ErrorDetail


def order_message(req: OrderRequest, account: str) -> dict[str, Any]:
    """The EIP-712 `Order` message of a request: its fields as sent, "" / 0 when absent."""
    return {
        "account": account,
        "market": req.market,
        "side": str(req.side),
        "type": str(req.type),
        "size": req.size or "",
        "price": req.price or "",
        "quoteSize": req.quote_size or "",
        "tif": "" if req.tif is None else str(req.tif),
        "postOnly": req.post_only,
        "stp": str(req.stp),
        "clientOrderId": req.client_order_id or "",
        "expiresAt": req.expires_at or 0,
        "triggerPrice": req.trigger_price or "",
        "displaySize": req.display_size or "",
        "nonce": req.nonce or 0,
    }

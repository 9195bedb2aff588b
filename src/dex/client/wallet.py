"""A wallet (a secp256k1 key) and the API credentials it registers.

Owns the wallet-signed bodies: `RegisterApiKey`, `RevokeApiKey` and `Order`, each the
EIP-712 message of `dex.wire.signing.TYPES` plus the signature, with the field names the
gateway's models keep so the body sent is the message signed. Secrets never appear in a
repr. The hashing and signing are `dex.wire.signing`'s.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dex.wire import signing

DEFAULT_STP = "expire_taker"  # the gateway's default (dex.core.enums.STP.EXPIRE_TAKER)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Wallet:
    """A wallet: its private key (32 bytes) and lowercase 0x address."""

    __slots__ = ("address", "private_key")

    def __init__(self, private_key: bytes) -> None:
        self.private_key = private_key
        self.address = signing.address_of(private_key)  # refuses a bad key

    @classmethod
    def generate(cls) -> Wallet:
        while True:
            try:
                return cls(secrets.token_bytes(32))
            except signing.SignatureError:  # above the curve order: about 2^-128
                continue

    @classmethod
    def from_key(cls, key: str | bytes) -> Wallet:
        """From 32 raw bytes or their hex (with or without 0x)."""
        if isinstance(key, str):
            key = bytes.fromhex(key.removeprefix("0x"))
        return cls(bytes(key))

    def __repr__(self) -> str:
        return f"Wallet(address={self.address!r})"

    def sign_typed(self, primary_type: str, message: dict[str, Any], chain_id: int) -> str:
        return signing.sign_typed(self.private_key, primary_type, message, chain_id)

    def register_key_body(
        self,
        chain_id: int,
        *,
        key_type: str = "hmac",
        permissions: str = "read,trade",
        expires_at: int = 0,
        nonce: int | None = None,
        public_key: str = "",
    ) -> dict[str, Any]:
        """The body of POST /v1/api-keys (nonce: now in ms unless given)."""
        message = {
            "account": self.address,
            "keyType": key_type,
            "publicKey": public_key,
            "permissions": permissions,
            "nonce": now_ms() if nonce is None else nonce,
            "expiresAt": expires_at,
        }
        return {**message, "signature": self.sign_typed("RegisterApiKey", message, chain_id)}

    def revoke_key_body(
        self, chain_id: int, api_key: str, nonce: int | None = None
    ) -> dict[str, Any]:
        """The body of POST /v1/api-keys/revoke (for a key whose secret is lost)."""
        message = {
            "account": self.address,
            "apiKey": api_key,
            "nonce": now_ms() if nonce is None else nonce,
        }
        return {**message, "signature": self.sign_typed("RevokeApiKey", message, chain_id)}

    def order_body(
        self, chain_id: int, order_fields: dict[str, Any], nonce: int | None = None
    ) -> dict[str, Any]:
        """A wallet-signed order: `order_fields` (the body's names, absent or None for
        unset) plus account, nonce (now in ms: the gateway wants it within its window) and
        the `Order` signature. Absent fields sign as "" / 0 / false, as the gateway maps them
        (`dex.gateway.models.order_message`); stp is always sent so both sides agree on it."""
        body = {k: v for k, v in order_fields.items() if v is not None}
        body.setdefault("stp", DEFAULT_STP)
        body["account"] = self.address
        body["nonce"] = now_ms() if nonce is None else nonce
        message = {
            "account": self.address,
            "market": body["market"],
            "side": body["side"],
            "type": body["type"],
            "size": body.get("size") or "",
            "price": body.get("price") or "",
            "quoteSize": body.get("quote_size") or "",
            "tif": body.get("tif") or "",
            "postOnly": bool(body.get("post_only", False)),
            "stp": body["stp"],
            "clientOrderId": body.get("client_order_id") or "",
            "expiresAt": body.get("expires_at") or 0,
            "triggerPrice": body.get("trigger_price") or "",
            "displaySize": body.get("display_size") or "",
            "nonce": body["nonce"],
        }
        body["signature"] = self.sign_typed("Order", message, chain_id)
        return body


@dataclass(frozen=True)
class Credentials:
    """An API key and what signs with it: the hmac `secret`, or the Ed25519 private key
    (32 raw bytes) whose public half was registered."""

    api_key: str
    account: str
    key_type: str = "hmac"
    secret: str | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)

    def sign(self, payload: bytes) -> str:
        """The DEX-SIGNATURE of `payload` (`dex.wire.signing.request_payload`)."""
        if self.key_type == "ed25519":
            if self.private_key is None:
                raise ValueError("ed25519 credentials need the private key")
            return signing.ed25519_signature(self.private_key, payload)
        if self.secret is None:
            raise ValueError("hmac credentials need the secret")
        return signing.hmac_signature(self.secret, payload)

    def headers(self, method: str, path_with_query: str, body: bytes) -> dict[str, str]:
        """The three signing headers of one request, timestamped now."""
        ts = str(now_ms())
        payload = signing.request_payload(ts, method, path_with_query, body)
        return {
            "DEX-API-KEY": self.api_key,
            "DEX-TIMESTAMP": ts,
            "DEX-SIGNATURE": self.sign(payload),
        }


def ed25519_key_pair() -> tuple[bytes, str]:
    """A new Ed25519 private key (32 raw bytes) and its public key in hex."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes_raw()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return private, public

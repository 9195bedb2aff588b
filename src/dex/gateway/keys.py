"""The gateway's API keys: sealed HMAC secrets and the in-memory key ring that authenticates.

Sealing. An HMAC secret is stored (in the risk log, in snapshots) only sealed: AES-256-GCM
under the key encryption key (kek), a fresh 12-byte nonce each time, and associated data
`api_key + ":" + account`, so a sealed secret copied onto another key or account does not
open. The sealed form is base64url without padding of nonce || ciphertext || tag: at most 123
characters for a secret of up to 64 characters.

The ring. `KeyRing` mirrors the risk log's ApiKeyRegistered / ApiKeyRevoked events and the
risk snapshots' keys; it takes any object with the events' attributes (duck-typed, so it does
not depend on the risk package's classes). It unseals each HMAC secret once, when the key is
added, and builds each Ed25519 public-key object once. Invariants:
- revocation is final: a key once revoked stays revoked, even if its registration is replayed;
- a key whose material does not open (a kek that is not the one it was sealed with, a public
  key that is not one) is kept but unusable: `authenticate` answers it as `unknown_key`, and
  nothing about its material is logged or raised;
- no secret and no signature ever appears in a repr, an error message or a listing.
`authenticate` is O(1) plus one HMAC-SHA256 (~2 us) or one Ed25519 verification (~60 us) over
the request; its refusals come in a fixed order (missing, unknown, revoked, expired,
timestamp, signature, permission), each an `AuthError` with a stable code.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import secrets
from collections.abc import Iterable
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dex.wire.signing import ed25519_ok, hmac_ok, request_payload

KEY_TYPES: Final = ("hmac", "ed25519")
PERMISSIONS: Final = ("read", "trade", "withdraw")  # the canonical order of a listing
MAX_SECRET_CHARS: Final = 64
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16
_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")
_TIMESTAMP: Final = re.compile(r"[0-9]{1,19}")


class SealError(ValueError):
    """A secret that cannot be sealed, or a sealed secret that does not open."""


class AuthError(Exception):
    """A refused request: the HTTP status, a stable code and a message safe to show."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


# ---- keys and secrets ----


def parse_kek(hex64: str) -> bytes:
    """The 32-byte AES-256 key from its 64 hex digits (ValueError naming the problem)."""
    if not isinstance(hex64, str) or not _HEX64.fullmatch(hex64):
        raise ValueError("key encryption key: must be exactly 64 hex digits")
    return bytes.fromhex(hex64)


def new_kek() -> str:
    return secrets.token_hex(32)


def new_api_key() -> str:
    return "dk_" + secrets.token_hex(16)


def new_secret() -> str:
    """32 random bytes as base64url without padding (43 characters)."""
    return _b64url(secrets.token_bytes(32))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _aead(kek: bytes) -> AESGCM:
    if not isinstance(kek, bytes) or len(kek) != 32:
        raise SealError("key encryption key: must be 32 bytes")
    return AESGCM(kek)


def seal(kek: bytes, secret: str, aad: str) -> str:
    """Encrypt `secret` (1-64 ASCII characters) bound to `aad` (api_key + ":" + account)."""
    if not isinstance(secret, str) or not 0 < len(secret) <= MAX_SECRET_CHARS:
        raise SealError(f"secret: must be 1 to {MAX_SECRET_CHARS} characters")
    if not secret.isascii():
        raise SealError("secret: must be ASCII")
    if not isinstance(aad, str):
        raise SealError("aad: must be a string")
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return _b64url(nonce + _aead(kek).encrypt(nonce, secret.encode("ascii"), aad.encode()))


def unseal(kek: bytes, sealed: str, aad: str) -> str:
    """The secret sealed by `seal` with the same kek and aad; SealError otherwise."""
    aead = _aead(kek)
    if not isinstance(sealed, str) or not _B64URL.fullmatch(sealed) or not isinstance(aad, str):
        raise SealError("sealed secret: not base64url")
    try:
        raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    except (binascii.Error, ValueError):
        raise SealError("sealed secret: not base64url") from None
    if len(raw) <= _NONCE_BYTES + _TAG_BYTES:
        raise SealError("sealed secret: too short")
    try:
        plain = aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad.encode())
        return plain.decode("ascii")
    except (InvalidTag, UnicodeDecodeError):
        raise SealError("sealed secret: does not open (tampered, other key or other aad)") from None


def _parse_permissions(text: Any) -> frozenset[str]:
    parts = text.split(",") if isinstance(text, str) else []
    if not parts or any(p not in PERMISSIONS for p in parts):
        raise ValueError(f"permissions: must be a non-empty comma list of {','.join(PERMISSIONS)}")
    return frozenset(parts)


class KeyEntry:
    """One API key as the ring holds it; the secret and the public key are private."""

    __slots__ = (
        "_public_key",
        "_secret",
        "account",
        "api_key",
        "expires_at",
        "key_type",
        "permissions",
        "revoked",
    )

    def __init__(
        self,
        account: str,
        api_key: str,
        key_type: str,
        permissions: frozenset[str],
        expires_at: int,
        revoked: bool,
    ) -> None:
        self.account = account
        self.api_key = api_key
        self.key_type = key_type
        self.permissions = permissions
        self.expires_at = expires_at
        self.revoked = revoked
        self._secret: str | None = None  # hmac: the unsealed secret
        self._public_key: Ed25519PublicKey | None = None  # ed25519: ready to verify

    @property
    def usable(self) -> bool:
        """Whether its material opened: a secret or a public key to check signatures with."""
        return self._secret is not None or self._public_key is not None

    def public(self) -> dict[str, Any]:
        """The listing form: no material."""
        return {
            "api_key": self.api_key,
            "key_type": self.key_type,
            "permissions": ",".join(p for p in PERMISSIONS if p in self.permissions),
            "expires_at": self.expires_at,
            "account": self.account,
        }

    def verify(self, payload: bytes, signature: str) -> bool:
        """Whether `signature` signs `payload` with this key (lowercase-hex HMAC-SHA256 or
        standard base64 Ed25519), in constant time; False for a revoked or unusable key.
        For other signing schemes over the same keys (the Binance-compatible API), which
        check the key's state, timestamp and permission themselves."""
        return self._signature_ok(payload, signature)

    def _signature_ok(self, payload: bytes, signature: str) -> bool:
        if self._secret is not None:
            return hmac_ok(self._secret, payload, signature)
        if self._public_key is not None:
            return ed25519_ok(self._public_key, payload, signature)
        return False

    def __repr__(self) -> str:
        return (
            f"KeyEntry(api_key={self.api_key!r}, account={self.account!r}, "
            f"key_type={self.key_type!r}, permissions={self.public()['permissions']!r}, "
            f"expires_at={self.expires_at}, revoked={self.revoked}, usable={self.usable})"
        )


class KeyRing:
    """Every API key in memory, by key id and by account; authenticates signed requests."""

    def __init__(self, kek: bytes, records: Iterable[Any] = ()) -> None:
        _aead(kek)  # refuse a bad kek now, not at the first HMAC key
        self._kek = kek
        self._by_key: dict[str, KeyEntry] = {}
        self._by_account: dict[str, dict[str, KeyEntry]] = {}
        for record in records:
            self.add(record)

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, record: Any) -> KeyEntry:
        """Add (or replace) a key from an ApiKeyRegistered event or a snapshot's key record
        (`revoked` optional, False if absent). A structurally broken record raises ValueError
        naming the field and changes nothing; material that does not open makes the key
        unusable, not an error."""
        account, api_key = getattr(record, "account", None), getattr(record, "api_key", None)
        if not isinstance(account, str) or not account:
            raise ValueError("account: must be a non-empty string")
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("api_key: must be a non-empty string")
        key_type = getattr(record, "key_type", None)
        if key_type not in KEY_TYPES:
            raise ValueError(f"key_type: must be one of {', '.join(KEY_TYPES)}")
        permissions = _parse_permissions(getattr(record, "permissions", None))
        expires_at = getattr(record, "expires_at", None)
        if type(expires_at) is not int or expires_at < 0:
            raise ValueError("expires_at: must be an integer >= 0 (ms, 0 never)")
        material = getattr(record, "material", None)
        if not isinstance(material, str):
            raise ValueError("material: must be a string")
        revoked = getattr(record, "revoked", False)
        if type(revoked) is not bool:
            raise ValueError("revoked: must be a boolean")

        old = self._by_key.get(api_key)
        entry = KeyEntry(
            account,
            api_key,
            key_type,
            permissions,
            expires_at,
            revoked or bool(old and old.revoked),
        )
        if not entry.revoked:
            self._open(entry, material)
        if old is not None:
            self._by_account[old.account.lower()].pop(api_key, None)
        self._by_key[api_key] = entry
        self._by_account.setdefault(account.lower(), {})[api_key] = entry
        return entry

    def _open(self, entry: KeyEntry, material: str) -> None:
        if entry.key_type == "hmac":
            # does not open: the key stays unusable (authenticate answers unknown_key)
            with contextlib.suppress(SealError):
                entry._secret = unseal(self._kek, material, f"{entry.api_key}:{entry.account}")
        elif _HEX64.fullmatch(material):
            with contextlib.suppress(ValueError):
                entry._public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(material))

    def revoke(self, api_key: str) -> bool:
        """Revoke for good (the material is dropped); False if the key is not in the ring."""
        entry = self._by_key.get(api_key)
        if entry is None:
            return False
        entry.revoked = True
        entry._secret = None
        entry._public_key = None
        return True

    def get(self, api_key: str) -> KeyEntry | None:
        return self._by_key.get(api_key)

    def keys_of(self, account: str) -> list[KeyEntry]:
        """The account's keys that are not revoked (expired ones included), oldest first;
        the account in any case."""
        keys = self._by_account.get(account.lower(), {})
        return [k for k in keys.values() if not k.revoked]

    def authenticate(
        self,
        api_key: str | None,
        timestamp: str | None,
        signature: str | None,
        method: str,
        path_with_query: str,
        body: bytes,
        now_ms: int,
        recv_window_ms: int,
        permission: str,
    ) -> KeyEntry:
        """The key that signed this request, if it may do `permission`; AuthError otherwise."""
        if not api_key or not timestamp or not signature:
            raise AuthError(
                401, "missing_credentials", "the API key, timestamp and signature are required"
            )
        entry = self._by_key.get(api_key)
        if entry is None or (not entry.revoked and not entry.usable):
            raise AuthError(401, "unknown_key", "no such API key")
        if entry.revoked:
            raise AuthError(401, "key_revoked", "the API key was revoked")
        if entry.expires_at and now_ms >= entry.expires_at:
            raise AuthError(401, "key_expired", "the API key has expired")
        if not _TIMESTAMP.fullmatch(timestamp) or abs(now_ms - int(timestamp)) > recv_window_ms:
            raise AuthError(
                401,
                "timestamp_out_of_window",
                f"the timestamp must be ms since the epoch within {recv_window_ms} ms of ours",
            )
        payload = request_payload(timestamp, method, path_with_query, body)
        if not entry._signature_ok(payload, signature):
            raise AuthError(401, "bad_signature", "the signature does not match the request")
        if permission not in entry.permissions:
            raise AuthError(
                403, "permission_denied", f"the API key lacks the {permission!r} permission"
            )
        return entry

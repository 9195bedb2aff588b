"""Signatures on the wire: wallet (EIP-712) typed data and API-key request signatures.

Shared by the gateway (which verifies) and the client library (which signs), so both hash
exactly the same bytes. Pure: no I/O, no clock, no randomness (signing is deterministic,
RFC 6979 for secp256k1, RFC 8032 for Ed25519).

Wallet signatures (EIP-712). `TYPES` is the whole schema: three flat message types (no
nested structs, no arrays) and a domain of (name, version, chainId) without a verifying
contract. Field order is part of each type hash, so it is never reordered. `TypedHasher`
precomputes the type hashes and the domain separator of one chain id; `digest` checks a
message strictly (exactly the declared fields; bool only for bool, a non-bool int in
[0, 2**64) for uint64, a str for string and address, an address as 0x + 40 hex digits in any
case) and raises `SignatureError` naming the first bad field, so a malformed message never
reaches recovery. Cost: one Keccak-256 per string field not already cached, one for the
struct, one for the digest; recovery (~55 us, libsecp256k1 via coincurve) dominates.

Signatures are 65 bytes r || s || v as 0x-hex, v in {27, 28} or {0, 1}. A high-s signature
(s > n/2) is refused, as OpenZeppelin's ECDSA.recover does: every standard wallet emits low s,
and refusing the other half makes each (message, signer) pair have one signature only.

Request signatures. The signed payload is `timestamp + METHOD + path_with_query` (UTF-8)
followed by the raw body bytes. HMAC-SHA256 signatures are lowercase hex; Ed25519 signatures
are standard base64 with padding. The checks (`hmac_ok`, `ed25519_ok`) return False on any
garbage and never raise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import threading
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Final

import coincurve
from Crypto.Hash import keccak as _keccak
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dex.core.enums import STP, OrderType, Side, TimeInForce

DOMAIN_NAME: Final = "dex"
DOMAIN_VERSION: Final = "1"


def _fields(spec: str) -> list[dict[str, str]]:
    out = []
    for part in spec.split(","):
        type_, name = part.split()
        out.append({"name": name, "type": type_})
    return out


TYPES: Final[dict[str, list[dict[str, str]]]] = {
    "EIP712Domain": _fields("string name, string version, uint256 chainId"),
    "RegisterApiKey": _fields(
        "address account, string keyType, string publicKey, string permissions, "
        "uint64 nonce, uint64 expiresAt"
    ),
    "RevokeApiKey": _fields("address account, string apiKey, uint64 nonce"),
    "Order": _fields(
        "address account, string market, string side, string type, string size, "
        "string price, string quoteSize, string tif, bool postOnly, string stp, "
        "string clientOrderId, uint64 expiresAt, string triggerPrice, string displaySize, "
        "uint64 nonce"
    ),
}
MESSAGE_TYPES: Final = frozenset(TYPES) - {"EIP712Domain"}

_SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N: Final = _SECP256K1_N // 2
_ADDRESS_RE: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_UINT64_END: Final = 1 << 64
_ZERO12: Final = bytes(12)
_FALSE: Final = bytes(32)
_TRUE: Final = bytes(31) + b"\x01"


class SignatureError(Exception):
    """A typed message or a signature that cannot be hashed or recovered; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _keccak_public(data: bytes) -> bytes:
    return _keccak.new(digest_bits=256, data=data).digest()


def _keccak_direct() -> Callable[[bytes], bytes] | None:
    """Keccak-256 calling pycryptodome's C functions directly, or None if they moved.

    pycryptodome's public `keccak.new(...).digest()` costs ~8.7 us a call, nearly all of it
    Python-side wrapping (a fresh state, smart pointers, a fresh buffer); the permutation
    itself is well under 1 us. An order's digest takes six to fourteen calls, so the wrapping
    alone would cap verification below 8,000/s. This reuses one state and one output buffer
    per thread (the C calls release the GIL, so a shared state would race) and is ~3x faster.
    It leans on pycryptodome internals: any surprise (a renamed symbol, a wrong answer on a
    known vector) falls back to the public call."""
    try:
        from Crypto.Hash.keccak import _raw_keccak_lib as lib  # type: ignore[attr-defined]
        from Crypto.Util._raw_api import VoidPointer, ffi

        local = threading.local()

        def state() -> tuple[Any, Any]:
            pointer = VoidPointer()
            if lib.keccak_init(pointer.address_of(), 64, 24):  # capacity 64 bytes, 24 rounds
                raise RuntimeError("keccak_init failed")
            # never destroyed: one state (a few hundred bytes) per thread, for its lifetime
            local.pair = (pointer.get(), ffi.new("uint8_t[32]"))
            return local.pair  # type: ignore[no-any-return]

        reset, absorb, squeeze, buffer = (
            lib.keccak_reset,
            lib.keccak_absorb,
            lib.keccak_digest,
            ffi.buffer,
        )

        def keccak256(data: bytes) -> bytes:
            try:
                st, out = local.pair
            except AttributeError:
                st, out = state()
            reset(st)
            absorb(st, data, len(data))
            squeeze(st, out, 32, 1)  # padding 0x01: Keccak, not SHA-3
            return bytes(buffer(out))

        for probe in (b"", b"abc", bytes(range(256)) * 3):
            if keccak256(probe) != _keccak_public(probe):
                return None
        return keccak256
    except Exception:  # feature detection, not an error: any surprise in pycryptodome's
        return None  # internals means the public call is used (same bytes, slower)


keccak256: Callable[[bytes], bytes] = _keccak_direct() or _keccak_public


# Strings from small sets (the enums, "", market symbols, common sizes and prices) recur in
# almost every order; a bounded cache saves their ~7 us Keccak call (pycryptodome's per-call
# overhead, not the hashing itself). Keyed by the exact str, so no collision is possible.
@lru_cache(maxsize=4096)
def _string_hash(value: str) -> bytes:
    return keccak256(value.encode("utf-8"))


for _enum in (Side, OrderType, TimeInForce, STP):
    for _member in _enum:
        _string_hash(_member.value)
_string_hash("")


def _enc_string(field: str, value: Any) -> bytes:
    if type(value) is not str:
        raise SignatureError(field, "must be a string")
    try:
        return _string_hash(value)
    except UnicodeEncodeError:
        raise SignatureError(field, "is not encodable as UTF-8") from None


def _enc_address(field: str, value: Any) -> bytes:
    if type(value) is not str or not _ADDRESS_RE.fullmatch(value):
        raise SignatureError(field, "must be an address: 0x followed by 40 hex digits")
    return _ZERO12 + bytes.fromhex(value[2:])


def _enc_bool(field: str, value: Any) -> bytes:
    if type(value) is not bool:
        raise SignatureError(field, "must be a boolean")
    return _TRUE if value else _FALSE


def _uint_encoder(bits: int) -> Callable[[str, Any], bytes]:
    end = 1 << bits

    def enc(field: str, value: Any) -> bytes:
        if type(value) is not int:  # bool is a subclass of int: refused here by design
            raise SignatureError(field, f"must be an integer (uint{bits})")
        if not 0 <= value < end:
            raise SignatureError(field, f"must be in [0, 2**{bits})")
        return value.to_bytes(32, "big")

    return enc


_ENCODERS: Final[dict[str, Callable[[str, Any], bytes]]] = {
    "string": _enc_string,
    "address": _enc_address,
    "bool": _enc_bool,
    "uint64": _uint_encoder(64),
    "uint256": _uint_encoder(256),
}


def _type_string(name: str) -> str:
    return f"{name}({','.join(f['type'] + ' ' + f['name'] for f in TYPES[name])})"


_TYPE_HASHES: Final = {name: keccak256(_type_string(name).encode()) for name in TYPES}
_PLANS: Final = {
    name: tuple((f["name"], _ENCODERS[f["type"]]) for f in fields) for name, fields in TYPES.items()
}
_FIELD_SETS: Final = {name: frozenset(f["name"] for f in fields) for name, fields in TYPES.items()}


def _hash_struct(primary_type: str, message: Any) -> bytes:
    if not isinstance(message, Mapping):
        raise SignatureError("message", "must be an object")
    plan = _PLANS[primary_type]
    parts = [_TYPE_HASHES[primary_type]]
    try:
        for name, enc in plan:
            parts.append(enc(name, message[name]))
    except KeyError as e:
        raise SignatureError(str(e.args[0]), "is missing") from None
    if len(message) != len(plan):
        extra = sorted(str(k) for k in message if k not in _FIELD_SETS[primary_type])
        raise SignatureError(extra[0], f"is not a field of {primary_type}")
    return keccak256(b"".join(parts))


def eip712_document(chain_id: int) -> dict[str, Any]:
    """The domain and every type, as served on GET /v1/eip712 (a fresh copy each call)."""
    _check_chain_id(chain_id)
    return {
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id},
        "types": {name: [dict(f) for f in fields] for name, fields in TYPES.items()},
    }


def _check_chain_id(chain_id: Any) -> None:
    if type(chain_id) is not int or not 0 < chain_id < (1 << 256):
        raise SignatureError("chainId", "must be a positive integer below 2**256")


class TypedHasher:
    """EIP-712 signing hashes for one chain id (the domain separator computed once)."""

    __slots__ = ("chain_id", "domain_separator")

    def __init__(self, chain_id: int) -> None:
        _check_chain_id(chain_id)
        self.chain_id = chain_id
        self.domain_separator = _hash_struct(
            "EIP712Domain",
            {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id},
        )

    def digest(self, primary_type: str, message: Mapping[str, Any]) -> bytes:
        """keccak(0x1901 || domainSeparator || hashStruct(message)): the 32 bytes signed."""
        if primary_type not in MESSAGE_TYPES:
            raise SignatureError("primaryType", f"must be one of {sorted(MESSAGE_TYPES)}")
        return keccak256(b"\x19\x01" + self.domain_separator + _hash_struct(primary_type, message))


@lru_cache(maxsize=16)
def typed_hasher(chain_id: int) -> TypedHasher:
    """The shared `TypedHasher` of a chain id."""
    return TypedHasher(chain_id)


def _address_of_public(public_key: coincurve.PublicKey) -> str:
    return "0x" + keccak256(public_key.format(compressed=False)[1:])[12:].hex()


def recover_address(digest: bytes, signature: str) -> str:
    """The lowercase 0x address that signed `digest` (32 bytes) with `signature` (0x-hex)."""
    if type(digest) is not bytes or len(digest) != 32:
        raise SignatureError("digest", "must be 32 bytes")
    if type(signature) is not str or len(signature) != 132 or signature[:2] not in ("0x", "0X"):
        raise SignatureError("signature", "must be 0x followed by 130 hex digits (65 bytes)")
    try:
        raw = bytes.fromhex(signature[2:])
    except ValueError:
        raw = b""
    if len(raw) != 65:  # fromhex skips spaces: a spaced string decodes short
        raise SignatureError("signature", "must be 0x followed by 130 hex digits (65 bytes)")
    v = raw[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1):
        raise SignatureError("signature", "v must be 27, 28, 0 or 1")
    s = int.from_bytes(raw[32:64], "big")
    if s > _HALF_N:
        raise SignatureError("signature", "s is in the upper half of the curve order (high s)")
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            raw[:64] + bytes((v,)), digest, hasher=None
        )
    except Exception:  # coincurve raises ValueError or its own errors on r/s outside the curve
        raise SignatureError("signature", "does not recover to a public key") from None
    return _address_of_public(public_key)


def same_address(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def _private_key(private_key: bytes) -> coincurve.PrivateKey:
    if type(private_key) is not bytes or len(private_key) != 32:
        raise SignatureError("private_key", "must be 32 bytes")
    try:
        return coincurve.PrivateKey(private_key)
    except Exception:
        raise SignatureError("private_key", "is not a valid secp256k1 secret") from None


def address_of(private_key: bytes) -> str:
    """The lowercase 0x address of a 32-byte secp256k1 private key."""
    return _address_of_public(_private_key(private_key).public_key)


def sign_typed(
    private_key: bytes, primary_type: str, message: Mapping[str, Any], chain_id: int
) -> str:
    """The wallet signature (0x-hex r || s || v, v 27/28, low s) of a typed message."""
    key = _private_key(private_key)
    digest = typed_hasher(chain_id).digest(primary_type, message)
    sig = key.sign_recoverable(digest, hasher=None)  # libsecp256k1 always emits low s
    return "0x" + sig[:64].hex() + format(sig[64] + 27, "02x")


# ---- request signatures (API keys) ----


def request_payload(timestamp: str, method: str, path_with_query: str, body: bytes) -> bytes:
    """The bytes an API key signs: timestamp + METHOD + path?query, then the raw body."""
    return (timestamp + method.upper() + path_with_query).encode("utf-8") + body


def hmac_signature(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()


def hmac_ok(secret: str, payload: bytes, signature: str) -> bool:
    """Constant-time check of a lowercase-hex HMAC-SHA256 signature; False on garbage."""
    if type(signature) is not str:
        return False
    expected = hmac_signature(secret, payload).encode("ascii")
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def ed25519_signature(private_key: bytes, payload: bytes) -> str:
    """Standard base64 (with padding) of the Ed25519 signature by a 32-byte raw private key."""
    if type(private_key) is not bytes or len(private_key) != 32:
        raise SignatureError("private_key", "must be 32 raw bytes")
    sig = Ed25519PrivateKey.from_private_bytes(private_key).sign(payload)
    return base64.b64encode(sig).decode("ascii")


def ed25519_public_key(public_key: bytes) -> Ed25519PublicKey:
    """A ready key object from 32 raw bytes (ValueError if they are not a public key)."""
    return Ed25519PublicKey.from_public_bytes(public_key)


def ed25519_ok(public_key: bytes | Ed25519PublicKey, payload: bytes, signature: str) -> bool:
    """Check an Ed25519 signature (standard base64 with padding only); False on any garbage."""
    if type(signature) is not str or len(signature) != 88 or not signature.isascii():
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        key = (
            public_key
            if isinstance(public_key, Ed25519PublicKey)
            else Ed25519PublicKey.from_public_bytes(public_key)
        )
        key.verify(raw, payload)
    except (ValueError, binascii.Error, TypeError, InvalidSignature):
        return False
    return True

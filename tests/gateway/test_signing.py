"""dex.wire.signing: EIP-712 interop with eth-account both ways, strictness, request signatures."""

from __future__ import annotations

import base64
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from Crypto.Hash import keccak
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from dex.wire import signing as s

CHAIN = 31337
UINT64_MAX = 2**64 - 1
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def order(account: str, **over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "account": account,
        "market": "BTC-USDC",
        "side": "buy",
        "type": "limit",
        "size": "1.5",
        "price": "100.25",
        "quoteSize": "",
        "tif": "GTC",
        "postOnly": False,
        "stp": "none",
        "clientOrderId": "c-1",
        "expiresAt": 0,
        "triggerPrice": "",
        "displaySize": "",
        "nonce": 7,
    }
    msg.update(over)
    return msg


def register(account: str, **over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "account": account,
        "keyType": "ed25519",
        "publicKey": "ab" * 32,
        "permissions": "read,trade",
        "nonce": 1,
        "expiresAt": 0,
    }
    msg.update(over)
    return msg


def revoke(account: str, **over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"account": account, "apiKey": "dk_" + "0" * 32, "nonce": 2}
    msg.update(over)
    return msg


MESSAGES = {"Order": order, "RegisterApiKey": register, "RevokeApiKey": revoke}


def full_message(primary: str, msg: dict[str, Any], chain_id: int = CHAIN) -> dict[str, Any]:
    doc = s.eip712_document(chain_id)
    # eth-account derives the primary type from the types given: only the one in use
    types = {k: doc["types"][k] for k in ("EIP712Domain", primary)}
    return {"domain": doc["domain"], "types": types, "primaryType": primary, "message": msg}


def eth_sign(key: bytes, primary: str, msg: dict[str, Any], chain_id: int = CHAIN) -> str:
    signed = Account.sign_typed_data(key, full_message=full_message(primary, msg, chain_id))
    return "0x" + bytes(signed.signature).hex()


@pytest.fixture
def acct() -> Any:
    return Account.create()


# ---- the schema ----


def test_document_has_the_domain_and_every_type_in_field_order() -> None:
    doc = s.eip712_document(5)
    assert doc["domain"] == {"name": "dex", "version": "1", "chainId": 5}
    assert set(doc["types"]) == {"EIP712Domain", "RegisterApiKey", "RevokeApiKey", "Order"}
    assert [f["name"] for f in doc["types"]["RevokeApiKey"]] == ["account", "apiKey", "nonce"]
    order_fields = [(f["type"], f["name"]) for f in doc["types"]["Order"]]
    assert order_fields[8] == ("bool", "postOnly") and order_fields[-1] == ("uint64", "nonce")
    doc["types"]["Order"].clear()  # a copy: the schema itself is untouched
    assert len(s.TYPES["Order"]) == 15


def test_keccak_matches_the_public_pycryptodome_call() -> None:
    for data in (b"", b"a", os.urandom(135), os.urandom(136), os.urandom(1000)):
        assert s.keccak256(data) == keccak.new(digest_bits=256, data=data).digest()


# ---- interop with eth-account ----


@pytest.mark.parametrize("primary", sorted(MESSAGES))
def test_eth_account_signature_recovers_to_its_address(acct: Any, primary: str) -> None:
    msg = MESSAGES[primary](acct.address)
    sig = eth_sign(acct.key, primary, msg)

    digest = s.TypedHasher(CHAIN).digest(primary, msg)

    assert s.recover_address(digest, sig) == acct.address.lower()
    assert s.same_address(s.recover_address(digest, sig), acct.address)


@pytest.mark.parametrize("primary", sorted(MESSAGES))
def test_our_signature_is_recovered_by_eth_account(acct: Any, primary: str) -> None:
    msg = MESSAGES[primary](acct.address.lower())

    sig = s.sign_typed(bytes(acct.key), primary, msg, CHAIN)

    signable = encode_typed_data(full_message=full_message(primary, msg))
    assert Account.recover_message(signable, signature=sig) == acct.address
    assert s.address_of(bytes(acct.key)) == acct.address.lower()
    assert int(sig[-2:], 16) in (27, 28)


def test_another_chain_id_recovers_another_address(acct: Any) -> None:
    msg = order(acct.address)
    sig = eth_sign(acct.key, "Order", msg, chain_id=1)

    assert s.recover_address(s.TypedHasher(1).digest("Order", msg), sig) == acct.address.lower()
    assert s.recover_address(s.TypedHasher(CHAIN).digest("Order", msg), sig) != (
        acct.address.lower()
    )


_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
_u64 = st.one_of(st.sampled_from([0, 1, UINT64_MAX - 1, UINT64_MAX]), st.integers(0, UINT64_MAX))


@settings(max_examples=40, deadline=None)
@given(
    strings=st.lists(_text, min_size=11, max_size=11),
    post_only=st.booleans(),
    expires_at=_u64,
    nonce=_u64,
)
def test_random_orders_agree_with_eth_account(
    strings: list[str], post_only: bool, expires_at: int, nonce: int
) -> None:
    acct = Account.from_key(b"\x01" * 32)
    names = [f["name"] for f in s.TYPES["Order"] if f["type"] == "string"]
    msg = order(acct.address, postOnly=post_only, expiresAt=expires_at, nonce=nonce)
    msg.update(zip(names, strings, strict=True))

    signable = encode_typed_data(full_message=full_message("Order", msg))
    digest = s.TypedHasher(CHAIN).digest("Order", msg)

    theirs = Account.sign_message(signable, acct.key)
    assert digest == theirs.message_hash
    assert s.recover_address(digest, "0x" + bytes(theirs.signature).hex()) == acct.address.lower()
    sig = s.sign_typed(bytes(acct.key), "Order", msg, CHAIN)
    assert Account.recover_message(signable, signature=sig) == acct.address


@settings(max_examples=25, deadline=None)
@given(key_type=_text, public_key=_text, permissions=_text, nonce=_u64, expires_at=_u64)
def test_random_registrations_agree_with_eth_account(
    key_type: str, public_key: str, permissions: str, nonce: int, expires_at: int
) -> None:
    acct = Account.from_key(b"\x02" * 32)
    msg = register(
        acct.address,
        keyType=key_type,
        publicKey=public_key,
        permissions=permissions,
        nonce=nonce,
        expiresAt=expires_at,
    )
    digest = s.TypedHasher(CHAIN).digest("RegisterApiKey", msg)
    assert s.recover_address(digest, eth_sign(acct.key, "RegisterApiKey", msg)) == (
        acct.address.lower()
    )


# ---- strictness ----


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"nonce": True}, "nonce"),
        ({"nonce": -1}, "nonce"),
        ({"nonce": 2**64}, "nonce"),
        ({"expiresAt": "0"}, "expiresAt"),
        ({"postOnly": 1}, "postOnly"),
        ({"postOnly": "false"}, "postOnly"),
        ({"size": 1}, "size"),
        ({"market": None}, "market"),
        ({"clientOrderId": "\ud800"}, "clientOrderId"),
        ({"account": "0x" + "g" * 40}, "account"),
        ({"account": "0x" + "a" * 39}, "account"),
        ({"account": "a" * 42}, "account"),
        ({"account": 0}, "account"),
        ({"extra": "x"}, "extra"),
    ],
)
def test_a_bad_field_is_named(change: dict[str, Any], field: str) -> None:
    msg = {**order("0x" + "ab" * 20), **change}
    with pytest.raises(s.SignatureError) as err:
        s.TypedHasher(CHAIN).digest("Order", msg)
    assert err.value.field == field


def test_a_missing_field_is_named() -> None:
    msg = order("0x" + "ab" * 20)
    del msg["stp"]
    with pytest.raises(s.SignatureError) as err:
        s.TypedHasher(CHAIN).digest("Order", msg)
    assert err.value.field == "stp" and "missing" in err.value.message


@pytest.mark.parametrize("primary", ["EIP712Domain", "Nope", ""])
def test_an_unknown_primary_type_is_refused(primary: str) -> None:
    with pytest.raises(s.SignatureError) as err:
        s.TypedHasher(CHAIN).digest(primary, {})
    assert err.value.field == "primaryType"


@pytest.mark.parametrize("chain_id", [0, -1, True, "1", 2**256])
def test_a_bad_chain_id_is_refused(chain_id: Any) -> None:
    with pytest.raises(s.SignatureError):
        s.TypedHasher(chain_id)


def _sig(acct: Any) -> tuple[bytes, str]:
    digest = s.TypedHasher(CHAIN).digest("RevokeApiKey", revoke(acct.address))
    return digest, s.sign_typed(bytes(acct.key), "RevokeApiKey", revoke(acct.address), CHAIN)


def test_v_zero_or_one_is_accepted(acct: Any) -> None:
    digest, sig = _sig(acct)
    v01 = sig[:-2] + format(int(sig[-2:], 16) - 27, "02x")
    assert (
        s.recover_address(digest, v01) == s.recover_address(digest, sig) == (acct.address.lower())
    )


def test_high_s_is_refused(acct: Any) -> None:
    digest, sig = _sig(acct)
    raw = bytes.fromhex(sig[2:])
    high_s = N - int.from_bytes(raw[32:64], "big")
    flipped = raw[:32] + high_s.to_bytes(32, "big") + bytes((55 - raw[64],))  # 27 <-> 28
    with pytest.raises(s.SignatureError) as err:
        s.recover_address(digest, "0x" + flipped.hex())
    assert err.value.field == "signature" and "high s" in err.value.message


@pytest.mark.parametrize(
    "mangle",
    [
        lambda sig: sig[:-2] + "1d",  # v 29
        lambda sig: sig[:-2] + "02",
        lambda sig: sig[:-2],  # 64 bytes
        lambda sig: sig + "00",
        lambda sig: sig[2:],  # no 0x
        lambda sig: sig[:10] + "zz" + sig[12:],
        lambda sig: sig[:10] + " " + sig[11:],
        lambda sig: "0x" + "00" * 64 + "1b",  # r = s = 0
        lambda sig: "0x" + "ff" * 32 + "00" * 31 + "01" + "1b",  # r >= n
        lambda sig: None,
    ],
)
def test_a_bad_signature_is_refused(acct: Any, mangle: Any) -> None:
    digest, sig = _sig(acct)
    with pytest.raises(s.SignatureError) as err:
        s.recover_address(digest, mangle(sig))
    assert err.value.field == "signature"


def test_a_wrong_digest_is_refused(acct: Any) -> None:
    _, sig = _sig(acct)
    with pytest.raises(s.SignatureError) as err:
        s.recover_address(b"\x00" * 31, sig)
    assert err.value.field == "digest"


def test_a_bad_private_key_is_refused() -> None:
    for key in (b"\x00" * 32, b"\x01" * 31, N.to_bytes(32, "big")):
        with pytest.raises(s.SignatureError) as err:
            s.address_of(key)
        assert err.value.field == "private_key"


# ---- request signatures ----


def test_request_payload_is_timestamp_method_path_then_raw_body() -> None:
    payload = s.request_payload("1700000000000", "post", "/v1/orders?x=é", b"\x00{}")
    assert payload == "1700000000000POST/v1/orders?x=é".encode() + b"\x00{}"


def test_hmac_round_trip_and_refusals() -> None:
    payload = s.request_payload("1", "GET", "/v1/balances", b"")
    sig = s.hmac_signature("secret", payload)

    assert len(sig) == 64 and sig == sig.lower()
    assert s.hmac_ok("secret", payload, sig)
    assert not s.hmac_ok("secret", payload + b"x", sig)
    assert not s.hmac_ok("other", payload, sig)
    assert not s.hmac_ok("secret", payload, sig.upper())
    for garbage in ("", "é" * 64, "\ud800", sig[:-1]):
        assert not s.hmac_ok("secret", payload, garbage)
    assert not s.hmac_ok("secret", payload, None)  # type: ignore[arg-type]


def test_ed25519_round_trip_and_refusals() -> None:
    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes_raw()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    payload = s.request_payload("1", "DELETE", "/v1/orders/1", b"")

    sig = s.ed25519_signature(raw_private, payload)

    assert base64.b64decode(sig, validate=True) and sig.endswith("==")
    assert s.ed25519_ok(public, payload, sig)
    assert s.ed25519_ok(s.ed25519_public_key(public), payload, sig)
    assert not s.ed25519_ok(public, payload + b"x", sig)
    urlsafe = base64.urlsafe_b64encode(base64.b64decode(sig)).decode()
    if urlsafe != sig:
        assert not s.ed25519_ok(public, payload, urlsafe)
    for garbage in ("", "=" * 88, sig.rstrip("="), "é" * 88, "\ud800" * 88, "A" * 88):
        assert not s.ed25519_ok(public, payload, garbage)
    assert not s.ed25519_ok(b"\x00" * 31, payload, sig)
    assert not s.ed25519_ok(public, payload, None)  # type: ignore[arg-type]


def test_keccak_is_right_from_many_threads_at_once() -> None:
    inputs = [os.urandom(n) for n in range(0, 2000, 7)]
    want = [keccak.new(digest_bits=256, data=d).digest() for d in inputs]

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: [s.keccak256(d) for d in inputs], range(8)))

    assert all(g == want for g in got)

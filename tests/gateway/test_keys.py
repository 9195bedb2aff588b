"""dex.gateway.keys: sealed secrets, the key ring and every refusal of authenticate."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from dex.core.commands import InputRef
from dex.gateway import keys as k
from dex.risk.events import ApiKeyRegistered
from dex.risk.state import ApiKey
from dex.wire import signing as s

ACCOUNT = "0x" + "ab" * 20
NOW = 1_700_000_000_000
WINDOW = 5_000


@dataclass(frozen=True)
class Record:
    """Stands in for ApiKeyRegistered (and, with `revoked`, a snapshot's key)."""

    account: str
    api_key: str
    key_type: str
    material: str
    permissions: str
    expires_at: int
    revoked: bool = False


@pytest.fixture
def kek() -> bytes:
    return k.parse_kek(k.new_kek())


def hmac_record(kek: bytes, secret: str, **over: Any) -> Record:
    api_key = over.pop("api_key", k.new_api_key())
    account = over.pop("account", ACCOUNT)
    material = k.seal(kek, secret, f"{api_key}:{account}")
    rec = Record(account, api_key, "hmac", material, "read,trade", 0)
    return replace(rec, **over)


def ed_record(**over: Any) -> tuple[Record, bytes]:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    rec = Record(ACCOUNT, k.new_api_key(), "ed25519", public, "read", 0)
    return replace(rec, **over), private.private_bytes_raw()


def hmac_call(ring: k.KeyRing, rec: Record, secret: str, **over: Any) -> k.KeyEntry:
    args: dict[str, Any] = {
        "api_key": rec.api_key,
        "timestamp": str(NOW),
        "method": "POST",
        "path_with_query": "/v1/orders?a=1",
        "body": b'{"x":1}',
        "now_ms": NOW,
        "recv_window_ms": WINDOW,
        "permission": "trade",
    }
    args.update(over)
    if "signature" not in args:
        payload = s.request_payload(
            args["timestamp"] or "", args["method"], args["path_with_query"], args["body"]
        )
        args["signature"] = s.hmac_signature(secret, payload)
    return ring.authenticate(**args)


def refusal(call: Any) -> tuple[int, str, str]:
    with pytest.raises(k.AuthError) as err:
        call()
    return err.value.status, err.value.code, err.value.message


# ---- sealing ----


def test_generators_have_their_shapes() -> None:
    assert len(k.parse_kek(k.new_kek())) == 32
    api_key = k.new_api_key()
    assert api_key.startswith("dk_") and len(api_key) == 35
    assert int(api_key[3:], 16) >= 0 and api_key == api_key.lower()
    secret = k.new_secret()
    assert len(secret) == 43 and "=" not in secret
    assert k.new_secret() != secret and k.new_api_key() != api_key


@pytest.mark.parametrize("bad", ["", "0" * 63, "0" * 65, "g" * 64, " " + "0" * 63, None])
def test_parse_kek_refuses_anything_but_64_hex(bad: Any) -> None:
    with pytest.raises(ValueError, match="64 hex"):
        k.parse_kek(bad)


@settings(max_examples=50, deadline=None)
@given(secret=st.text(st.characters(max_codepoint=127), min_size=1, max_size=64), aad=st.text())
def test_seal_round_trips_within_200_chars(secret: str, aad: str) -> None:
    kek = bytes(range(32))
    sealed = k.seal(kek, secret, aad)
    assert len(sealed) <= 200 and "=" not in sealed
    assert k.unseal(kek, sealed, aad) == secret


def test_seal_is_fresh_each_time(kek: bytes) -> None:
    assert k.seal(kek, "s", "a") != k.seal(kek, "s", "a")


def test_unseal_refuses_a_tampered_secret(kek: bytes) -> None:
    sealed = k.seal(kek, "my-secret", "dk_1:0xabc")
    # not the last character: unpadded base64's last one may carry bits the decoder drops,
    # so changing it may leave the bytes as they were
    for i in (0, 20, len(sealed) - 2):
        flipped = sealed[:i] + ("A" if sealed[i] != "A" else "B") + sealed[i + 1 :]
        with pytest.raises(k.SealError):
            k.unseal(kek, flipped, "dk_1:0xabc")
    for garbage in ("", "!!!", sealed[:30], sealed + "="):
        with pytest.raises(k.SealError):
            k.unseal(kek, garbage, "dk_1:0xabc")


def test_unseal_refuses_another_aad_or_kek(kek: bytes) -> None:
    sealed = k.seal(kek, "my-secret", "dk_1:0xabc")
    with pytest.raises(k.SealError) as err:
        k.unseal(kek, sealed, "dk_2:0xabc")
    assert "my-secret" not in str(err.value)
    with pytest.raises(k.SealError):
        k.unseal(kek, sealed, "dk_1:0xabd")
    with pytest.raises(k.SealError):
        k.unseal(k.parse_kek(k.new_kek()), sealed, "dk_1:0xabc")


@pytest.mark.parametrize(("secret", "kek_len"), [("", 32), ("x" * 65, 32), ("é", 32), ("x", 16)])
def test_seal_refuses_bad_input(secret: str, kek_len: int) -> None:
    with pytest.raises(k.SealError):
        k.seal(bytes(kek_len), secret, "a")


# ---- the ring ----


def test_hmac_key_authenticates(kek: bytes) -> None:
    secret = k.new_secret()
    rec = hmac_record(kek, secret)
    ring = k.KeyRing(kek, [rec])

    entry = hmac_call(ring, rec, secret)

    assert entry.api_key == rec.api_key and entry.account == ACCOUNT
    assert entry.permissions == frozenset({"read", "trade"})


def test_ed25519_key_authenticates(kek: bytes) -> None:
    rec, private = ed_record()
    ring = k.KeyRing(kek)
    ring.add(rec)
    payload = s.request_payload(str(NOW), "GET", "/v1/balances", b"")
    sig = s.ed25519_signature(private, payload)

    entry = ring.authenticate(
        rec.api_key, str(NOW), sig, "GET", "/v1/balances", b"", NOW, 1, "read"
    )

    assert entry.key_type == "ed25519"
    flipped = sig[:10] + ("B" if sig[10] != "B" else "C") + sig[11:]
    for wrong in (flipped, s.hmac_signature("x", payload)):
        _, code, _ = refusal(
            lambda w=wrong: ring.authenticate(
                rec.api_key, str(NOW), w, "GET", "/v1/balances", b"", NOW, 1, "read"
            )
        )
        assert code == "bad_signature"


@pytest.mark.parametrize("absent", ["api_key", "timestamp", "signature"])
@pytest.mark.parametrize("value", [None, ""])
def test_missing_credentials(kek: bytes, absent: str, value: Any) -> None:
    secret = k.new_secret()
    rec = hmac_record(kek, secret)
    ring = k.KeyRing(kek, [rec])

    status, code, _ = refusal(lambda: hmac_call(ring, rec, secret, **{absent: value}))

    assert (status, code) == (401, "missing_credentials")


def test_every_refusal_in_order(kek: bytes) -> None:
    secret = k.new_secret()
    rec = hmac_record(kek, secret, expires_at=NOW + 10)
    ring = k.KeyRing(kek, [rec])

    def code(**over: Any) -> tuple[int, str]:
        status, code, message = refusal(lambda: hmac_call(ring, rec, secret, **over))
        assert secret not in message
        return status, code

    assert code(api_key="dk_" + "f" * 32) == (401, "unknown_key")
    assert code(now_ms=NOW + 10, timestamp=str(NOW + 10)) == (401, "key_expired")
    assert code(timestamp=str(NOW - WINDOW - 1)) == (401, "timestamp_out_of_window")
    assert code(timestamp=str(NOW + WINDOW + 1)) == (401, "timestamp_out_of_window")
    for ts in ("1" * 20, "-1", "1e3", "١٢٣", " 1", "1.0"):
        assert code(timestamp=ts) == (401, "timestamp_out_of_window")
    assert code(signature="0" * 64) == (401, "bad_signature")
    assert code(permission="withdraw") == (403, "permission_denied")
    # the edges of the window and of expiry are inside
    assert hmac_call(ring, rec, secret, timestamp=str(NOW - WINDOW)).api_key == rec.api_key
    assert hmac_call(ring, rec, secret, now_ms=NOW + 9, timestamp=str(NOW + 9))

    ring.revoke(rec.api_key)
    assert code() == (401, "key_revoked")
    assert code(now_ms=NOW + 10) == (401, "key_revoked")  # revoked before expired


def test_signature_covers_method_path_and_body(kek: bytes) -> None:
    secret = k.new_secret()
    rec = hmac_record(kek, secret)
    ring = k.KeyRing(kek, [rec])
    good = s.hmac_signature(secret, s.request_payload(str(NOW), "POST", "/v1/orders?a=1", b"{}"))

    assert hmac_call(ring, rec, secret, signature=good, body=b"{}")
    for over in ({"body": b"{ }"}, {"method": "PUT"}, {"path_with_query": "/v1/orders?a=2"}):
        args = {"signature": good, "body": b"{}", **over}
        assert refusal(lambda a=args: hmac_call(ring, rec, secret, **a))[1] == "bad_signature"


def test_a_secret_sealed_for_another_key_or_kek_is_unknown(kek: bytes) -> None:
    secret = k.new_secret()
    moved = hmac_record(kek, secret)
    moved = replace(moved, api_key=k.new_api_key())  # the sealed secret copied onto another key
    other_kek = hmac_record(k.parse_kek(k.new_kek()), secret)
    ring = k.KeyRing(kek, [moved, other_kek])

    for rec in (moved, other_kek):
        entry = ring.get(rec.api_key)
        assert entry is not None and not entry.usable
        assert refusal(lambda r=rec: hmac_call(ring, r, secret))[:2] == (401, "unknown_key")
    assert len(ring.keys_of(ACCOUNT)) == 2  # still listed, so they can be revoked


def test_a_bad_ed25519_public_key_is_unknown(kek: bytes) -> None:
    rec, _ = ed_record(material="zz" * 32)
    ring = k.KeyRing(kek, [rec])
    status, code, _ = refusal(
        lambda: ring.authenticate(rec.api_key, str(NOW), "A" * 88, "GET", "/", b"", NOW, 1, "read")
    )
    assert (status, code) == (401, "unknown_key")


def test_revocation_is_final(kek: bytes) -> None:
    secret = k.new_secret()
    rec = hmac_record(kek, secret)
    ring = k.KeyRing(kek, [rec])

    assert ring.revoke(rec.api_key) is True
    ring.add(rec)  # a replayed registration

    entry = ring.get(rec.api_key)
    assert entry is not None and entry.revoked and not entry.usable
    assert ring.keys_of(ACCOUNT) == []
    assert refusal(lambda: hmac_call(ring, rec, secret))[1] == "key_revoked"
    assert ring.revoke("dk_" + "0" * 32) is False


def test_snapshot_records_carry_revoked(kek: bytes) -> None:
    secret = k.new_secret()
    live = hmac_record(kek, secret)
    dead = hmac_record(kek, secret, revoked=True)
    ring = k.KeyRing(kek, [live, dead])

    assert [e.api_key for e in ring.keys_of(ACCOUNT.upper().replace("0X", "0x"))] == [live.api_key]
    assert refusal(lambda: hmac_call(ring, dead, secret))[1] == "key_revoked"


def test_keys_of_lists_per_account_in_order_without_material(kek: bytes) -> None:
    a = hmac_record(kek, "s1")
    b, _ = ed_record(permissions="read,trade,withdraw", expires_at=NOW)
    other = hmac_record(kek, "s2", account="0x" + "cd" * 20)
    ring = k.KeyRing(kek, [a, b, other])

    listed = [e.public() for e in ring.keys_of(ACCOUNT)]

    assert listed == [
        {
            "api_key": a.api_key,
            "key_type": "hmac",
            "permissions": "read,trade",
            "expires_at": 0,
            "account": ACCOUNT,
        },
        {
            "api_key": b.api_key,
            "key_type": "ed25519",
            "permissions": "read,trade,withdraw",
            "expires_at": NOW,
            "account": ACCOUNT,
        },
    ]
    assert len(ring) == 3 and ring.keys_of("0x" + "00" * 20) == []


def test_repr_never_shows_the_secret(kek: bytes) -> None:
    secret = "super-secret-value-" + k.new_secret()
    rec = hmac_record(kek, secret)
    entry = k.KeyRing(kek, [rec]).get(rec.api_key)

    assert entry is not None
    assert secret not in repr(entry) and secret not in str(entry.public())
    assert rec.material not in repr(entry)
    assert not hasattr(entry, "__dict__")  # no stray attribute to leak through vars()


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"key_type": "rsa"}, "key_type"),
        ({"permissions": ""}, "permissions"),
        ({"permissions": "read,admin"}, "permissions"),
        ({"expires_at": -1}, "expires_at"),
        ({"expires_at": True}, "expires_at"),
        ({"account": ""}, "account"),
        ({"api_key": None}, "api_key"),
        ({"material": None}, "material"),
        ({"revoked": "no"}, "revoked"),
    ],
)
def test_a_broken_record_raises_and_changes_nothing(
    kek: bytes, over: dict[str, Any], field: str
) -> None:
    good = hmac_record(kek, "s")
    ring = k.KeyRing(kek, [good])
    with pytest.raises(ValueError, match=field):
        ring.add(replace(good, **over))
    entry = ring.get(good.api_key)
    assert len(ring) == 1 and entry is not None and entry.usable


def test_a_bad_kek_is_refused_at_construction() -> None:
    with pytest.raises(k.SealError):
        k.KeyRing(b"\x00" * 31)


def test_the_risk_ledgers_own_records_feed_the_ring(kek: bytes) -> None:
    secret = k.new_secret()
    api_key = k.new_api_key()
    material = k.seal(kek, secret, f"{api_key}:{ACCOUNT}")
    event = ApiKeyRegistered(
        v=1,
        ts=0,
        log_seq=1,
        input=InputRef("risk-commands", 1),
        account=ACCOUNT,
        api_key=api_key,
        key_type="hmac",
        material=material,
        permissions="read,trade",
        expires_at=0,
    )
    snapshot_key = ApiKey(ACCOUNT, k.new_api_key(), "hmac", material, "read", 0, True)
    ring = k.KeyRing(kek, [event, snapshot_key])

    assert hmac_call(ring, Record(ACCOUNT, api_key, "hmac", material, "", 0), secret).usable
    entry = ring.get(snapshot_key.api_key)
    assert entry is not None and entry.revoked

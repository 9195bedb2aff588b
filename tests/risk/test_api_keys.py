"""API keys and wallet nonces as risk-ledger state (dex.risk.keys), and a wallet-signed
order's nonce (dex.risk.orders): every rule, replay, snapshots, and a reference model."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dex.core.commands import InputRef
from dex.core.enums import OrderType, Side
from dex.core.errors import CommandError
from dex.risk import commands as rc
from dex.risk.address import shard_of
from dex.risk.codes import RiskCode
from dex.risk.events import (
    ApiKeyRegistered,
    ApiKeyRevoked,
    OrderAcceptedForMatching,
    OrderRejected,
    RequestRejected,
    RiskEvent,
)
from dex.risk.ledger import Ledger
from dex.risk.snapshot import api_keys
from dex.risk.state import ApiKey
from tests.risk.harness import DAY, SIMPLE, Desk, addr

A, B = addr(0xA1), addr(0xB2)
PUB = "ab" * 32  # an ed25519 public key's hex
MS = 1_000_000  # ns per ms: `expires_at` is in ms, `ts` in ns


def kid(i: int) -> str:
    return f"dk_{i:032x}"


def reg(account: str = A, i: int = 1, nonce: int = 1, **kw: Any) -> rc.RegisterApiKey:
    fields: dict[str, Any] = {
        "key_type": "hmac",
        "material": "c2VhbGVk",
        "permissions": "read,trade",
    }
    fields.update(kw)
    return rc.RegisterApiKey(account=account, api_key=kid(i), nonce=nonce, **fields)


def revoke(account: str = A, i: int = 1, nonce: int | None = None) -> rc.RevokeApiKey:
    return rc.RevokeApiKey(account=account, api_key=kid(i), nonce=nonce)


class Keys:
    """One ledger driven with increasing times (ms apart, so expiry is easy to hit)."""

    def __init__(self, max_keys: int = 20, shard: int = 0, shards: int = 1) -> None:
        self.ledger = Ledger(shard, shards, max_keys)
        self.ts = 0
        self.n = 0

    def do(self, cmd: Any, *, at_ms: int | None = None) -> list[RiskEvent]:
        self.ts = at_ms * MS if at_ms is not None else self.ts + MS
        self.n += 1
        stamped = msgspec.structs.replace(cmd, ts=self.ts)
        return self.ledger.apply(stamped, InputRef("risk-in", self.n))

    def stored(self) -> list[ApiKey]:
        return api_keys(self.ledger.snapshot())

    def live(self, account: str = A) -> set[str]:
        return {k.api_key for k in self.stored() if k.account == account and not k.revoked}


def refused(events: list[RiskEvent]) -> tuple[str, RiskCode]:
    [e] = events
    assert isinstance(e, RequestRejected | OrderRejected), e
    return e.request, e.code


# ---------------------------------------------------------------- register


def test_register_emits_the_key_and_keeps_it() -> None:
    k = Keys()
    [e] = k.do(reg(i=7, nonce=3, key_type="ed25519", material=PUB, expires_at=99))
    assert isinstance(e, ApiKeyRegistered)
    assert (e.account, e.api_key, e.key_type, e.material, e.permissions, e.expires_at) == (
        A,
        kid(7),
        "ed25519",
        PUB,
        "read,trade",
        99,
    )
    assert k.stored() == [ApiKey(A, kid(7), "ed25519", PUB, "read,trade", 99, False)]


def test_a_checksummed_address_is_stored_in_lower_case() -> None:
    k = Keys()
    mixed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    [e] = k.do(reg(account=mixed))
    assert isinstance(e, ApiKeyRegistered) and e.account == mixed.lower()
    assert isinstance(k.do(revoke(account=mixed.lower()))[0], ApiKeyRevoked)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"key_type": "rsa"}, "key_type"),
        ({"api_key": "dk_" + "A" * 32}, "api_key"),  # upper case
        ({"api_key": "dk_" + "0" * 31}, "api_key"),  # short
        ({"api_key": "dk_" + "0" * 32 + "\n"}, "api_key"),
        ({"api_key": "sk_" + "0" * 32}, "api_key"),
        ({"permissions": ""}, "permissions"),
        ({"permissions": "trade,read"}, "permissions"),  # not in order
        ({"permissions": "read,read"}, "permissions"),
        ({"permissions": "read, trade"}, "permissions"),
        ({"permissions": "admin"}, "permissions"),
        ({"material": ""}, "material"),
        ({"material": "a" * 201}, "material"),
        ({"material": "a+b/"}, "material"),  # base64, not base64url
        ({"key_type": "ed25519", "material": "AB" * 32}, "material"),
        ({"key_type": "ed25519", "material": "ab" * 31}, "material"),
        ({"key_type": "ed25519", "material": "c2VhbGVk"}, "material"),
        ({"nonce": -1}, "nonce"),
        ({"nonce": 2**63}, "nonce"),
        ({"expires_at": -1}, "expires_at"),
        ({"expires_at": 2**63}, "expires_at"),
    ],
)
def test_a_malformed_registration_is_invalid_key_and_changes_nothing(
    change: dict[str, Any], field: str
) -> None:
    k = Keys()
    cmd = msgspec.structs.replace(reg(nonce=5), **change)
    [e] = k.do(cmd)
    assert isinstance(e, RequestRejected)
    assert (e.request, e.account, e.code) == ("register_api_key", A, RiskCode.INVALID_KEY)
    assert field in e.message
    assert k.stored() == []
    assert isinstance(k.do(reg(nonce=5))[0], ApiKeyRegistered)  # the nonce was not used up


@pytest.mark.parametrize("material", ["a", "a" * 200, "c2VhbGVk_-", "c2VhbA==", "Zm9vYmFy="])
def test_hmac_material_is_base64url_of_1_to_200_characters(material: str) -> None:
    assert isinstance(Keys().do(reg(material=material))[0], ApiKeyRegistered)


@pytest.mark.parametrize(
    "permissions",
    [
        "read",
        "trade",
        "withdraw",
        "read,trade",
        "read,withdraw",
        "trade,withdraw",
        "read,trade,withdraw",
    ],
)
def test_every_canonical_permission_list_is_taken(permissions: str) -> None:
    assert isinstance(Keys().do(reg(permissions=permissions))[0], ApiKeyRegistered)


def test_a_bad_address_is_refused_and_another_shards_account_raises() -> None:
    k = Keys()
    assert refused(k.do(reg(account="0x1234"))) == ("register_api_key", RiskCode.INVALID_ADDRESS)
    assert refused(k.do(revoke(account="0x1234"))) == ("revoke_api_key", RiskCode.INVALID_ADDRESS)
    other = next(addr(i) for i in range(1, 100) if shard_of(addr(i), 2) == 1)
    two = Keys(shard=0, shards=2)
    before = two.ledger.snapshot()
    with pytest.raises(CommandError):
        two.do(reg(account=other))
    with pytest.raises(CommandError):
        two.do(revoke(account=other))
    assert two.ledger.snapshot() == before


def test_an_id_is_registered_once_on_a_shard_live_or_revoked() -> None:
    k = Keys()
    k.do(reg(A, i=1, nonce=1))
    assert refused(k.do(reg(B, i=1, nonce=1))) == ("register_api_key", RiskCode.INVALID_KEY)
    k.do(revoke(A, i=1))
    assert refused(k.do(reg(A, i=1, nonce=2))) == ("register_api_key", RiskCode.INVALID_KEY)
    assert k.live(A) == set() and k.live(B) == set()


def test_a_wallet_nonce_is_used_once_per_account_by_register_and_revoke() -> None:
    k = Keys()
    k.do(reg(A, i=1, nonce=1))
    assert refused(k.do(reg(A, i=2, nonce=1))) == ("register_api_key", RiskCode.NONCE_USED)
    assert isinstance(k.do(reg(B, i=3, nonce=1))[0], ApiKeyRegistered)  # another account's
    assert isinstance(k.do(revoke(A, i=1, nonce=2))[0], ApiKeyRevoked)
    assert refused(k.do(reg(A, i=4, nonce=2))) == ("register_api_key", RiskCode.NONCE_USED)
    k.do(reg(A, i=5, nonce=3))
    assert refused(k.do(revoke(A, i=5, nonce=3))) == ("revoke_api_key", RiskCode.NONCE_USED)
    assert k.live(A) == {kid(5)}  # the refused revoke changed nothing


def test_too_many_live_keys_counts_neither_revoked_nor_expired_ones() -> None:
    k = Keys(max_keys=2)
    k.do(reg(i=1, nonce=1), at_ms=10)
    k.do(reg(i=2, nonce=2, expires_at=20), at_ms=11)
    [e] = k.do(reg(i=3, nonce=3), at_ms=12)
    assert (e.code, e.message) == (  # type: ignore[union-attr]
        RiskCode.TOO_MANY_KEYS,
        "the account already has 2 live API keys",
    )
    assert isinstance(k.do(reg(B, i=4, nonce=3))[0], ApiKeyRegistered)  # per account
    # expires_at 20 ms: expired at 20 ms exactly
    assert isinstance(k.do(reg(i=5, nonce=3), at_ms=20)[0], ApiKeyRegistered)
    assert refused(k.do(reg(i=6, nonce=4)))[1] == RiskCode.TOO_MANY_KEYS
    k.do(revoke(i=1))
    assert isinstance(k.do(reg(i=6, nonce=4))[0], ApiKeyRegistered)
    assert k.live() == {kid(5), kid(6)}


def test_expired_keys_are_dropped_when_the_account_registers_another() -> None:
    k = Keys()
    k.do(reg(i=1, nonce=1, expires_at=5), at_ms=1)
    k.do(reg(i=2, nonce=2), at_ms=2)
    k.do(revoke(i=2), at_ms=3)
    k.do(reg(B, i=3, nonce=1, expires_at=5), at_ms=4)
    assert {x.api_key for x in k.stored()} == {kid(1), kid(2), kid(3)}  # expired: still kept
    k.do(reg(i=4, nonce=3), at_ms=6)
    # A's expired key is gone; its revoked one stays (the id is used); B's is not A's business
    assert [(x.api_key, x.revoked) for x in k.stored()] == [
        (kid(2), True),
        (kid(3), False),
        (kid(4), False),
    ]


def test_max_keys_zero_refuses_every_key_and_a_negative_one_is_a_bug() -> None:
    assert refused(Keys(max_keys=0).do(reg()))[1] == RiskCode.TOO_MANY_KEYS
    with pytest.raises(ValueError, match="max_keys"):
        Ledger(0, 1, -1)


# ---------------------------------------------------------------- revoke


def test_revoke_unknown_other_accounts_and_already_revoked_keys() -> None:
    k = Keys()
    k.do(reg(A, i=1, nonce=1))
    assert refused(k.do(revoke(A, i=2))) == ("revoke_api_key", RiskCode.UNKNOWN_KEY)
    assert refused(k.do(revoke(B, i=1))) == ("revoke_api_key", RiskCode.UNKNOWN_KEY)
    [e] = k.do(revoke(A, i=1))
    assert isinstance(e, ApiKeyRevoked) and (e.account, e.api_key) == (A, kid(1))
    [again] = k.do(revoke(A, i=1, nonce=9))
    assert isinstance(again, RequestRejected)
    assert (again.code, again.message) == (RiskCode.UNKNOWN_KEY, "already revoked")
    assert isinstance(k.do(reg(A, i=2, nonce=9))[0], ApiKeyRegistered)  # 9 was not used up
    assert k.stored()[0] == ApiKey(A, kid(1), "hmac", "c2VhbGVk", "read,trade", 0, True)


def test_a_revoke_nonce_out_of_range_is_invalid_key() -> None:
    k = Keys()
    k.do(reg(nonce=1))
    assert refused(k.do(revoke(nonce=-1))) == ("revoke_api_key", RiskCode.INVALID_KEY)
    assert refused(k.do(revoke(nonce=2**63))) == ("revoke_api_key", RiskCode.INVALID_KEY)
    assert k.live() == {kid(1)}


# ---------------------------------------------------------------- replay and snapshots


def session() -> list[Any]:
    return [
        reg(A, i=1, nonce=1),
        reg(A, i=2, nonce=2, key_type="ed25519", material=PUB, permissions="read"),
        reg(B, i=3, nonce=1, expires_at=4, permissions="read,trade,withdraw"),
        revoke(A, i=1, nonce=3),
        reg(A, i=4, nonce=3),  # nonce_used
        revoke(A, i=1),  # already revoked
        reg(A, i=5, nonce=4, expires_at=2**40),
    ]


def test_replay_gives_the_same_events_and_snapshot_bytes() -> None:
    runs = []
    for _ in range(2):
        k = Keys()
        events = [e for cmd in session() for e in k.do(cmd)]
        runs.append((msgspec.msgpack.encode(events), k.ledger.snapshot()))
    assert runs[0] == runs[1]


def test_snapshot_round_trip_keeps_keys_and_nonces() -> None:
    k = Keys()
    for cmd in session():
        k.do(cmd)
    data = k.ledger.snapshot()
    restored = Ledger.restore(data)
    assert restored.snapshot() == data
    assert api_keys(data) == [
        ApiKey(A, kid(1), "hmac", "c2VhbGVk", "read,trade", 0, True),
        ApiKey(A, kid(2), "ed25519", PUB, "read", 0, False),
        ApiKey(B, kid(3), "hmac", "c2VhbGVk", "read,trade,withdraw", 4, False),
        ApiKey(A, kid(5), "hmac", "c2VhbGVk", "read,trade", 2**40, False),
    ]
    k.ledger = restored  # it behaves the same: the nonce is used, the key revoked
    assert refused(k.do(reg(A, i=6, nonce=3)))[1] == RiskCode.NONCE_USED
    assert refused(k.do(revoke(A, i=1)))[1] == RiskCode.UNKNOWN_KEY
    assert refused(k.do(reg(A, i=1, nonce=7)))[1] == RiskCode.INVALID_KEY
    assert isinstance(k.do(revoke(A, i=2))[0], ApiKeyRevoked)


def test_a_snapshot_from_before_api_keys_loads_with_none() -> None:
    k = Keys()
    k.do(reg(nonce=1))
    state = msgspec.msgpack.decode(k.ledger.snapshot())
    for section in ("keys", "wallet_nonces", "order_nonces"):
        del state[section]
    old = msgspec.msgpack.encode(state)
    assert api_keys(old) == []
    restored = Ledger.restore(old)
    assert restored.keys == {} and restored.wallet_nonces == {}
    assert restored.order_nonces == {} and not restored.nonce_times


def test_api_keys_refuses_another_snapshot_version() -> None:
    state = msgspec.msgpack.decode(Ledger().snapshot())
    state["v"] = 99
    with pytest.raises(ValueError, match="version"):
        api_keys(msgspec.msgpack.encode(state))


def test_restore_takes_max_keys() -> None:
    k = Keys(max_keys=1)
    k.do(reg(nonce=1))
    k.ledger = Ledger.restore(k.ledger.snapshot(), max_keys=1)
    assert refused(k.do(reg(i=2, nonce=2)))[1] == RiskCode.TOO_MANY_KEYS
    k.ledger = Ledger.restore(k.ledger.snapshot(), max_keys=2)
    assert isinstance(k.do(reg(i=2, nonce=2))[0], ApiKeyRegistered)


# ---------------------------------------------------------------- reference model


class RefKeys:
    """The rules, naively: a dict of keys by id and a set of used nonces per account."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self.keys: dict[str, dict[str, Any]] = {}
        self.nonces: dict[str, set[int]] = {}

    def register(self, account: str, key: str, nonce: int, expires_at: int, now_ms: int) -> str:
        used = self.nonces.setdefault(account, set())

        def live(k: dict[str, Any]) -> bool:
            return not k["revoked"] and not (k["expires_at"] and k["expires_at"] <= now_ms)

        if key in self.keys:
            return "invalid_key"
        if nonce in used:
            return "nonce_used"
        mine = [i for i, k in self.keys.items() if k["account"] == account]
        if sum(live(self.keys[i]) for i in mine) >= self.max_keys:
            return "too_many_keys"
        for i in mine:
            if not self.keys[i]["revoked"] and not live(self.keys[i]):
                del self.keys[i]
        used.add(nonce)
        self.keys[key] = {"account": account, "expires_at": expires_at, "revoked": False}
        return "registered"

    def revoke(self, account: str, key: str, nonce: int | None) -> str:
        k = self.keys.get(key)
        if k is None or k["account"] != account or k["revoked"]:
            return "unknown_key"
        used = self.nonces.setdefault(account, set())
        if nonce is not None and nonce in used:
            return "nonce_used"
        if nonce is not None:
            used.add(nonce)
        k["revoked"] = True
        return "revoked"

    def all_keys(self) -> set[tuple[str, str, bool]]:
        return {(k["account"], i, k["revoked"]) for i, k in self.keys.items()}


def outcome(events: list[RiskEvent]) -> str:
    [e] = events
    if isinstance(e, ApiKeyRegistered):
        return "registered"
    if isinstance(e, ApiKeyRevoked):
        return "revoked"
    assert isinstance(e, RequestRejected)
    return e.code.value


step = st.tuples(
    st.sampled_from(["register", "register", "revoke"]),
    st.sampled_from([A, B]),
    st.integers(1, 6),  # key id
    st.one_of(st.none(), st.integers(0, 8)),  # nonce (None: register uses 0)
    st.sampled_from([0, 0, 5, 15, 30]),  # expires_at, ms
    st.integers(0, 6),  # ms to wait
)


@settings(max_examples=150, deadline=None)
@given(st.lists(step, max_size=40), st.integers(1, 3))
def test_register_and_revoke_match_a_reference_model(
    steps: list[tuple[str, str, int, int | None, int, int]], max_keys: int
) -> None:
    k = Keys(max_keys=max_keys)
    ref = RefKeys(max_keys)
    now = 0
    for what, account, i, nonce, expires_at, wait in steps:
        now += wait
        if what == "register":
            n = nonce or 0
            got = outcome(k.do(reg(account, i=i, nonce=n, expires_at=expires_at), at_ms=now))
            want = ref.register(account, kid(i), n, expires_at, now)
        else:
            got = outcome(k.do(revoke(account, i=i, nonce=nonce), at_ms=now))
            want = ref.revoke(account, kid(i), nonce)
        assert got == want
        assert {(x.account, x.api_key, x.revoked) for x in k.stored()} == ref.all_keys()
    data = k.ledger.snapshot()
    assert Ledger.restore(data, max_keys).snapshot() == data


# ---------------------------------------------------------------- a wallet-signed order's nonce


def order(account: str = A, nonce: int | None = 1, size: int = 1) -> rc.Place:
    return rc.Place(
        market=SIMPLE.market,
        account=account,
        side=Side.BUY,
        type=OrderType.LIMIT,
        price=90,
        size=size,
        nonce=nonce,
    )


@pytest.fixture
def desk() -> Desk:
    d = Desk()
    d.do(rc.AddMarket(spec=SIMPLE))
    for n, account in enumerate((A, B)):
        d.do(rc.Deposit(account=account, asset="USD", amount=10_000, tx_id=f"tx{n}"))
    return d


def test_an_order_nonce_is_refused_again_within_24_hours_then_forgotten(desk: Desk) -> None:
    def accepted(events: list[RiskEvent]) -> bool:
        return any(isinstance(x, OrderAcceptedForMatching) for x in events)

    [first] = [e for e in desk.do(order()) if isinstance(e, OrderAcceptedForMatching)]
    assert not hasattr(first.place, "nonce")  # matching's place carries none
    t0 = desk.ts
    held = desk.bal(A, "USD")
    last = t0 + DAY - 1
    [e] = desk.do(order(), ts=last)
    assert isinstance(e, OrderRejected)
    assert (e.request, e.code, e.order_id) == ("place", RiskCode.NONCE_USED, None)
    assert "nonce" in e.message
    assert desk.bal(A, "USD") == held  # nothing held
    assert accepted(desk.do(order(B), ts=last))  # nonces are per account
    assert accepted(desk.do(order(nonce=2), ts=last))
    assert desk.ledger.order_nonces[(A, 1)] == t0
    assert accepted(desk.do(order(), ts=t0 + DAY))  # 24 hours on: forgotten
    assert desk.ledger.order_nonces[(A, 1)] == t0 + DAY  # remembered anew
    assert [x for x in desk.ledger.nonce_times if x[1] == A] == [(last, A, 2), (t0 + DAY, A, 1)]
    [again] = desk.do(order(nonce=2), ts=t0 + DAY)
    assert isinstance(again, OrderRejected) and again.code == RiskCode.NONCE_USED


def test_a_refused_order_does_not_use_its_nonce(desk: Desk) -> None:
    [e] = desk.do(order(size=1_000))
    assert isinstance(e, OrderRejected) and e.code == RiskCode.INSUFFICIENT_FUNDS
    assert any(isinstance(x, OrderAcceptedForMatching) for x in desk.do(order()))


@pytest.mark.parametrize("nonce", [0, -1, 2**63])
def test_an_order_nonce_out_of_range_is_refused(desk: Desk, nonce: int) -> None:
    [e] = desk.do(order(nonce=nonce))
    assert isinstance(e, OrderRejected) and e.code == RiskCode.NONCE_USED
    assert e.message == "nonce must be in [1, 2^63)"


def test_order_nonces_survive_a_snapshot_and_a_malformed_place_prunes_nothing(
    desk: Desk,
) -> None:
    desk.do(order(nonce=1))
    desk.do(order(nonce=2))
    data = desk.ledger.snapshot()
    restored = Ledger.restore(data)
    assert restored.snapshot() == data
    desk.ledgers[0] = restored
    [e] = desk.do(order(nonce=2))
    assert isinstance(e, OrderRejected) and e.code == RiskCode.NONCE_USED
    # a day later a malformed place raises and changes nothing, pruning included
    bad = msgspec.structs.replace(order(nonce=3), price=-5)
    before = desk.ledger.snapshot()
    with pytest.raises(CommandError):
        desk.ledger.apply(
            msgspec.structs.replace(bad, ts=desk.ts + DAY), InputRef("risk-in", 10**6)
        )
    assert desk.ledger.snapshot() == before

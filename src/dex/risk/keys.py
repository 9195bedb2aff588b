"""API keys of a risk shard's accounts: `register_api_key` and `revoke_api_key`.

The gateway checks the wallet's signature and sends the command; risk owns the keys as state
of the account's shard (dex.risk.state), so they are logged, replayed and snapshotted like
balances. A refusal is a `request_rejected` and changes nothing.

Registration checks, in order: the address (`invalid_address`; another shard's account
raises CommandError); the key's form, an id already registered on this shard (live or
revoked), the permissions, the material, the nonce's and `expires_at`'s range
(`invalid_key`); the wallet nonce used before (`nonce_used`); `max_keys` live keys already
(`too_many_keys`). A registration drops the account's expired keys first (not revoked ones:
their ids stay used). Revocation: the key unknown, another account's or already revoked
(`unknown_key`); then, when the wallet signed it, the nonce's range (`invalid_key`) and its
use (`nonce_used`). O(the account's live keys) per command.
"""

from __future__ import annotations

import re

from dex.core.commands import InputRef
from dex.core.errors import CommandError
from dex.risk.address import INVALID_ADDRESS, canonical_address, shard_of
from dex.risk.codes import RiskCode
from dex.risk.commands import RegisterApiKey, RevokeApiKey
from dex.risk.events import ApiKeyRegistered, ApiKeyRevoked, RequestRejected, RiskEvent
from dex.risk.state import MAX_AMOUNT, SCHEMA_VERSION, ApiKey, _Core

V = SCHEMA_VERSION
KEY_TYPES = ("hmac", "ed25519")
# every non-empty subset of read,trade,withdraw, in that order
PERMISSIONS = frozenset(
    ",".join(p for bit, p in enumerate(("read", "trade", "withdraw")) if mask >> bit & 1)
    for mask in range(1, 8)
)
# matched with `fullmatch` (a final newline is not allowed); str patterns of ASCII classes
_KEY_ID = re.compile(r"dk_[0-9a-f]{32}")
_ED25519 = re.compile(r"[0-9a-f]{64}")
_SEALED = re.compile(r"[A-Za-z0-9_-]+={0,2}")  # base64url, with or without padding
MAX_SEALED = 200


def key_problem(cmd: RegisterApiKey) -> str:
    """What is malformed in a registration, naming the field; "" if nothing."""
    if cmd.key_type not in KEY_TYPES:
        return "key_type must be hmac or ed25519"
    if not (isinstance(cmd.api_key, str) and _KEY_ID.fullmatch(cmd.api_key)):
        return "api_key must be dk_ and 32 lowercase hex digits"
    if cmd.permissions not in PERMISSIONS:
        return "permissions must be a non-empty subset of read,trade,withdraw in that order"
    material = cmd.material
    if cmd.key_type == "ed25519":
        if not (isinstance(material, str) and _ED25519.fullmatch(material)):
            return "material must be the public key as 64 lowercase hex digits"
    elif not (
        isinstance(material, str) and len(material) <= MAX_SEALED and _SEALED.fullmatch(material)
    ):
        return f"material must be 1 to {MAX_SEALED} characters of base64url"
    if not 0 <= cmd.nonce <= MAX_AMOUNT:
        return "nonce must be in [0, 2^63)"
    if not 0 <= cmd.expires_at <= MAX_AMOUNT:
        return "expires_at must be in [0, 2^63)"
    return ""


class _Keys(_Core):
    __slots__ = ()

    def _key_owner(self, request: str, raw: str, ts: int, src: InputRef) -> str | RiskEvent:
        """The canonical address of a key request's account, or its refusal; CommandError
        for an account of another shard. Nothing is stored."""
        addr = canonical_address(raw)
        if addr is None:
            return self._key_refusal(
                request, raw, RiskCode.INVALID_ADDRESS, INVALID_ADDRESS, ts, src
            )
        owner = shard_of(addr, self.shard_count)
        if owner != self.shard:
            raise CommandError("account", f"{addr} belongs to risk shard {owner}")
        return addr

    def _key_refusal(
        self, request: str, account: str, code: RiskCode, message: str, ts: int, src: InputRef
    ) -> RiskEvent:
        self.log_seq += 1
        return RequestRejected(V, ts, self.log_seq, src, request, account, code, message)

    def _register_api_key(self, cmd: RegisterApiKey, src: InputRef, ts: int) -> list[RiskEvent]:
        request = "register_api_key"
        addr = self._key_owner(request, cmd.account, ts, src)
        if not isinstance(addr, str):
            return [addr]
        why = key_problem(cmd)
        code = RiskCode.INVALID_KEY
        used = self.wallet_nonces.get(addr)
        live = self.live_keys.get(addr)
        if why:
            pass
        elif cmd.api_key in self.keys:
            why = "api_key is already registered"
        elif used is not None and cmd.nonce in used:
            code, why = RiskCode.NONCE_USED, f"nonce {cmd.nonce} was used before"
        elif (sum(k.live(ts) for k in live.values()) if live else 0) >= self.max_keys:
            code = RiskCode.TOO_MANY_KEYS
            why = f"the account already has {self.max_keys} live API keys"
        if why:
            return [self._key_refusal(request, addr, code, why, ts, src)]
        if live is None:
            live = self.live_keys[addr] = {}
        else:
            for expired in [k for k in live.values() if not k.live(ts)]:
                del live[expired.api_key]
                del self.keys[expired.api_key]
        if used is None:
            used = self.wallet_nonces[addr] = set()
        used.add(cmd.nonce)
        key = ApiKey(addr, cmd.api_key, cmd.key_type, cmd.material, cmd.permissions, cmd.expires_at)
        self.keys[key.api_key] = live[key.api_key] = key
        self.log_seq += 1
        return [
            ApiKeyRegistered(
                V,
                ts,
                self.log_seq,
                src,
                addr,
                key.api_key,
                key.key_type,
                key.material,
                key.permissions,
                key.expires_at,
            )
        ]

    def _revoke_api_key(self, cmd: RevokeApiKey, src: InputRef, ts: int) -> list[RiskEvent]:
        request = "revoke_api_key"
        addr = self._key_owner(request, cmd.account, ts, src)
        if not isinstance(addr, str):
            return [addr]
        key = self.keys.get(cmd.api_key) if isinstance(cmd.api_key, str) else None
        nonce = cmd.nonce
        used = self.wallet_nonces.get(addr)
        code: RiskCode | None = None
        why = ""
        if key is None or key.account != addr:
            code, why = RiskCode.UNKNOWN_KEY, "api_key is not a key of this account"
        elif key.revoked:
            code, why = RiskCode.UNKNOWN_KEY, "already revoked"
        elif nonce is not None and not 0 <= nonce <= MAX_AMOUNT:
            code, why = RiskCode.INVALID_KEY, "nonce must be in [0, 2^63)"
        elif nonce is not None and used is not None and nonce in used:
            code, why = RiskCode.NONCE_USED, f"nonce {nonce} was used before"
        if code is not None or key is None:
            return [self._key_refusal(request, addr, code or RiskCode.UNKNOWN_KEY, why, ts, src)]
        if nonce is not None:
            if used is None:
                used = self.wallet_nonces[addr] = set()
            used.add(nonce)
        key.revoked = True
        live = self.live_keys[addr]
        del live[key.api_key]
        if not live:
            del self.live_keys[addr]
        self.log_seq += 1
        return [ApiKeyRevoked(V, ts, self.log_seq, src, addr, key.api_key)]

"""Entry formats on the bus (MessagePack through msgspec), one place for every stream.

- Input streams carry one command per entry: `dex:{risk:r}:in` a risk command, the admin
  stream an `AdminCommand`, `dex:{risk:r}:to:m` a `ToEntry` (a matching command plus the admin
  position risk had applied, so matching never sees an order for a market it has not added).
- Logs carry one entry per batch: `MatchEntry` / `RiskEntry` = the input positions after the
  batch plus, per input, the input itself (with the time the shard stamped on it) and the
  events it produced. Recovery re-applies the inputs and checks it gets the same events.
An entry that does not decode is reported by the reader with its position and skipped; it
never changes state (`BadEntry`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from dex.core import commands as mc
from dex.core.commands import InputRef
from dex.core.events import Event
from dex.risk import commands as rc
from dex.risk.events import RiskEvent

AdminCommand = (
    mc.AddAsset
    | mc.AddMarket
    | rc.SetFees
    | rc.SetAccountFees
    | rc.SetLimits
    | rc.GlobalHalt
    | rc.Resume
    | mc.SetMarketStatus
)
RISK_ADMIN = (
    mc.AddAsset,
    mc.AddMarket,
    rc.SetFees,
    rc.SetAccountFees,
    rc.SetLimits,
    rc.GlobalHalt,
    rc.Resume,
)
ForwardedCommand = mc.Place | mc.Amend | mc.Cancel | mc.CancelAll


class BadEntry(ValueError):
    """An entry that is not what its stream carries."""


class ToEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    admin: int
    cmd: ForwardedCommand


class MatchItem(msgspec.Struct, frozen=True, array_like=True, gc=False):
    input: InputRef
    cmd: mc.Command
    events: list[Event]
    error: str | None = None


class MatchEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    pos: dict[str, int]
    items: list[MatchItem]


class MatchItemEvents(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A `MatchItem` read only for its events: the command is left undecoded (readers that
    settle or show events do not need it, and decoding it would check it once more)."""

    input: InputRef
    cmd: msgspec.Raw
    events: list[Event]
    error: str | None = None


class MatchEntryEvents(msgspec.Struct, frozen=True, array_like=True, gc=False):
    pos: dict[str, int]
    items: list[MatchItemEvents]


class RiskItem(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One input of a risk shard: a command (its `ts` stamped) or one matching event."""

    input: InputRef
    ts: int
    cmd: rc.RiskCommand | None
    mev: Event | None
    events: list[RiskEvent]
    error: str | None = None


class RiskEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    pos: dict[str, int]
    items: list[RiskItem]


class SnapshotEnvelope(msgspec.Struct, frozen=True, array_like=True):
    """A shard's snapshot: its core's snapshot, its input positions and its clock."""

    v: int
    core: bytes
    pos: dict[str, int]
    ts: int


_enc = msgspec.msgpack.Encoder()
encode = _enc.encode


class _Decoder:
    def __init__(self, kind: Any, what: str) -> None:
        self._dec = msgspec.msgpack.Decoder(kind)
        self._what = what

    def __call__(self, data: bytes) -> Any:
        try:
            return self._dec.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as e:
            raise BadEntry(f"not a {self._what}: {e}") from None


decode_risk_command = _Decoder(rc.RiskCommand, "risk command")
decode_admin = _Decoder(AdminCommand, "admin command")
decode_to = _Decoder(ToEntry, "forwarded matching command")
decode_match_entry = _Decoder(MatchEntry, "matching log entry")
decode_match_events = _Decoder(MatchEntryEvents, "matching log entry")
decode_risk_entry = _Decoder(RiskEntry, "risk log entry")
decode_snapshot = _Decoder(SnapshotEnvelope, "shard snapshot")


def stamp(cmd: mc.Command | rc.RiskCommand, ts: int) -> None:
    """Set the time a shard logs a command with, in place.

    Commands are frozen structs; this is safe only on a command the caller has just decoded
    (or built) and shared with nobody yet, which is how both shards use it. A stamped copy
    (`msgspec.structs.replace`) would run the struct's checks again for every command on the
    hot path."""
    msgspec.structs.force_setattr(cmd, "ts", ts)

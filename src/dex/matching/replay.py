"""`dex engine replay`: run a JSON-lines command file through a fresh engine.

One JSON event per line on stdout; same input, byte-identical output. A bad line is reported on
stderr with its line number and field; by default nothing after it is applied (exit 2), with
`keep_going` it is skipped. `snapshot_every` snapshots and restores the engine every N commands,
which must not change the output (the audit check of snapshot/restore).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO, TextIO

import msgspec

from dex.core.commands import InputRef
from dex.core.errors import CommandError
from dex.core.markets import MarketParams
from dex.matching.engine import Engine
from dex.matching.textform import parse_line, render, to_command

STREAM = "replay"


def replay(
    lines: Iterable[bytes],
    out: BinaryIO,
    err: TextIO,
    *,
    keep_going: bool = False,
    snapshot_every: int = 0,
) -> int:
    """Replay `lines`; returns the exit status (0 ok, 2 at least one bad line)."""
    engine = Engine()
    encoder = msgspec.json.Encoder()
    params: dict[str, MarketParams] = {}
    status = 0
    applied = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            cmd = to_command(parse_line(raw), params)
            events = engine.apply(cmd, InputRef(STREAM, number))
        except CommandError as exc:
            err.write(f"line {number}: {exc.field}: {exc.message}\n")
            status = 2
            if keep_going:
                continue
            break
        if engine.markets.keys() != params.keys():
            params = {symbol: m.params for symbol, m in engine.markets.items()}
        for event in events:
            out.write(encoder.encode(render(event, params)))
            out.write(b"\n")
        applied += 1
        if snapshot_every and applied % snapshot_every == 0:
            engine = Engine.restore(engine.snapshot())
    return status

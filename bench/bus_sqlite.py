"""SqliteBus benchmark: appends per second, each one a committed (fsynced) transaction.

Run from the repository root with the package installed (`pip install -e .`):

    python bench/bus_sqlite.py                 # JSON on stdout
    python bench/bus_sqlite.py --seconds 1     # quicker
    python bench/bus_sqlite.py --dir /data     # put the file on the disk `dex up` will use

Workload: one `SqliteBus` in a fresh file (in `--dir`, default a temporary folder), unfenced
appends of batches of 1 and of 100 entries of 200 bytes each to one stream, each case run for
`--seconds`. "with also" adds `also=` with one 200-byte entry for each of 3 other streams
(a shard's log entry passing commands to other shards), all in the same transaction.
Figures: `appends_per_s` (committed batches), `entries_per_s` (entries of the main stream),
and the same workload on `MemoryBus` for comparison. Finally the time to reopen the file
(load every retained entry) is reported with the number of entries it held.
A figure only; nothing is asserted. It depends on the disk's fsync latency above all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dex.bus import Bus, MemoryBus
from dex.bus.sqlite import SqliteBus

ENTRY = b"e" * 200
ALSO_STREAMS = 3


async def run_case(bus: Bus, stream: str, batch: int, with_also: bool, seconds: float) -> float:
    """Append batches to `stream` for `seconds`; return committed appends per second."""
    entries = [ENTRY] * batch
    also = {f"{stream}:to:{i}": [ENTRY] for i in range(ALSO_STREAMS)} if with_also else None
    appends = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(10):
            await bus.append(stream, entries, also=also)
        appends += 10
    return appends / (time.perf_counter() - started)


async def measure(folder: Path, seconds: float) -> dict[str, Any]:
    path = folder / "bench-bus.sqlite3"
    cases: list[dict[str, Any]] = []
    sqlite_bus = SqliteBus(path)
    memory_bus = MemoryBus()
    try:
        for batch in (1, 100):
            for with_also in (False, True):
                stream = f"s{batch}{'a' if with_also else ''}"
                case: dict[str, Any] = {"batch": batch, "also": with_also}
                for name, bus in (("sqlite", sqlite_bus), ("memory", memory_bus)):
                    rate = await run_case(bus, stream, batch, with_also, seconds)
                    case[f"{name}_appends_per_s"] = round(rate)
                    case[f"{name}_entries_per_s"] = round(rate * batch)
                print(json.dumps(case), file=sys.stderr)
                cases.append(case)
    finally:
        sqlite_bus.close()
    started = time.perf_counter()
    SqliteBus(path).close()
    reopen_s = time.perf_counter() - started
    db = sqlite3.connect(path)
    (held,) = db.execute("SELECT count(*) FROM entries").fetchone()
    db.close()
    return {
        "cases": cases,
        "entry_bytes": len(ENTRY),
        "also_streams": ALSO_STREAMS,
        "seconds_per_case": seconds,
        "reopen_s": round(reopen_s, 3),
        "reopen_entries": held,
        "file_bytes": sum(f.stat().st_size for f in folder.glob(path.name + "*")),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each case")
    p.add_argument("--dir", type=Path, default=None, help="folder for the file (default: temp)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        result = asyncio.run(measure(Path(folder), args.seconds))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

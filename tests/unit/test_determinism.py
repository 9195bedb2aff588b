"""Same commands, byte-identical events: across processes, hash seeds and snapshot/restore."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from dex.core.commands import InputRef
from dex.matching.engine import Engine
from dex.matching.replay import replay
from dex.matching.textform import parse_line, to_command
from tests.streams import stream


def _write(path: Path, lines: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _replay_subprocess(path: Path, seed: str, *extra: str) -> bytes:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    done = subprocess.run(
        [sys.executable, "-m", "dex.cli", "engine", "replay", str(path), *extra],
        env=env,
        capture_output=True,
        check=True,
    )
    return done.stdout


def test_same_stream_gives_identical_bytes_across_hash_seeds(tmp_path: Path) -> None:
    path = _write(tmp_path / "cmds.jsonl", stream(seed=7, n=3000))
    first = _replay_subprocess(path, "1")
    second = _replay_subprocess(path, "2")
    assert first == second
    kinds = {json.loads(line)["event"] for line in first.splitlines()}
    assert {"trade", "triggered", "expired", "amended", "cancelled"} <= kinds


def test_snapshot_every_n_does_not_change_the_output(tmp_path: Path) -> None:
    path = _write(tmp_path / "cmds.jsonl", stream(seed=11, n=1500))
    plain, err = io.BytesIO(), io.StringIO()
    assert replay(path.read_bytes().splitlines(), plain, err) == 0, err.getvalue()
    for every in (1, 7, 250):
        out = io.BytesIO()
        assert replay(path.read_bytes().splitlines(), out, err, snapshot_every=every) == 0
        assert out.getvalue() == plain.getvalue()


def test_restore_at_random_points_gives_the_uninterrupted_run() -> None:
    lines = stream(seed=3, n=1200)
    rng = random.Random(5)

    def run(restore_at: set[int]) -> tuple[list[object], str]:
        engine = Engine()
        events: list[object] = []
        for number, line in enumerate(lines, start=1):
            params = {s: m.params for s, m in engine.markets.items()}
            cmd = to_command(parse_line(json.dumps(line)), params)
            events.extend(engine.apply(cmd, InputRef("t", number)))
            if number in restore_at:
                snap = engine.snapshot()
                engine = Engine.restore(snap)
                assert engine.snapshot() == snap
        return events, engine.state_hash()

    straight = run(set())
    points = set(rng.sample(range(1, len(lines)), 25))
    assert run(points) == straight

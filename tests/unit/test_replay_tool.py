"""The replay tool: bad lines, --keep-going, the CLI, admin commands."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dex.cli import main
from dex.matching.replay import replay
from tests.scenario import SETUP, cmd, place

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "basic.jsonl"


def _run(lines: list[object], **kw: object) -> tuple[int, list[dict[str, object]], str]:
    raw = [line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines]
    out, err = io.BytesIO(), io.StringIO()
    status = replay(raw, out, err, **kw)  # type: ignore[arg-type]
    return status, [json.loads(x) for x in out.getvalue().splitlines()], err.getvalue()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"{not json", "line 3: line: not valid JSON"),
        ({"cmd": "explode", "ts": 5}, "line 3: cmd: Invalid value 'explode'"),
        (
            {**place(5, "a", "buy", 100, 1), "price": 100},
            "line 3: price: Expected `str | null`, got `int`",
        ),
        (
            {**place(5, "a", "buy", 100, 1), "colour": "red"},
            "line 3: colour: Object contains unknown field",
        ),
        (
            place(5, "a", "buy", 100, 1) | {"price": "100.5"},
            "line 3: price: 100.5 is not a whole number of ticks of 1",
        ),
        (place(5, "a", "buy", 100, 1) | {"market": "X-Y"}, "line 3: market: unknown market 'X-Y'"),
        (place(1, "a", "buy", 100, 1), "line 3: ts: must be above the previous ts 2"),
        (place(5, "a", "buy", None, 1, tif="GTC"), "line 3: tif: a market order is IOC or FOK"),
        (
            {k: v for k, v in place(5, "a", "buy", 100, 1).items() if k != "side"},
            "line 3: side: Object missing",
        ),
        (
            cmd("amend", 5, account="a", order_id=1),
            "line 3: size: an amend needs a new price or a new size",
        ),
        (
            cmd("cancel", 5, account="a"),
            "line 3: order_id: order_id or client_order_id is required",
        ),
    ],
)
def test_bad_line_stops_with_status_2(bad: object, message: str) -> None:
    lines = [SETUP, place(2, "a", "sell", 100, 1), bad, place(9, "b", "buy", 100, 1)]
    status, events, err = _run(lines)
    assert status == 2
    assert err.startswith(message), err
    assert events[-1]["event"] == "accepted"  # nothing after the bad line was applied
    status, events, err = _run(lines, keep_going=True)
    assert status == 2
    assert [e["event"] for e in events[-3:]] == ["trade", "filled", "filled"]


def test_admin_lines_and_blank_lines() -> None:
    lines = [
        {"cmd": "add_asset", "symbol": "T", "decimals": 2},
        SETUP,
        b"   ",
        {"cmd": "add_asset", "symbol": "T", "decimals": 2},
    ]
    status, events, err = _run(lines, keep_going=True)
    assert status == 2 and "line 4: symbol: asset T is already registered" in err
    assert [e["event"] for e in events] == ["asset_added", "asset_added", "market_added"]
    assert events[0]["asset"] == {"symbol": "T", "decimals": 2}
    status, _, err = _run([SETUP, SETUP])
    assert status == 2 and "market T-USD already exists" in err


def test_cli_replays_the_documented_example() -> None:
    result = CliRunner().invoke(main, ["engine", "replay", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    kinds = [json.loads(line)["event"] for line in result.output.splitlines()]
    assert kinds.count("trade") == 1 and kinds[-1] == "cancelled"
    again = CliRunner().invoke(main, ["engine", "replay", "--snapshot-every", "1", str(EXAMPLE)])
    assert again.output == result.output


def test_cli_reports_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(SETUP) + "\n{}\n")
    result = CliRunner().invoke(main, ["engine", "replay", str(path)])
    assert result.exit_code == 2
    assert "line 2: cmd" in result.stderr

"""The `dex` command line against a stub HTTP server (what each command sends, how it shows
the reply): negative fee rates, replies that are not JSON or are errors (one line, non-zero
exit, no traceback), trader-facing tables and their `--json` form."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from click.testing import CliRunner

from dex.cli import main

ALICE = "0x" + "a" * 40


class Stub:
    """A real HTTP server on a free port: records each request, answers with `reply`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.reply: tuple[int, str, bytes] = (200, "application/json", b"{}")
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                stub.requests.append((self.command, self.path, json.loads(raw) if raw else None))
                status, ctype, body = stub.reply
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def json_reply(self, body: Any, status: int = 200) -> None:
        self.reply = (status, "application/json", json.dumps(body).encode())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    try:
        yield s
    finally:
        s.close()


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def admin(stub: Stub, *args: str) -> Any:
    return run("admin", "--matching-url", stub.url, "--risk-url", stub.url, *args)


def test_fees_take_negative_rates_as_plain_arguments(stub: Stub) -> None:
    stub.json_reply({"accepted": True})
    got = admin(stub, "fees", "ETH-USDC", "-5", "10")
    assert got.exit_code == 0, got.output
    assert stub.requests == [
        ("POST", "/admin/fees", {"market": "ETH-USDC", "maker_bps": -5, "taker_bps": 10})
    ]
    got = admin(stub, "fees", "ETH-USDC", "-2", "-1")
    assert got.exit_code == 0, got.output
    assert stub.requests[-1][2] == {"market": "ETH-USDC", "maker_bps": -2, "taker_bps": -1}
    # an option that is really unknown, or a rate that is not a number, is still refused
    got = admin(stub, "fees", "ETH-USDC", "-5x", "10")
    assert got.exit_code == 2 and "-5x" in got.output
    assert len(stub.requests) == 2


@pytest.mark.parametrize(
    "reply",
    [
        (502, "text/html", b"<html>Bad Gateway</html>\n<body>upstream died</body>"),
        (200, "text/plain", b"not json at all\nsecond line"),
        (500, "application/json", b"{truncated"),
    ],
)
def test_a_reply_that_is_not_json_is_one_line_and_a_failure(
    stub: Stub, reply: tuple[int, str, bytes]
) -> None:
    stub.reply = reply
    for args in (("halt",), ("credit", ALICE, "USDC", "5")):
        got = admin(stub, *args)
        assert got.exit_code == 1, got.output
        assert isinstance(got.exception, SystemExit), got.exception  # not a traceback
        lines = got.output.strip().splitlines()
        assert len(lines) == 1, got.output
        assert str(reply[0]) in lines[0]
        assert reply[2].decode().splitlines()[0][:20] in lines[0]
    got = run("balances", ALICE, "--persistence-url", stub.url)
    assert got.exit_code == 1 and len(got.output.strip().splitlines()) == 1, got.output


def test_an_error_reply_prints_its_reason_on_one_line_and_fails(stub: Stub) -> None:
    error = {"code": "unknown_market", "message": "no market 'NOPE-USDC'", "field": "market"}
    stub.json_reply({"error": error}, status=404)
    got = admin(stub, "market-status", "NOPE-USDC", "halted")
    assert got.exit_code == 1
    lines = got.output.strip().splitlines()
    assert len(lines) == 1 and "404" in lines[0], got.output
    assert "unknown_market" in lines[0] and "no market 'NOPE-USDC'" in lines[0]
    # --json: the body as the server sent it, still a failure
    got = run("admin", "--json", "--matching-url", stub.url, "market-status", "NOPE-USDC", "halted")
    assert got.exit_code == 1 and json.loads(got.output) == {"error": error}


def test_an_unreachable_server_is_one_line_and_a_failure() -> None:
    got = run("balances", ALICE, "--persistence-url", "http://127.0.0.1:9")
    assert got.exit_code == 1 and len(got.output.strip().splitlines()) == 1, got.output


BALANCES = {
    "account": ALICE,
    "balances": [
        {"asset": "ETH", "available_units": 1500000000, "locked_units": 250000000},
        {"asset": "USDC", "available_units": 7000000, "locked_units": 0},
    ],
}
ORDERS = {
    "account": ALICE,
    "orders": [
        {"order_id": 281474976710657, "market": "ETH-USDC", "side": "buy", "status": "open"},
        {"order_id": 281474976710658, "market": "BTC-USDC", "side": "sell", "status": "filled"},
    ],
}
SHARDS = {
    "owner": "host-1",
    "shards": {
        "me0": {"owner": "host-1", "epoch": 3, "log_seq": 41, "recovered": True},
        "me1": {"owner": "host-1", "epoch": 2, "log_seq": 17, "recovered": True},
    },
}


def _cells(output: str) -> list[list[str]]:
    """The table's rows as lists of cell texts (box characters dropped)."""
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.replace("│", "|").replace("┃", "|").split("|")]
        cells = [c for c in cells if c]
        if any(ch.isalnum() for ch in "".join(cells)):  # not a border line
            rows.append(cells)
    return rows


@pytest.mark.parametrize(
    ("args", "path", "body", "expected"),
    [
        (
            ("balances", ALICE),
            f"/v1/accounts/{ALICE}/balances",
            BALANCES,
            [
                ["asset", "available_units", "locked_units"],
                ["ETH", "1500000000", "250000000"],
                ["USDC", "7000000", "0"],
            ],
        ),
        (
            ("orders", ALICE),
            f"/v1/accounts/{ALICE}/orders",
            ORDERS,
            [
                ["order_id", "market", "side", "status"],
                ["281474976710657", "ETH-USDC", "buy", "open"],
                ["281474976710658", "BTC-USDC", "sell", "filled"],
            ],
        ),
    ],
)
def test_balances_and_orders_print_a_table_or_the_raw_json(
    stub: Stub, args: tuple[str, ...], path: str, body: Any, expected: list[list[str]]
) -> None:
    stub.json_reply(body)
    got = run(*args, "--persistence-url", stub.url)
    assert got.exit_code == 0, got.output
    assert stub.requests[-1][:2] == ("GET", path)
    assert got.output.lstrip().startswith(("┏", "╭", "+", "┌")) or "━" in got.output
    rows = _cells(got.output)
    assert rows[-len(expected) :] == expected, got.output
    got = run(*args, "--persistence-url", stub.url, "--json")
    assert got.exit_code == 0 and json.loads(got.output) == body


def test_shards_print_one_row_per_shard_of_each_service(stub: Stub) -> None:
    stub.json_reply(SHARDS)
    got = run("shards", "--matching-url", stub.url, "--risk-url", stub.url)
    assert got.exit_code == 0, got.output
    assert [r[:2] for r in stub.requests] == [("GET", "/internal/shards")] * 2
    rows = _cells(got.output)
    assert ["service", "shard", "owner", "epoch", "log_seq", "recovered"] in rows, got.output
    for service in ("matching-engine", "risk-engine"):
        assert [service, "me0", "host-1", "3", "41", "True"] in rows, got.output
        assert [service, "me1", "host-1", "2", "17", "True"] in rows, got.output
    got = run("shards", "--matching-url", stub.url, "--risk-url", stub.url, "--json")
    assert got.exit_code == 0
    assert json.loads(got.output) == {"matching-engine": SHARDS, "risk-engine": SHARDS}


def test_serve_help_promises_no_files_that_do_not_exist() -> None:
    got = run("serve", "--help")
    assert got.exit_code == 0
    assert "Dockerfile" not in got.output
    assert "container" in got.output

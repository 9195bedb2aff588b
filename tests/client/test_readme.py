"""The README's quick start is true: its trading example runs as written against an embedded
exchange (only the base URL changed to the test's) and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from decimal import Decimal
from pathlib import Path

from tests.client.conftest import Exchange
from tests.support.trading import trader

README = Path(__file__).resolve().parents[2] / "README.md"
BASE = "http://127.0.0.1:8080"  # the address `make run` prints, as the README writes it


def quick_start_example() -> str:
    """The first Python block of the README's "Quick start" section."""
    section = README.read_text(encoding="utf-8").split("\n## Quick start\n", 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def said(example: str, call: str) -> str:
    """The comment on the example's line that prints `call`."""
    (line,) = [x for x in example.splitlines() if x.startswith(f"print({call}")]
    return line.split("#", 1)[1].strip()


def test_the_readme_trading_example_runs_and_prints_what_its_comments_say(
    exchange: Exchange,
) -> None:
    example = quick_start_example()
    assert BASE in example, "the example no longer talks to the address make run prints"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example.replace(BASE, exchange.url), str(README), "exec"), {})
    outcome, balances = out.getvalue().splitlines()

    # print(order.status, order.filled, order.remaining)  # the engine's outcome: open ...
    assert outcome == said(example, "order.status").split(": ", 1)[1]

    # print(client.balances())  # USDC: <available> available, <locked> locked
    claim = re.fullmatch(r"(\w+): ([\d.]+) available, ([\d.]+) locked", said(example, "client"))
    assert claim is not None, said(example, "client")
    asset, available, locked = claim.groups()
    shown = re.search(
        rf"asset='{asset}', available=Decimal\('([\d.]+)'\), locked=Decimal\('([\d.]+)'\)",
        balances,
    )
    assert shown is not None, balances
    assert (Decimal(shown[1]), Decimal(shown[2])) == (Decimal(available), Decimal(locked))


def ccxt_example() -> str:
    """The Python block of the README's "Trading with CCXT" section."""
    section = README.read_text(encoding="utf-8").split("\n### Trading with CCXT", 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def test_the_readme_ccxt_example_runs_as_written(exchange: Exchange) -> None:
    """With KEY and SECRET those of a funded HMAC key, the CCXT block places its order."""
    client = trader(exchange.url, USDC="1000")
    assert client.credentials is not None and client.credentials.secret is not None
    example = ccxt_example()
    assert BASE in example and "ws://127.0.0.1:8080" in example
    ws = exchange.url.replace("http://", "ws://")
    code = example.replace(BASE, exchange.url).replace("ws://127.0.0.1:8080", ws)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(
            compile(code, str(README), "exec"),
            {"KEY": client.credentials.api_key, "SECRET": client.credentials.secret},
        )
    (order,) = client.orders(status="open", market="ETH-USDC").items
    assert (order.side, order.size, order.price) == ("buy", Decimal("0.1"), Decimal("1990"))
    assert "'free': 1000.0" in out.getvalue(), out.getvalue()


def test_the_readme_and_docs_stand_on_their_own() -> None:
    """No README or document of the repository points outside it (to `../shared` and the like):
    what a reader needs is written here."""
    root = README.parent
    pages = [README, *root.glob("docs/**/*.md"), *root.glob("infra/**/*.md")]
    pages += [*root.glob("bench/**/*.md")]
    outside = [
        f"{page.relative_to(root)}:{n}"
        for page in pages
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\.\./shared|(?<![\w.])shared/(seed|notes|DESIGN|STYLE)", line)
    ]
    assert len(pages) > 5 and outside == []

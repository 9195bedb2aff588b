"""The `dex` command line."""

from __future__ import annotations

import sys
from typing import IO

import click


@click.group()
@click.version_option(package_name="dex")
def main() -> None:
    """DEX backend: order book, risk ledger and services."""


@main.group()
def engine() -> None:
    """The matching engine's offline tools."""


@engine.command("replay")
@click.argument("commands", type=click.File("rb"))
@click.option(
    "--keep-going", is_flag=True, help="Report a bad line and skip it instead of stopping."
)
@click.option(
    "--snapshot-every",
    type=click.IntRange(min=0),
    default=0,
    help="Snapshot and restore the engine every N commands (the output must not change).",
)
def replay_cmd(commands: IO[bytes], keep_going: bool, snapshot_every: int) -> None:
    """Apply COMMANDS.jsonl (one JSON command per line; - for stdin) and print the events."""
    from dex.matching.replay import replay

    out = sys.stdout.buffer
    status = replay(commands, out, sys.stderr, keep_going=keep_going, snapshot_every=snapshot_every)
    out.flush()
    sys.exit(status)


if __name__ == "__main__":
    main()

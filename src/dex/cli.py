"""The `dex` command line."""

from __future__ import annotations

import json
import sys
from typing import IO, Any, NoReturn

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


# ---------------------------------------------------------------------- running the services


def _settings(**overrides: object) -> Any:
    from dex.runtime.settings import SettingsError, load_settings

    try:
        return load_settings(None, **{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@main.command("up")
@click.option("--distributed", is_flag=True, help="Five processes over Redis (DEX_REDIS_URL).")
@click.option(
    "--replicas",
    multiple=True,
    metavar="SERVICE=N",
    help="Replicas of a service with --distributed, e.g. matching-engine=2 (repeatable).",
)
@click.option("--data-dir", default=None, help="Data folder of the embedded mode.")
@click.option(
    "--allow-unsafe-redis",
    is_flag=True,
    default=None,
    help="Accept a Redis without appendonly yes / appendfsync always.",
)
def up_cmd(
    distributed: bool,
    replicas: tuple[str, ...],
    data_dir: str | None,
    allow_unsafe_redis: bool | None,
) -> None:
    """Start the whole exchange: embedded (default) or --distributed."""
    from dex.app import launch

    settings = _settings(data_dir=data_dir, allow_unsafe_redis=allow_unsafe_redis)
    launch.configure(settings, "dex")
    if distributed:
        counts = launch.parse_replicas(replicas)
        sys.exit(launch.run_distributed(settings, counts))
    sys.exit(launch.run_embedded(settings))


@main.command("serve")
@click.argument(
    "service",
    type=click.Choice(["gateway", "matching-engine", "market-data", "risk-engine", "persistence"]),
)
def serve_cmd(service: str) -> None:
    """Run one service against Redis (DEX_REDIS_URL): what each container of a deployment
    runs."""
    from dex.app import launch

    settings = _settings()
    launch.configure(settings, service)
    sys.exit(launch.run_service(settings, service))


@main.group("config")
def config_group() -> None:
    """The settings (DEX_* environment variables)."""


@config_group.command("check")
@click.option(
    "--service",
    type=click.Choice(["gateway", "matching-engine", "market-data", "risk-engine", "persistence"]),
    default=None,
    help="Also check what a deployed `dex serve SERVICE` needs (Redis, PostgreSQL, production).",
)
def config_check_cmd(service: str | None) -> None:
    """Check the environment's settings: one line per problem on stderr, exit 1 if any."""
    from dex.runtime.settings import settings_problems

    problems = settings_problems(None, service=service)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"config ok{f' for {service}' if service else ''}")


# ---------------------------------------------------------------------- talking to a server


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "(empty body)"
    return line if len(line) <= limit else line[:limit] + "..."


def _call(
    method: str, url: str, *, body: object = None, token: str | None = None, raw: bool = False
) -> Any:
    """One request; its JSON reply. An unreachable server, an error status or a reply that is
    not JSON: one line on stderr and exit 1 (`raw`: an error's JSON body on stdout instead)."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.request(method, url, json=body, headers=headers, timeout=30)
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        _fail(f"{url}: {type(e).__name__}: {e}")
    try:
        data = resp.json()
    except ValueError:
        _fail(f"HTTP {resp.status_code} from {url}, not JSON: {_first_line(resp.text)}")
    if resp.status_code < 400:
        return data
    if raw:
        click.echo(json.dumps(data, indent=2))
        sys.exit(1)
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and "code" in err:
        field = f" (field: {err['field']})" if err.get("field") else ""
        _fail(f"HTTP {resp.status_code} {err['code']}: {err.get('message', '')}{field}")
    _fail(f"HTTP {resp.status_code} from {url}: {_first_line(resp.text)}")


def _cell(value: Any) -> Any:
    from rich.text import Text

    if value is None:
        return Text("")
    if isinstance(value, (dict, list)):
        return Text(json.dumps(value, separators=(",", ":")))
    return Text(str(value))


def _print_table(title: str, rows: list[dict[str, Any]], first: tuple[str, ...] = ()) -> None:
    """`rows` as a table: the `first` columns, then every other key in the order seen."""
    from rich.console import Console
    from rich.table import Table

    columns = list(dict.fromkeys([*first, *(k for r in rows for k in r)]))
    table = Table(title=title, title_justify="left")
    for c in columns:
        numeric = all(isinstance(r.get(c), int) and not isinstance(r.get(c), bool) for r in rows)
        table.add_column(c, justify="right" if rows and numeric else "left")
    for r in rows:
        table.add_row(*(_cell(r.get(c)) for c in columns))
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the columns into 80 characters
        console = Console(width=max(console.width, 200))
    console.print(table)


def _show(body: Any, key: str, title: str, as_json: bool) -> None:
    rows = body.get(key) if isinstance(body, dict) else body
    if as_json or not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        click.echo(json.dumps(body, indent=2))
    else:
        _print_table(title, rows)


# ---------------------------------------------------------------------- trader-facing views

_json_option = click.option("--json", "as_json", is_flag=True, help="Print the raw JSON reply.")
# an operator's view of any account: persistence's internal API (the public gateway answers
# only an API key's own account)
_persistence_option = click.option(
    "--persistence-url",
    envvar="DEX_PERSISTENCE_URL",
    default="http://127.0.0.1:8084",
    show_default=True,
    help="Persistence's internal API (DEX_PERSISTENCE_URL).",
)


@main.command("balances")
@click.argument("account")
@_persistence_option
@_json_option
def balances_cmd(account: str, persistence_url: str, as_json: bool) -> None:
    """An account's balances as a table (operators: any account, from persistence)."""
    url = f"{persistence_url.rstrip('/')}/v1/accounts/{account}/balances"
    _show(_call("GET", url), "balances", f"balances of {account}", as_json)


@main.command("orders")
@click.argument("account")
@_persistence_option
@_json_option
def orders_cmd(account: str, persistence_url: str, as_json: bool) -> None:
    """An account's latest orders as a table (operators: any account, from persistence)."""
    url = f"{persistence_url.rstrip('/')}/v1/accounts/{account}/orders"
    _show(_call("GET", url), "orders", f"orders of {account}", as_json)


@main.command("shards")
@click.option("--matching-url", default="http://127.0.0.1:8081", show_default=True)
@click.option("--risk-url", default="http://127.0.0.1:8083", show_default=True)
@_json_option
def shards_cmd(matching_url: str, risk_url: str, as_json: bool) -> None:
    """The shards each service's replica writes: owner, lease epoch, log position."""
    got = {
        service: _call("GET", f"{url.rstrip('/')}/internal/shards")
        for service, url in (("matching-engine", matching_url), ("risk-engine", risk_url))
    }
    if as_json:
        click.echo(json.dumps(got, indent=2))
        return
    rows = [
        {"service": service, "shard": tag, **info}
        for service, body in got.items()
        for tag, info in sorted((body.get("shards") or {}).items())
    ]
    _print_table("shards", rows, first=("service", "shard"))


# ---------------------------------------------------------------------- operators


@main.group("db")
def db() -> None:
    """The history store's schema: DEX_DATABASE_URL, or when unset the embedded mode's SQLite
    file under the data folder (DEX_DATA_DIR, --data-dir)."""


_data_dir_option = click.option(
    "--data-dir", default=None, help="Data folder of the embedded mode (DEX_DATA_DIR)."
)


def _history(data_dir: str | None) -> str:
    from dex.persistence.store import history_url

    settings = _settings(data_dir=data_dir)
    return str(history_url(settings.database_url, settings.data_dir))


def _on_store(url: str, work: Any) -> Any:
    """`work(connection)` in one transaction on the store; a store that cannot be reached or
    migrated: one line on stderr and exit 1."""
    import asyncio

    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from dex.persistence.migrations import UnknownSchema
    from dex.persistence.store import run_sync

    try:
        return asyncio.run(run_sync(url, work))
    except (SQLAlchemyError, OSError, UnknownSchema, CommandError, ValueError) as e:
        _fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _revision(revision: str | None, head: str) -> str:
    return f"{revision} (head)" if revision == head else f"{revision} (head is {head})"


@db.command("upgrade")
@_data_dir_option
def db_upgrade_cmd(data_dir: str | None) -> None:
    """Migrate the history store to the newest revision (what persistence does at start). A
    store made before migrations is stamped at the first revision, then upgraded."""
    from dex.persistence import migrations

    url = _history(data_dir)

    def work(conn: Any) -> tuple[str | None, str | None]:
        return migrations.current(conn), migrations.upgrade(conn)

    before, after = _on_store(url, work)
    head = migrations.head()
    if before == after:
        click.echo(f"up to date: {_revision(after, head)}")
    else:
        click.echo(f"upgraded: {before or 'none'} -> {_revision(after, head)}")


@db.command("current")
@_data_dir_option
def db_current_cmd(data_dir: str | None) -> None:
    """Print the history store's revision: `<revision> (head)` when it is up to date, `none`
    for an empty store or one made before migrations (then run `dex db upgrade`)."""
    from dex.persistence import migrations
    from dex.persistence.store import sqlite_file

    url = _history(data_dir)
    path = sqlite_file(url)
    if path is not None and not path.exists():
        click.echo(f"none (no store at {path}: dex db upgrade creates it)")
        return

    def work(conn: Any) -> tuple[str | None, bool]:
        return migrations.current(conn), migrations.unversioned(conn)

    revision, unversioned = _on_store(url, work)
    head = migrations.head()
    if revision is None:
        why = "made before migrations" if unversioned else "empty"
        click.echo(f"none ({why}: dex db upgrade brings it to {head})")
    else:
        click.echo(_revision(revision, head))


@db.command("verify")
@_data_dir_option
@click.option(
    "--snapshots/--no-snapshots",
    default=True,
    show_default=True,
    help="Also compare with the risk shards' latest snapshots on the bus (DEX_REDIS_URL, or "
    "the data folder's bus file when DEX_DATABASE_URL is unset).",
)
def db_verify_cmd(data_dir: str | None, snapshots: bool) -> None:
    """Reconcile the history store: each account's available and locked per asset recomputed
    from the ledger entries against the balances table and against the risk shards' latest
    snapshots, every event's entries summing to zero per asset, conservation per asset
    (balances and clearing = deposits - withdrawals), every trade's clearing back to zero. A
    table of the differences and exit 1 if there is any."""
    from dex.persistence import migrations
    from dex.persistence.store import sqlite_file
    from dex.persistence.verify import Difference, against_snapshots, risk_shards, verify

    settings = _settings(data_dir=data_dir)
    url = _history(data_dir)
    path = sqlite_file(url)
    if path is not None and not path.exists():
        _fail(f"no store at {path}")

    def work(conn: Any) -> tuple[str | None, list[Difference] | None, list[int]]:
        revision = migrations.current(conn)
        if revision != migrations.head():
            return revision, None, []
        return revision, verify(conn), risk_shards(conn)

    revision, found, shards = _on_store(url, work)
    if found is None:
        _fail(f"the store is at {revision or 'none'}, not {migrations.head()}: dex db upgrade")
    notes: list[str] = []
    if snapshots:
        got, why = _risk_snapshots(settings, shards)
        if got is None:
            notes.append(f"risk snapshots not compared: {why}")
        else:
            more, said = _on_store(url, lambda conn: against_snapshots(conn, got))
            found += more
            notes += said
    for note in notes:
        click.echo(f"note: {note}")
    if not found:
        click.echo("verified: the ledger, the balances and the flows agree")
        return
    rows = [
        {
            "check": d.check,
            "account": d.account,
            "asset": d.asset,
            "expected": d.expected,
            "found": d.found,
            "where": d.where,
        }
        for d in found
    ]
    _print_table(f"{len(found)} difference(s)", rows)
    sys.exit(1)


def _risk_snapshots(settings: Any, shards: list[int]) -> tuple[Any, str]:
    """The risk shards' latest snapshots (`read_snapshots`), from Redis when the store is
    PostgreSQL's (DEX_DATABASE_URL) and DEX_REDIS_URL is set, else from the data folder's bus
    file; (None, why) when there is no bus to read. Redis unreachable: exit 1."""
    import asyncio
    from pathlib import Path

    from dex.persistence.verify import read_snapshots

    if settings.database_url:
        if not settings.redis_url:
            return None, "DEX_REDIS_URL is not set"
        from redis.exceptions import RedisError

        from dex.bus.redis import RedisBus

        async def from_redis() -> Any:
            bus = RedisBus(settings.redis_url)
            try:
                return await read_snapshots(bus, shards)
            finally:
                await bus.close()

        try:
            return asyncio.run(from_redis()), ""
        except (OSError, RedisError) as e:
            _fail(f"DEX_REDIS_URL: cannot read the risk snapshots: {e}")
    from dex.bus.sqlite import BusFileError, SqliteBus

    path = Path(settings.data_dir) / "bus.sqlite3"
    if not path.exists():
        return None, f"no bus file at {path}"
    try:
        bus = SqliteBus(path)
    except BusFileError as e:
        return None, f"{e} (is dex up running?)"
    try:
        return asyncio.run(read_snapshots(bus, shards)), ""
    finally:
        bus.close()


@main.group("admin")
@click.option(
    "--token", envvar="DEX_ADMIN_TOKEN", default="", help="Admin token (DEX_ADMIN_TOKEN)."
)
@click.option("--matching-url", default="http://127.0.0.1:8081", show_default=True)
@click.option("--risk-url", default="http://127.0.0.1:8083", show_default=True)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="On an error reply, print the server's JSON body instead of one line.",
)
@click.pass_context
def admin(ctx: click.Context, token: str, matching_url: str, risk_url: str, as_json: bool) -> None:
    """Operator controls: markets, snapshots, kill switches, test funds.

    Each prints the server's JSON answer; a refusal prints one line with its reason (or,
    with --json, the JSON body) and exits 1."""
    ctx.obj = {
        "token": token,
        "matching": matching_url.rstrip("/"),
        "risk": risk_url.rstrip("/"),
        "json": as_json,
    }


def _admin_call(ctx: click.Context, service: str, path: str, body: object = None) -> None:
    got = _call(
        "POST", ctx.obj[service] + path, body=body, token=ctx.obj["token"], raw=ctx.obj["json"]
    )
    click.echo(json.dumps(got, indent=2))


@admin.command("add-market")
@click.argument("spec_json")
@click.pass_context
def admin_add_market(ctx: click.Context, spec_json: str) -> None:
    """Add a market: SPEC_JSON like {"market": "SOL-USDC", "base": "SOL", ...}."""
    try:
        spec = json.loads(spec_json)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e}") from None
    _admin_call(ctx, "matching", "/admin/markets", spec)


@admin.command("market-status")
@click.argument("market")
@click.argument("status", type=click.Choice(["active", "post_only", "cancel_only", "halted"]))
@click.pass_context
def admin_market_status(ctx: click.Context, market: str, status: str) -> None:
    """Set a market's status."""
    _admin_call(ctx, "matching", f"/admin/markets/{market}/status", {"status": status})


@admin.command("snapshot")
@click.pass_context
def admin_snapshot(ctx: click.Context) -> None:
    """Snapshot every matching shard of the replica now."""
    _admin_call(ctx, "matching", "/admin/snapshot")


@admin.command("freeze")
@click.argument("account")
@click.pass_context
def admin_freeze(ctx: click.Context, account: str) -> None:
    """Freeze an account (no trading, no withdrawals; its orders are cancelled)."""
    _admin_call(ctx, "risk", f"/admin/accounts/{account}/freeze")


@admin.command("unfreeze")
@click.argument("account")
@click.pass_context
def admin_unfreeze(ctx: click.Context, account: str) -> None:
    """Unfreeze an account."""
    _admin_call(ctx, "risk", f"/admin/accounts/{account}/unfreeze")


@admin.command("disable")
@click.argument("account")
@click.option("--market", default=None)
@click.pass_context
def admin_disable(ctx: click.Context, account: str, market: str | None) -> None:
    """Disable trading for an account (on one market, or all)."""
    _admin_call(ctx, "risk", f"/admin/accounts/{account}/disable", {"market": market})


@admin.command("enable")
@click.argument("account")
@click.option("--market", default=None)
@click.pass_context
def admin_enable(ctx: click.Context, account: str, market: str | None) -> None:
    """Enable trading again."""
    _admin_call(ctx, "risk", f"/admin/accounts/{account}/enable", {"market": market})


@admin.command("halt")
@click.pass_context
def admin_halt(ctx: click.Context) -> None:
    """Global halt: no new orders, amends or withdrawals anywhere."""
    _admin_call(ctx, "risk", "/admin/halt")


@admin.command("resume")
@click.pass_context
def admin_resume(ctx: click.Context) -> None:
    """End a global halt."""
    _admin_call(ctx, "risk", "/admin/resume")


@admin.command("credit")
@click.argument("account")
@click.argument("asset")
@click.argument("amount")
@click.option(
    "--tx-id",
    default=None,
    help="The chain transaction of a deposit credited by hand (default: a new test-funds id).",
)
@click.option(
    "--log-index", type=click.IntRange(min=0), default=0, show_default=True, help="With --tx-id."
)
@click.pass_context
def admin_credit(
    ctx: click.Context, account: str, asset: str, amount: str, tx_id: str | None, log_index: int
) -> None:
    """Credit funds (where the environment allows the faucet) and print the ledger's answer.

    A deposit is credited once per (tx id, log index): crediting the same --tx-id again is
    refused as a duplicate (exit 1)."""
    body: dict[str, object] = {"asset": asset, "amount": amount}
    if tx_id is not None:
        body |= {"tx_id": tx_id, "log_index": log_index}
    _admin_call(ctx, "risk", f"/admin/accounts/{account}/credit", body)


@admin.command("fees", context_settings={"ignore_unknown_options": True})
@click.argument("market")
@click.argument("maker_bps", type=int)
@click.argument("taker_bps", type=int)
@click.pass_context
def admin_fees(ctx: click.Context, market: str, maker_bps: int, taker_bps: int) -> None:
    """Set a market's maker and taker fee rates (basis points).

    A negative rate (a maker rebate) is written as it is, no quoting or "--" needed:

    \b
        dex admin fees ETH-USDC -5 10"""
    _admin_call(
        ctx,
        "risk",
        "/admin/fees",
        {"market": market, "maker_bps": maker_bps, "taker_bps": taker_bps},
    )


@admin.command("limits")
@click.argument("account")
@click.option("--max-open-orders", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--max-notional", multiple=True, metavar="ASSET=AMOUNT", help="Per quote asset.")
@click.pass_context
def admin_limits(
    ctx: click.Context, account: str, max_open_orders: int, max_notional: tuple[str, ...]
) -> None:
    """Set an account's limits (0 / none: no limit)."""
    notional = {}
    for spec in max_notional:
        asset, sep, amount = spec.partition("=")
        if not sep:
            raise click.BadParameter(
                f"{spec!r}: expected ASSET=AMOUNT", param_hint="--max-notional"
            )
        notional[asset] = amount
    body = {"max_open_orders": max_open_orders, "max_order_notional": notional}
    _admin_call(ctx, "risk", f"/admin/accounts/{account}/limits", body)


if __name__ == "__main__":
    main()

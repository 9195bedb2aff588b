"""The `dex` command line."""

from __future__ import annotations

import sys
from typing import IO, Any

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
    from dex.services import launch

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
    """Run one service against Redis (DEX_REDIS_URL), as the Dockerfiles do."""
    from dex.services import launch

    settings = _settings()
    launch.configure(settings, service)
    sys.exit(launch.run_service(settings, service))


@main.group("admin")
@click.option(
    "--token", envvar="DEX_ADMIN_TOKEN", default="", help="Admin token (DEX_ADMIN_TOKEN)."
)
@click.option("--matching-url", default="http://127.0.0.1:8081", show_default=True)
@click.option("--risk-url", default="http://127.0.0.1:8083", show_default=True)
@click.pass_context
def admin(ctx: click.Context, token: str, matching_url: str, risk_url: str) -> None:
    """Operator controls: markets, snapshots, kill switches, test funds."""
    ctx.obj = {"token": token, "matching": matching_url.rstrip("/"), "risk": risk_url.rstrip("/")}


def _admin_call(ctx: click.Context, service: str, path: str, body: object = None) -> None:
    import json

    import httpx

    url = ctx.obj[service] + path
    try:
        resp = httpx.post(
            url, json=body, headers={"Authorization": f"Bearer {ctx.obj['token']}"}, timeout=10
        )
    except httpx.HTTPError as e:
        click.echo(f"error: {url}: {type(e).__name__}: {e}", err=True)
        sys.exit(1)
    click.echo(json.dumps(resp.json(), indent=2))
    if resp.status_code >= 400:
        sys.exit(1)


@admin.command("add-market")
@click.argument("spec_json")
@click.pass_context
def admin_add_market(ctx: click.Context, spec_json: str) -> None:
    """Add a market: SPEC_JSON like {"market": "SOL-USDC", "base": "SOL", ...}."""
    import json

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
@click.pass_context
def admin_credit(ctx: click.Context, account: str, asset: str, amount: str) -> None:
    """Credit test funds (where the environment allows the faucet)."""
    _admin_call(
        ctx, "risk", f"/admin/accounts/{account}/credit", {"asset": asset, "amount": amount}
    )


@admin.command("fees")
@click.argument("market")
@click.argument("maker_bps", type=int)
@click.argument("taker_bps", type=int)
@click.pass_context
def admin_fees(ctx: click.Context, market: str, maker_bps: int, taker_bps: int) -> None:
    """Set a market's maker and taker fee rates (basis points)."""
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

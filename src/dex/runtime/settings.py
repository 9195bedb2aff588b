"""Service settings: one frozen `Settings` read from `DEX_*` environment variables.

Owns the setting names, defaults and rules every service shares, the service names and their
default ports. `load_settings` is the gate: it reads `DEX_<FIELD>` for each field, lets typed
overrides (CLI flags) win, checks each value in field order and then the cross-field rules,
and raises `SettingsError` naming the first bad variable; `settings_problems` returns every
problem instead (`dex config check`, the container entrypoint's gate). Unknown `DEX_*` variables are
ignored. Messages never echo a URL, a token or other free text that may hold a secret, so they
are safe to log. `Settings(...)` built directly in code (tests) is trusted and not checked.
Each default is written once, on its field: a service constructor that needs one takes it from
`DEFAULTS` (`Settings()`), and `dex.app.units` passes the loaded value.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from typing import Literal, get_args, get_origin

import msgspec

SERVICES: tuple[str, ...] = (
    "gateway",
    "matching-engine",
    "market-data",
    "risk-engine",
    "persistence",
)
DEFAULT_PORTS: dict[str, int] = {
    "gateway": 8080,
    "matching-engine": 8081,
    "market-data": 8082,
    "risk-engine": 8083,
    "persistence": 8084,
}
ENV_PREFIX = "DEX_"


class SettingsError(Exception):
    """A setting is invalid; `str(e)` is one line: `<VAR>: <what is wrong>`."""

    def __init__(self, var: str, message: str) -> None:
        super().__init__(f"{var}: {message}")
        self.var = var
        self.message = message


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every runtime setting; the env var of a field is `DEX_` + its name in upper case."""

    env: Literal["dev", "test", "production"] = "dev"
    host: str = "127.0.0.1"
    port: int = 0  # 0: the service's default port (DEFAULT_PORTS)
    redis_url: str = ""  # empty: the in-memory bus
    database_url: str = ""  # empty: SQLite under data_dir
    persistence_url: str = ""  # base URL of persistence's API; empty: host + default port
    market_data_url: str = ""  # base URL of market-data's API; empty: host + default port
    data_dir: str = "./.dex-data"
    matching_shards: int = 2
    risk_shards: int = 2
    max_shards_per_replica: int = 0  # 0: no limit
    lease_ttl_ms: int = 3000
    snapshot_every: int = 10000  # inputs between two snapshots (more for a large state)
    snapshot_fork: bool = True  # periodic snapshots serialized by a forked child process
    snapshot_child_timeout_ms: int = 600_000  # a forked snapshot taking longer is killed
    max_lag: int = 10000
    batch_size: int = 1000
    admin_token: str = ""  # empty: admin endpoints refuse everything
    faucet: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # library loggers (uvicorn, httpx, litestar, asyncio, ...): this level or log_level,
    # whichever is higher
    library_log_level: Literal["debug", "info", "warning", "error"] = "warning"
    replica_id: str = ""  # empty: hostname-pid
    idle_check_ms: int = 5000
    stop_timeout_ms: int = 10000
    allow_unsafe_redis: bool = False
    gateway_wait_ms: int = 10_000  # a request waits this long for its outcome, then 504
    gateway_outcomes_kept: int = 50_000  # outcomes kept for waiters that register late
    gateway_proxy_timeout_ms: int = 5000  # the gateway's reads of persistence and market data
    admin_credit_wait_ms: int = 10_000  # an admin credit waits this long for risk's answer
    market_data_recent_trades: int = 1000  # trades kept per market: the most a query returns
    market_data_max_levels: int = 1000  # the most levels per side a depth query returns
    market_data_feed_keep: int = 10_000  # entries each market's feed stream keeps on the bus
    persistence_max_limit: int = 1000  # the most rows a history query returns
    sqlite_busy_timeout_ms: int = 5000  # persistence on SQLite: how long to wait for a lock
    ws_ping_ms: int = 20_000  # WebSocket ping period; no pong within as long closes it
    # the trading API (gateway)
    chain_id: int = 31337  # EIP-712 domain chainId of every wallet signature
    key_encryption_key: str = ""  # 64 hex digits: AES-GCM key of stored HMAC secrets
    recv_window_ms: int = 5000  # a signed request's timestamp may be this far from our clock
    max_body_bytes: int = 65536  # a larger request body is a 413
    cors_origins: str = ""  # comma list of browser origins allowed (empty: none; * : any)
    faucet_max_per_call: str = "1000000"  # the faucet's cap per call, in whole asset units
    faucet_max_per_day: str = "10000000"  # ... and per account and asset per UTC day
    max_api_keys: int = 20  # live API keys per account
    # token buckets: <capacity>/<refill per second>; weights per route in the gateway
    rate_limit_public: str = "1200/20"  # per client IP, public routes
    rate_limit_private: str = "1200/20"  # per account, private routes other than order entry
    rate_limit_orders: str = "300/100"  # per account, order entry (place, amend, cancel)
    ws_max_buffer_bytes: int = 4 * 1024 * 1024  # a WebSocket client this far behind is closed


DEFAULTS = Settings()  # the default of every setting: constructors take theirs from here


# (minimum, maximum or None) of every integer field.
_INT_RANGES: dict[str, tuple[int, int | None]] = {
    "port": (0, 65535),
    "matching_shards": (1, None),
    "risk_shards": (1, None),
    "max_shards_per_replica": (0, None),
    "lease_ttl_ms": (100, None),
    "snapshot_every": (1, None),
    "max_lag": (1, None),
    "batch_size": (1, None),
    "idle_check_ms": (1, None),
    "stop_timeout_ms": (0, None),
    "snapshot_child_timeout_ms": (1, None),
    "gateway_wait_ms": (1, None),
    "gateway_outcomes_kept": (1, None),
    "gateway_proxy_timeout_ms": (1, None),
    "admin_credit_wait_ms": (1, None),
    "market_data_recent_trades": (1, None),
    "market_data_max_levels": (1, None),
    "market_data_feed_keep": (100, None),
    "persistence_max_limit": (1, None),
    "sqlite_busy_timeout_ms": (0, 2**31 - 1),  # SQLite takes a C int
    "ws_ping_ms": (1, None),
    "chain_id": (1, 2**63 - 1),
    "recv_window_ms": (1, 600_000),
    "max_body_bytes": (1024, 64 * 1024 * 1024),
    "max_api_keys": (1, 1000),
    "ws_max_buffer_bytes": (1024, None),
}
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_BUCKET = re.compile(r"[0-9]{1,9}/[0-9]{1,9}")
_AMOUNT = re.compile(r"[0-9]{1,18}")
_URL_SCHEMES: dict[str, tuple[str, ...]] = {
    "redis_url": ("redis://", "rediss://", "unix://"),
    "database_url": (
        "postgresql://",
        "postgresql+asyncpg://",
        "sqlite://",
        "sqlite+aiosqlite://",
    ),
    "persistence_url": ("http://", "https://"),
    "market_data_url": ("http://", "https://"),
}
_NOT_EMPTY = frozenset({"host", "data_dir"})
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_INTEGER = re.compile(r"[+-]?[0-9]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,29}")
_FIELD_TYPES: dict[str, object] = {f.name: f.type for f in msgspec.structs.fields(Settings)}


def env_var(field: str) -> str:
    """The environment variable of a settings field: `DEX_` + the name in upper case."""
    return ENV_PREFIX + field.upper()


def load_settings(env: Mapping[str, str] | None = None, /, **overrides: object) -> Settings:
    """Read, check and return the settings.

    `env` (positional) defaults to `os.environ`. Each override, an already typed value such
    as a CLI flag, wins over the environment; `None` means "not given", and a string is
    parsed like the environment text. `env` is positional-only so that `env="production"`
    overrides the `env` setting; `env=<a mapping>` is still taken as the environment.
    """
    if isinstance(overrides.get("env"), Mapping):
        if env is not None:
            raise TypeError("load_settings: two environments given")
        env = overrides.pop("env")  # type: ignore[assignment]
    source = os.environ if env is None else env
    unknown = sorted(set(overrides) - set(_FIELD_TYPES))
    if unknown:
        raise TypeError(f"load_settings: unknown setting(s): {', '.join(unknown)}")
    settings = Settings(**_read(source, overrides, None))  # type: ignore[arg-type]
    for problem in _cross_field(settings):
        raise problem
    return settings


def settings_problems(
    env: Mapping[str, str] | None = None, /, *, service: str | None = None
) -> list[SettingsError]:
    """Every problem of an environment, not only the first: what `dex config check` prints.

    The checks of `load_settings` (each field, then the cross-field rules on the fields that
    were valid), and with `service` the rules of a deployment (`deployment_problems`).
    """
    source = os.environ if env is None else env
    problems: list[SettingsError] = []
    settings = Settings(**_read(source, {}, problems))  # type: ignore[arg-type]
    later = _cross_field(settings)
    if service is not None:
        later += deployment_problems(settings, service)
    reported = {p.var for p in problems}  # a refused value is left at its default: not judged
    return problems + [p for p in later if p.var not in reported]


# A production admin token shorter than this is a development one (a word, a test value).
MIN_PRODUCTION_TOKEN = 32


def deployment_problems(settings: Settings, service: str) -> list[SettingsError]:
    """What a deployed `dex serve <service>` needs beyond valid settings (the container
    entrypoint checks these before the service starts): Redis, PostgreSQL for persistence,
    and in production no unsafe-Redis flag and no development admin token."""
    if service not in DEFAULT_PORTS:
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
    problems: list[SettingsError] = []
    if not settings.redis_url:
        problems.append(
            SettingsError(env_var("redis_url"), "must be set: every service uses Redis")
        )
    if service == "persistence" and not settings.database_url.startswith("postgresql"):
        problems.append(
            SettingsError(env_var("database_url"), "must be a postgresql:// URL for persistence")
        )
    if settings.env == "production" and settings.allow_unsafe_redis:
        problems.append(
            SettingsError(env_var("allow_unsafe_redis"), "must be false when DEX_ENV is production")
        )
    if settings.env == "production" and len(settings.admin_token) < MIN_PRODUCTION_TOKEN:
        problems.append(
            SettingsError(
                env_var("admin_token"),
                f"must be at least {MIN_PRODUCTION_TOKEN} characters when DEX_ENV is production"
                " (a development token); value not shown",
            )
        )
    return problems


def _read(
    source: Mapping[str, str], overrides: Mapping[str, object], problems: list[SettingsError] | None
) -> dict[str, object]:
    """The checked value of every field given; the first problem raises, or with `problems`
    each is appended and its field left at its default."""
    values: dict[str, object] = {}
    for name, kind in _FIELD_TYPES.items():
        var = env_var(name)
        raw = overrides.get(name)
        try:
            if raw is not None:
                value = _typed(var, kind, raw)
            elif var in source:
                raw = source[var]
                value = _parse(var, kind, source[var])
            else:
                continue
            _check_field(var, name, value, raw)
        except SettingsError as e:
            if problems is None:
                raise
            problems.append(e)
            continue
        values[name] = value
    return values


def _cross_field(settings: Settings) -> list[SettingsError]:
    problems: list[SettingsError] = []
    if settings.env == "production" and settings.faucet:
        problems.append(
            SettingsError(env_var("faucet"), "must be false when DEX_ENV is production")
        )
    if settings.env == "production" and not settings.key_encryption_key:
        problems.append(
            SettingsError(env_var("key_encryption_key"), "must be set when DEX_ENV is production")
        )
    return problems


def rate_bucket(text: str) -> tuple[int, int]:
    """A `DEX_RATE_LIMIT_*` value: `<capacity>/<refill per second>`, both at least 1."""
    capacity, _, refill = text.partition("/")
    return int(capacity), int(refill)


def port_for(settings: Settings, service: str) -> int:
    """The port `service` listens on: `settings.port`, or the service's default when 0."""
    if service not in DEFAULT_PORTS:
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
    return settings.port or DEFAULT_PORTS[service]


def resolved_replica_id(settings: Settings) -> str:
    """`settings.replica_id`, or `<hostname>-<pid>` when it is empty."""
    return settings.replica_id or f"{socket.gethostname()}-{os.getpid()}"


def _parse(var: str, kind: object, text: str) -> object:
    """Turn the text of an environment variable into a value of the field's type."""
    if kind is str:
        return text
    if kind is bool:
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise SettingsError(var, f"must be true or false (or 1/0, yes/no), got {_shown(text)}")
    if kind is int:
        if _INTEGER.fullmatch(text.strip()):
            return int(text.strip())
        raise SettingsError(var, f"{_int_rule(var)}, got {_shown(text)}")
    choices = _choices(kind)
    word = text.strip().lower()
    if word in choices:
        return word
    raise SettingsError(var, f"must be one of {', '.join(choices)}, got {_shown(text)}")


def _typed(var: str, kind: object, value: object) -> object:
    """Check an override's type; a string is parsed like the environment text."""
    if isinstance(value, str):
        return _parse(var, kind, value)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is int:
        raise SettingsError(var, f"{_int_rule(var)}, got {_shown(value)}")
    expected = {str: "a string", bool: "true or false"}.get(kind)  # type: ignore[call-overload]
    if expected is None:
        expected = f"one of {', '.join(_choices(kind))}"
    raise SettingsError(var, f"must be {expected}, got {_shown(value)}")


def _check_field(var: str, name: str, value: object, raw: object) -> None:
    """The single-field rules: integer ranges, non-empty strings, URL schemes.

    `raw` is what was given (the env text or the override), shown in range errors.
    """
    if name in _INT_RANGES:
        low, high = _INT_RANGES[name]
        assert isinstance(value, int)
        if value < low or (high is not None and value > high):
            raise SettingsError(var, f"{_int_rule(var)}, got {_shown(raw)}")
    elif name in _NOT_EMPTY and value == "":
        raise SettingsError(var, "must not be empty")
    elif name == "key_encryption_key" and value != "":
        assert isinstance(value, str)
        if not _HEX_KEY.fullmatch(value):
            raise SettingsError(var, "must be 64 hex digits (a 256-bit key); value not shown")
    elif name.startswith("rate_limit_"):
        assert isinstance(value, str)
        if not _BUCKET.fullmatch(value) or 0 in rate_bucket(value):
            raise SettingsError(
                var, f"must be <capacity>/<refill per second>, both >= 1, got {_shown(raw)}"
            )
    elif name.startswith("faucet_max_"):
        assert isinstance(value, str)
        if not _AMOUNT.fullmatch(value) or int(value) == 0:
            raise SettingsError(var, f"must be a whole number >= 1, got {_shown(raw)}")
    elif name in _URL_SCHEMES and value != "":
        assert isinstance(value, str)
        schemes = _URL_SCHEMES[name]
        if not value.startswith(schemes):
            raise SettingsError(var, f"must start with {_or(schemes)} ({_scheme_of(value)})")


def _int_rule(var: str) -> str:
    low, high = _INT_RANGES[var.removeprefix(ENV_PREFIX).lower()]
    if high is None:
        return f"must be an integer >= {low}"
    return f"must be an integer from {low} to {high}"


def _choices(kind: object) -> tuple[str, ...]:
    if get_origin(kind) is not Literal:
        raise TypeError(f"unsupported settings field type {kind!r}")
    return tuple(str(choice) for choice in get_args(kind))


def _or(options: tuple[str, ...]) -> str:
    return ", ".join(options[:-1]) + " or " + options[-1]


def _scheme_of(url: str) -> str:
    """Describe a refused URL by its scheme only: the rest may hold a password."""
    scheme, sep, _ = url.partition("://")
    if sep and _SCHEME.fullmatch(scheme):
        return f"got scheme {scheme!r}"
    return "got a value without a scheme; value not shown"


def _shown(value: object) -> str:
    """The repr of a refused value, on one line and at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

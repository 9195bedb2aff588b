"""Settings: defaults, parsing, every rule naming its variable, overrides, secrets unshown."""

from __future__ import annotations

import os
import socket

import msgspec
import pytest

from dex.runtime.settings import (
    DEFAULT_PORTS,
    SERVICES,
    Settings,
    SettingsError,
    load_settings,
    port_for,
    resolved_replica_id,
)


def refusal(env: dict[str, str], **overrides: object) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        load_settings(env, **overrides)
    return caught.value


def test_defaults_with_an_empty_environment() -> None:
    settings = load_settings({})

    assert settings == Settings()
    assert settings.env == "dev"
    assert settings.host == "127.0.0.1"
    assert settings.port == 0
    assert (settings.redis_url, settings.database_url) == ("", "")
    assert (settings.persistence_url, settings.market_data_url) == ("", "")
    assert settings.data_dir == "./.dex-data"
    assert (settings.matching_shards, settings.risk_shards) == (2, 2)
    assert settings.max_shards_per_replica == 0
    assert settings.lease_ttl_ms == 3000
    assert (settings.snapshot_every, settings.max_lag, settings.batch_size) == (10000, 10000, 1000)
    assert settings.admin_token == ""
    assert settings.faucet is True
    assert (settings.log_level, settings.library_log_level) == ("info", "warning")
    assert settings.replica_id == ""
    assert (settings.idle_check_ms, settings.stop_timeout_ms) == (5000, 10000)
    assert settings.allow_unsafe_redis is False
    assert settings.snapshot_child_timeout_ms == 600_000
    assert (settings.gateway_wait_ms, settings.gateway_outcomes_kept) == (10_000, 50_000)
    assert settings.gateway_proxy_timeout_ms == 5000
    assert settings.admin_credit_wait_ms == 10_000
    assert (settings.market_data_recent_trades, settings.market_data_max_levels) == (1000, 1000)
    assert settings.persistence_max_limit == 1000
    assert settings.sqlite_busy_timeout_ms == 5000


def test_every_field_is_read_from_its_dex_variable() -> None:
    env = {
        "DEX_ENV": "production",
        "DEX_HOST": "0.0.0.0",
        "DEX_PORT": "9000",
        "DEX_REDIS_URL": "rediss://redis:6380/0",
        "DEX_DATABASE_URL": "postgresql+asyncpg://dex@db/dex",
        "DEX_PERSISTENCE_URL": "http://persistence:8084",
        "DEX_MARKET_DATA_URL": "https://market-data:8082",
        "DEX_DATA_DIR": "/var/lib/dex",
        "DEX_MATCHING_SHARDS": "8",
        "DEX_RISK_SHARDS": "4",
        "DEX_MAX_SHARDS_PER_REPLICA": "2",
        "DEX_LEASE_TTL_MS": "100",
        "DEX_SNAPSHOT_EVERY": "1",
        "DEX_SNAPSHOT_FORK": "false",
        "DEX_MAX_LAG": "50",
        "DEX_BATCH_SIZE": "10",
        "DEX_ADMIN_TOKEN": "s3cret",
        "DEX_FAUCET": "no",
        "DEX_LOG_LEVEL": "DEBUG",
        "DEX_LIBRARY_LOG_LEVEL": "Info",
        "DEX_REPLICA_ID": "me-1",
        "DEX_IDLE_CHECK_MS": "250",
        "DEX_STOP_TIMEOUT_MS": "0",
        "DEX_ALLOW_UNSAFE_REDIS": "Yes",
        "DEX_SNAPSHOT_CHILD_TIMEOUT_MS": "1",
        "DEX_GATEWAY_WAIT_MS": "250",
        "DEX_GATEWAY_OUTCOMES_KEPT": "1",
        "DEX_GATEWAY_PROXY_TIMEOUT_MS": "1500",
        "DEX_ADMIN_CREDIT_WAIT_MS": "30000",
        "DEX_MARKET_DATA_RECENT_TRADES": "5000",
        "DEX_MARKET_DATA_MAX_LEVELS": "20",
        "DEX_MARKET_DATA_FEED_KEEP": "500",
        "DEX_PERSISTENCE_MAX_LIMIT": "200",
        "DEX_SQLITE_BUSY_TIMEOUT_MS": "0",
        "DEX_WS_PING_MS": "500",
        "DEX_CHAIN_ID": "1",
        "DEX_KEY_ENCRYPTION_KEY": "ab" * 32,
        "DEX_RECV_WINDOW_MS": "10000",
        "DEX_MAX_BODY_BYTES": "2048",
        "DEX_CORS_ORIGINS": "https://app.example",
        "DEX_FAUCET_MAX_PER_CALL": "5",
        "DEX_FAUCET_MAX_PER_DAY": "50",
        "DEX_MAX_API_KEYS": "3",
        "DEX_RATE_LIMIT_PUBLIC": "10/1",
        "DEX_RATE_LIMIT_PRIVATE": "20/2",
        "DEX_RATE_LIMIT_ORDERS": "30/3",
        "DEX_WS_MAX_BUFFER_BYTES": "65536",
    }

    settings = load_settings(env)

    assert msgspec.structs.asdict(settings) == {
        "env": "production",
        "host": "0.0.0.0",
        "port": 9000,
        "redis_url": "rediss://redis:6380/0",
        "database_url": "postgresql+asyncpg://dex@db/dex",
        "persistence_url": "http://persistence:8084",
        "market_data_url": "https://market-data:8082",
        "data_dir": "/var/lib/dex",
        "matching_shards": 8,
        "risk_shards": 4,
        "max_shards_per_replica": 2,
        "lease_ttl_ms": 100,
        "snapshot_every": 1,
        "snapshot_fork": False,
        "max_lag": 50,
        "batch_size": 10,
        "admin_token": "s3cret",
        "faucet": False,
        "log_level": "debug",
        "library_log_level": "info",
        "replica_id": "me-1",
        "idle_check_ms": 250,
        "stop_timeout_ms": 0,
        "allow_unsafe_redis": True,
        "snapshot_child_timeout_ms": 1,
        "gateway_wait_ms": 250,
        "gateway_outcomes_kept": 1,
        "gateway_proxy_timeout_ms": 1500,
        "admin_credit_wait_ms": 30_000,
        "market_data_recent_trades": 5000,
        "market_data_max_levels": 20,
        "market_data_feed_keep": 500,
        "persistence_max_limit": 200,
        "sqlite_busy_timeout_ms": 0,
        "ws_ping_ms": 500,
        "chain_id": 1,
        "key_encryption_key": "ab" * 32,
        "recv_window_ms": 10_000,
        "max_body_bytes": 2048,
        "cors_origins": "https://app.example",
        "faucet_max_per_call": "5",
        "faucet_max_per_day": "50",
        "max_api_keys": 3,
        "rate_limit_public": "10/1",
        "rate_limit_private": "20/2",
        "rate_limit_orders": "30/3",
        "ws_max_buffer_bytes": 65536,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[("true", True), ("TRUE", True), ("1", True), ("yes", True), ("Yes", True)],
        *[("false", False), ("False", False), ("0", False), ("no", False), ("NO", False)],
    ],
)
def test_booleans_accept_true_false_1_0_yes_no(text: str, expected: bool) -> None:
    assert load_settings({"DEX_ALLOW_UNSAFE_REDIS": text}).allow_unsafe_redis is expected


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("DEX_MAX_LAG", "abc", "must be an integer >= 1, got 'abc'"),
        ("DEX_MAX_LAG", "0", "must be an integer >= 1, got '0'"),
        ("DEX_MATCHING_SHARDS", "0", "must be an integer >= 1, got '0'"),
        ("DEX_RISK_SHARDS", "-1", "must be an integer >= 1, got '-1'"),
        ("DEX_MAX_SHARDS_PER_REPLICA", "-1", "must be an integer >= 0, got '-1'"),
        ("DEX_LEASE_TTL_MS", "99", "must be an integer >= 100, got '99'"),
        ("DEX_SNAPSHOT_EVERY", "0", "must be an integer >= 1, got '0'"),
        ("DEX_BATCH_SIZE", "1.5", "must be an integer >= 1, got '1.5'"),
        ("DEX_IDLE_CHECK_MS", "0", "must be an integer >= 1, got '0'"),
        ("DEX_STOP_TIMEOUT_MS", "-5", "must be an integer >= 0, got '-5'"),
        ("DEX_SNAPSHOT_CHILD_TIMEOUT_MS", "0", "must be an integer >= 1, got '0'"),
        ("DEX_GATEWAY_WAIT_MS", "0", "must be an integer >= 1, got '0'"),
        ("DEX_GATEWAY_WAIT_MS", "10s", "must be an integer >= 1, got '10s'"),
        ("DEX_GATEWAY_OUTCOMES_KEPT", "0", "must be an integer >= 1, got '0'"),
        ("DEX_GATEWAY_PROXY_TIMEOUT_MS", "0", "must be an integer >= 1, got '0'"),
        ("DEX_ADMIN_CREDIT_WAIT_MS", "-1", "must be an integer >= 1, got '-1'"),
        ("DEX_MARKET_DATA_RECENT_TRADES", "0", "must be an integer >= 1, got '0'"),
        ("DEX_MARKET_DATA_MAX_LEVELS", "0", "must be an integer >= 1, got '0'"),
        ("DEX_PERSISTENCE_MAX_LIMIT", "0", "must be an integer >= 1, got '0'"),
        ("DEX_SQLITE_BUSY_TIMEOUT_MS", "-1", "must be an integer from 0 to 2147483647, got '-1'"),
        (
            "DEX_SQLITE_BUSY_TIMEOUT_MS",
            "2147483648",
            "must be an integer from 0 to 2147483647, got '2147483648'",
        ),
        ("DEX_PORT", "65536", "must be an integer from 0 to 65535, got '65536'"),
        ("DEX_PORT", "", "must be an integer from 0 to 65535, got ''"),
        ("DEX_FAUCET", "maybe", "must be true or false (or 1/0, yes/no), got 'maybe'"),
        ("DEX_ALLOW_UNSAFE_REDIS", "on", "must be true or false (or 1/0, yes/no), got 'on'"),
        ("DEX_ENV", "staging", "must be one of dev, test, production, got 'staging'"),
        ("DEX_LOG_LEVEL", "trace", "must be one of debug, info, warning, error, got 'trace'"),
        (
            "DEX_LIBRARY_LOG_LEVEL",
            "all",
            "must be one of debug, info, warning, error, got 'all'",
        ),
        ("DEX_HOST", "", "must not be empty"),
        ("DEX_DATA_DIR", "", "must not be empty"),
        (
            "DEX_REDIS_URL",
            "http://cache:6379",
            "must start with redis://, rediss:// or unix:// (got scheme 'http')",
        ),
        (
            "DEX_DATABASE_URL",
            "mysql://db/dex",
            "must start with postgresql://, postgresql+asyncpg://, sqlite:// or "
            "sqlite+aiosqlite:// (got scheme 'mysql')",
        ),
        (
            "DEX_PERSISTENCE_URL",
            "persistence:8084",
            "must start with http:// or https:// (got a value without a scheme; value not shown)",
        ),
        ("DEX_MARKET_DATA_URL", "ws://md", "must start with http:// or https:// (got scheme 'ws')"),
    ],
)
def test_each_invalid_value_is_refused_naming_its_variable(
    var: str, value: str, message: str
) -> None:
    error = refusal({var: value})

    assert (error.var, error.message) == (var, message)
    assert str(error) == f"{var}: {message}"
    assert "\n" not in str(error)


def test_the_first_bad_variable_in_field_order_is_named() -> None:
    error = refusal({"DEX_BATCH_SIZE": "0", "DEX_PORT": "x", "DEX_MAX_LAG": "0"})

    assert error.var == "DEX_PORT"


@pytest.mark.parametrize(
    ("var", "url"),
    [
        ("DEX_REDIS_URL", "http://admin:hunter2@cache:6379"),
        ("DEX_REDIS_URL", "admin:hunter2@cache:6379"),
        ("DEX_DATABASE_URL", "mysql://dex:hunter2@db/dex"),
        ("DEX_DATABASE_URL", "dex:hunter2@db/dex"),
    ],
)
def test_a_refused_url_is_never_echoed(var: str, url: str) -> None:
    error = refusal({var: url})

    assert error.var == var
    assert "hunter2" not in str(error)
    assert "admin" not in str(error) and "dex:" not in str(error)


def test_production_refuses_the_faucet() -> None:
    error = refusal({"DEX_ENV": "production"})

    assert error.var == "DEX_FAUCET"
    assert str(error) == "DEX_FAUCET: must be false when DEX_ENV is production"
    kek = {"DEX_KEY_ENCRYPTION_KEY": "0" * 64}
    settings = load_settings({"DEX_ENV": "production", "DEX_FAUCET": "false", **kek})
    assert settings.faucet is False


def test_production_refuses_to_start_without_a_key_encryption_key() -> None:
    error = refusal({"DEX_ENV": "production", "DEX_FAUCET": "false"})

    assert error.var == "DEX_KEY_ENCRYPTION_KEY"
    assert str(error) == "DEX_KEY_ENCRYPTION_KEY: must be set when DEX_ENV is production"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEX_KEY_ENCRYPTION_KEY": "zz" * 32}, "must be 64 hex digits"),
        ({"DEX_KEY_ENCRYPTION_KEY": "ab" * 31}, "must be 64 hex digits"),
        ({"DEX_RATE_LIMIT_ORDERS": "10"}, "must be <capacity>/<refill per second>"),
        ({"DEX_RATE_LIMIT_PUBLIC": "0/5"}, "must be <capacity>/<refill per second>"),
        ({"DEX_RATE_LIMIT_PRIVATE": "5/-1"}, "must be <capacity>/<refill per second>"),
        ({"DEX_FAUCET_MAX_PER_CALL": "0"}, "must be a whole number >= 1"),
        ({"DEX_FAUCET_MAX_PER_DAY": "1.5"}, "must be a whole number >= 1"),
    ],
)
def test_trading_api_settings_are_checked(env: dict[str, str], message: str) -> None:
    error = refusal(env)

    assert error.var == next(iter(env))
    assert message in str(error)
    assert "zz" not in str(error)  # a key is never echoed


def test_unknown_dex_variables_are_ignored() -> None:
    settings = load_settings({"DEX_NOT_A_SETTING": "x", "DEX_PORTS": "y", "OTHER": "z"})

    assert settings == Settings()


def test_overrides_win_over_the_environment() -> None:
    env = {"DEX_PORT": "9000", "DEX_ENV": "test", "DEX_FAUCET": "true", "DEX_HOST": "::1"}

    env["DEX_KEY_ENCRYPTION_KEY"] = "1" * 64
    settings = load_settings(env, port=9100, env="production", faucet=False, host=None)

    assert (settings.port, settings.env, settings.faucet) == (9100, "production", False)
    assert settings.host == "::1"  # None means "not given"


def test_string_overrides_are_parsed_like_the_environment() -> None:
    settings = load_settings({}, matching_shards="4", faucet="no")

    assert (settings.matching_shards, settings.faucet) == (4, False)


@pytest.mark.parametrize(
    ("override", "var", "message"),
    [
        ({"port": 70000}, "DEX_PORT", "must be an integer from 0 to 65535, got 70000"),
        ({"max_lag": True}, "DEX_MAX_LAG", "must be an integer >= 1, got True"),
        ({"faucet": 1}, "DEX_FAUCET", "must be true or false, got 1"),
        ({"host": 4}, "DEX_HOST", "must be a string, got 4"),
        ({"log_level": 10}, "DEX_LOG_LEVEL", "must be one of debug, info, warning, error, got 10"),
        ({"lease_ttl_ms": 50}, "DEX_LEASE_TTL_MS", "must be an integer >= 100, got 50"),
    ],
)
def test_overrides_follow_the_same_rules(
    override: dict[str, object], var: str, message: str
) -> None:
    error = refusal({}, **override)

    assert (error.var, error.message) == (var, message)


def test_an_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="no_such_setting"):
        load_settings({}, no_such_setting=1)


def test_env_given_by_keyword_as_a_mapping_is_the_environment() -> None:
    assert load_settings(env={"DEX_PORT": "9001"}).port == 9001


def test_os_environ_is_read_when_no_environment_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEX_BATCH_SIZE", "77")

    assert load_settings().batch_size == 77


def test_port_for_uses_the_default_port_when_port_is_zero() -> None:
    assert SERVICES == ("gateway", "matching-engine", "market-data", "risk-engine", "persistence")
    assert [port_for(Settings(), s) for s in SERVICES] == [8080, 8081, 8082, 8083, 8084]
    assert DEFAULT_PORTS["risk-engine"] == 8083
    assert port_for(Settings(port=9999), "gateway") == 9999
    with pytest.raises(ValueError, match="unknown service 'nope'"):
        port_for(Settings(), "nope")


def test_replica_id_defaults_to_hostname_and_pid() -> None:
    assert resolved_replica_id(Settings(replica_id="r-7")) == "r-7"
    assert resolved_replica_id(Settings()) == f"{socket.gethostname()}-{os.getpid()}"

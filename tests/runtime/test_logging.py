"""JSON logs: one object per line with ts/level/event/service, secrets masked, stdlib routed."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import structlog

from dex.runtime.logging import LIBRARY_LOGGERS, configure_logging, get_logger, reset_logging
from dex.runtime.server import HttpServer
from tests.runtime.conftest import LogLines
from tests.runtime.test_server import ping_app


def test_each_line_is_one_json_object_with_the_standard_keys(log_lines: LogLines) -> None:
    get_logger(shard=3).info("order accepted", order_id="o-1")

    (line,) = log_lines()
    assert line["level"] == "info"
    assert line["event"] == "order accepted"
    assert line["service"] == "gateway"
    assert (line["shard"], line["order_id"]) == (3, "o-1")
    assert list(line)[:4] == ["ts", "level", "service", "event"]


def test_ts_is_iso_8601_utc(log_lines: LogLines) -> None:
    before = datetime.now(UTC)
    get_logger().info("tick")

    ts = datetime.fromisoformat(log_lines()[0]["ts"])
    assert ts.utcoffset() == timedelta(0)
    assert before <= ts <= datetime.now(UTC)


@pytest.mark.parametrize(
    "key", ["token", "admin_token", "client_secret", "password", "DB_PASSWORD", "Authorization"]
)
def test_secret_keys_are_masked(log_lines: LogLines, key: str) -> None:
    get_logger().info("request", **{key: "hunter2"})

    (line,) = log_lines()
    assert line[key] == "***"
    assert "hunter2" not in json.dumps(line)


def test_secrets_in_nested_values_and_bound_context_are_masked(log_lines: LogLines) -> None:
    log = get_logger(admin_token="hunter2")
    log.info(
        "request",
        headers={"authorization": "Bearer hunter2", "x-a": "1"},
        items=[{"password": "hunter2"}],
    )

    (line,) = log_lines()
    assert line["admin_token"] == "***"
    assert line["headers"] == {"authorization": "***", "x-a": "1"}
    assert line["items"] == [{"password": "***"}]


def test_a_bound_service_overrides_the_configured_one(log_lines: LogLines) -> None:
    get_logger(service="risk-engine").info("settled")
    get_logger().info("routed")

    assert [line["service"] for line in log_lines()] == ["risk-engine", "gateway"]


def test_contextvars_are_merged(log_lines: LogLines) -> None:
    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        get_logger().info("inside")
    get_logger().info("outside")

    inside, outside = log_lines()
    assert inside["request_id"] == "r-1"
    assert "request_id" not in outside


def test_stdlib_logs_go_through_the_same_json_renderer(log_lines: LogLines) -> None:
    logging.getLogger("uvicorn.error").warning("port %d busy, token=%s", 8080, "x")

    (line,) = log_lines()
    assert line["level"] == "warning"
    assert line["event"] == "port 8080 busy, token=x"
    assert (line["service"], line["logger"]) == ("gateway", "uvicorn.error")
    assert "ts" in line


def test_exceptions_carry_their_traceback(log_lines: LogLines) -> None:
    try:
        raise KeyError("k")
    except KeyError:
        get_logger().exception("failed")
        logging.getLogger("asyncio").exception("failed too")

    first, second = log_lines()
    assert first["level"] == second["level"] == "error"
    assert "KeyError" in first["exception"] and "Traceback" in first["exception"]
    assert "KeyError" in second["exception"]


def test_the_level_filters_both_paths() -> None:
    stream = io.StringIO()
    configure_logging("market-data", "warning", stream)
    try:
        get_logger().info("dropped")
        logging.getLogger("uvicorn.error").info("dropped too")
        get_logger().warning("kept")

        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [(line["event"], line["service"]) for line in lines] == [("kept", "market-data")]
    finally:
        reset_logging()


def test_configuring_again_replaces_the_previous_configuration(log_lines: LogLines) -> None:
    log = get_logger(shard=1)  # obtained before the second configuration
    second = io.StringIO()

    configure_logging("persistence", "info", second)
    log.info("after")
    logging.getLogger("uvicorn").warning("stdlib after")

    assert log_lines() == []  # nothing went to the first stream any more
    lines = [json.loads(line) for line in second.getvalue().splitlines()]
    assert [(line["event"], line["service"]) for line in lines] == [
        ("after", "persistence"),
        ("stdlib after", "persistence"),
    ]
    assert lines[0]["shard"] == 1


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="trace"):
        configure_logging("gateway", "trace", io.StringIO())


def test_library_records_pass_at_warning_by_default(log_lines: LogLines) -> None:
    names = [*LIBRARY_LOGGERS, "some.other.library"]
    for name in names:
        library = logging.getLogger(name)
        library.debug("d")
        library.info("i")
        library.warning("w")
    get_logger().debug("own debug")  # dex's own records follow the level (debug here)

    lines = log_lines()
    assert [(line["logger"], line["level"]) for line in lines if "logger" in line] == [
        (name, "warning") for name in names
    ]
    assert [line["level"] for line in lines if "logger" not in line] == ["debug"]


@pytest.mark.parametrize(
    ("level", "library_level", "passing"),
    [
        ("info", "debug", ["info", "warning"]),  # never below the level
        ("debug", "debug", ["debug", "info", "warning"]),
        ("debug", "info", ["info", "warning"]),
        ("error", "warning", []),
    ],
)
def test_the_library_level_is_asked_for_and_never_below_the_level(
    level: str, library_level: str, passing: list[str]
) -> None:
    stream = io.StringIO()
    configure_logging("gateway", level, stream, library_level=library_level)
    try:
        for name in ("httpx", "uvicorn.error"):
            library = logging.getLogger(name)
            library.debug("d")
            library.info("i")
            library.warning("w")

        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [(line["logger"], line["level"]) for line in lines] == [
            (name, lvl) for name in ("httpx", "uvicorn.error") for lvl in passing
        ]
    finally:
        reset_logging()


def test_an_unknown_library_level_is_refused() -> None:
    with pytest.raises(ValueError, match="library log level"):
        configure_logging("gateway", "info", io.StringIO(), library_level="verbose")


def test_every_line_has_the_pid_unless_it_names_one(log_lines: LogLines) -> None:
    get_logger().info("own")
    get_logger().info("about a child", pid=1)
    logging.getLogger("uvicorn.error").warning("library")

    assert [line["pid"] for line in log_lines()] == [os.getpid(), 1, os.getpid()]


def test_serving_and_proxying_http_adds_no_library_records(log_lines: LogLines) -> None:
    """uvicorn's start lines and httpx's line per request are library INFO records."""

    async def main() -> None:
        server = HttpServer(ping_app())
        await server.start("127.0.0.1", 0)
        try:
            async with httpx.AsyncClient() as client:
                for _ in range(3):
                    response = await client.get(f"http://127.0.0.1:{server.port}/ping")
                    assert response.status_code == 200
        finally:
            await server.stop()

    asyncio.run(main())
    assert [line for line in log_lines() if "logger" in line] == []

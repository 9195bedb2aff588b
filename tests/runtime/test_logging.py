"""JSON logs: one object per line with ts/level/event/service, secrets masked, stdlib routed."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from dex.runtime.logging import configure_logging, get_logger, reset_logging
from tests.runtime.conftest import LogLines


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
    logging.getLogger("uvicorn").info("stdlib after")

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

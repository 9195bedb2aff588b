"""Metrics: names `dex_<service>_<what>_<unit>` exactly, one registry per service, rendering."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from dex import __version__
from dex.runtime.metrics import CONTENT_TYPE, ServiceMetrics, metric_name, render_all


def sample_names(text: bytes) -> set[str]:
    return {
        sample.name
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_metric_name_replaces_dashes_of_the_service() -> None:
    engine = metric_name("matching-engine", "commands", "total")
    latency = metric_name("gateway", "request_latency", "seconds")

    assert engine == "dex_matching_engine_commands_total"
    assert latency == "dex_gateway_request_latency_seconds"


@pytest.mark.parametrize(
    ("service", "what", "unit"),
    [
        ("Gateway", "x", "total"),
        ("gateway", "bad-name", "total"),
        ("gateway", "x", ""),
        ("", "x", "y"),
    ],
)
def test_metric_name_refuses_names_outside_the_scheme(service: str, what: str, unit: str) -> None:
    with pytest.raises(ValueError):
        metric_name(service, what, unit)


def test_a_total_counter_is_exported_with_total_exactly_once() -> None:
    metrics = ServiceMetrics("matching-engine")
    metrics.counter("commands", "total", "Commands applied", ("kind",)).labels(kind="place").inc(2)

    text, _ = metrics.render()

    assert "dex_matching_engine_commands_total" in sample_names(text)
    assert b'dex_matching_engine_commands_total{kind="place"} 2.0' in text
    assert b"_total_total" not in text
    assert b"_created" not in text


def test_a_counter_with_another_unit_ends_in_that_unit_and_total() -> None:
    metrics = ServiceMetrics("gateway")
    metrics.counter("received", "bytes", "Bytes received").inc(10)

    assert "dex_gateway_received_bytes_total" in sample_names(metrics.render()[0])


def test_gauges_and_histograms_keep_their_names() -> None:
    metrics = ServiceMetrics("risk-engine")
    metrics.gauge("lag", "entries", "Entries behind", ("shard",)).labels(shard="0").set(5)
    apply = metrics.histogram("apply_latency", "seconds", "Apply time", buckets=(0.001, 0.01))
    apply.observe(0.002)

    names = sample_names(metrics.render()[0])

    assert "dex_risk_engine_lag_entries" in names
    assert {
        "dex_risk_engine_apply_latency_seconds_bucket",
        "dex_risk_engine_apply_latency_seconds_sum",
        "dex_risk_engine_apply_latency_seconds_count",
    } <= names


def test_asking_again_returns_the_same_collector() -> None:
    metrics = ServiceMetrics("persistence")

    first = metrics.counter("rows", "total", "Rows written", ("table",))

    assert metrics.counter("rows", "total", "Rows written", ("table",)) is first
    with pytest.raises(ValueError, match="already exists"):
        metrics.counter("rows", "total", "Rows written", ("other",))
    with pytest.raises(ValueError, match="already exists"):
        metrics.gauge("ready", "bool", "not the pre-registered gauge", ("x",))


def test_every_service_starts_with_ready_and_build_info() -> None:
    metrics = ServiceMetrics("market-data")

    text, content_type = metrics.render()

    assert content_type == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    assert b"dex_market_data_ready_bool 0.0" in text
    assert f'dex_market_data_build_info{{version="{__version__}"}} 1.0'.encode() in text


def test_two_instances_of_one_service_do_not_clash() -> None:
    first, second = ServiceMetrics("gateway"), ServiceMetrics("gateway")

    first.counter("requests", "total", "Requests").inc()
    second.counter("requests", "total", "Requests").inc(5)

    assert b"dex_gateway_requests_total 1.0" in first.render()[0]
    assert b"dex_gateway_requests_total 5.0" in second.render()[0]


def test_a_given_registry_is_used() -> None:
    registry = CollectorRegistry()
    ServiceMetrics("gateway", registry).gauge("open", "connections", "Open sockets").set(3)

    assert registry.get_sample_value("dex_gateway_open_connections") == 3.0


def test_render_all_concatenates_the_services_each_once() -> None:
    services = [ServiceMetrics(name) for name in ("gateway", "matching-engine", "persistence")]
    services[1].counter("commands", "total", "Commands").inc()

    text = render_all([*services, services[0]])

    assert text.count(b"# TYPE dex_gateway_ready_bool gauge") == 1
    assert {
        "dex_gateway_ready_bool",
        "dex_matching_engine_ready_bool",
        "dex_persistence_ready_bool",
        "dex_matching_engine_commands_total",
    } <= sample_names(text)

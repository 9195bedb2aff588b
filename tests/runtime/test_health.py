"""Health: ready only when started, not stopping and without reasons; the gauge follows."""

from __future__ import annotations

from dex.runtime.health import Health
from dex.runtime.metrics import ServiceMetrics


def test_not_ready_until_started() -> None:
    health = Health()

    assert (health.started, health.ready) == (False, False)
    assert list(health.reasons()) == ["starting"]

    health.started = True

    assert health.ready
    assert health.reasons() == {}


def test_each_reason_is_set_and_cleared_by_its_key() -> None:
    health = Health()
    health.started = True

    health.set_not_ready("redis", "redis unreachable")
    health.set_not_ready("recovery", "replaying shard 1")
    health.set_ready("redis")

    assert not health.ready
    assert health.reasons() == {"recovery": "replaying shard 1"}

    health.set_ready("recovery")
    health.set_ready("never-set")

    assert health.ready


def test_stopping_makes_it_not_ready() -> None:
    health = Health()
    health.started = True

    health.stopping = True

    assert not health.ready
    assert list(health.reasons()) == ["stopping"]


def test_the_ready_gauge_follows_readiness() -> None:
    metrics = ServiceMetrics("risk-engine")
    health = Health(metrics)

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("dex_risk_engine_ready_bool")

    assert gauge() == 0.0
    health.started = True
    assert gauge() == 1.0
    health.set_not_ready("bus", "down")
    assert gauge() == 0.0
    health.set_ready("bus")
    assert gauge() == 1.0
    health.stopping = True
    assert gauge() == 0.0

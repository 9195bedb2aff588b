"""Readiness of one service: a set of named reasons not to be ready, plus the lifecycle.

Owns what `/readyz` answers. A service is ready when it has `started`, is not `stopping` and
no reason is set. Components set and clear their own reason by key (`"redis"`, `"recovery"`,
...), so one recovering dependency does not hide another. When bound to a `ServiceMetrics`,
its `dex_<svc>_ready_bool` gauge follows every change. Not thread-safe: used from the loop.
"""

from __future__ import annotations

from dex.runtime.metrics import ServiceMetrics

STARTING = "starting"
STOPPING = "stopping"


class Health:
    """Readiness reasons of one service; `ready` when started, not stopping and no reasons."""

    def __init__(self, metrics: ServiceMetrics | None = None) -> None:
        self._reasons: dict[str, str] = {}
        # dependencies some requests need that are down: shown by /readyz, ready all the same
        # (the gateway places orders while persistence, which serves its reads, is down)
        self._degraded: dict[str, str] = {}
        self._started = False
        self._stopping = False
        self._metrics = metrics
        self._sync()

    @property
    def started(self) -> bool:
        """False until the service says it has started (state recovered, loops running)."""
        return self._started

    @started.setter
    def started(self, value: bool) -> None:
        self._started = value
        self._sync()

    @property
    def stopping(self) -> bool:
        """True once shutdown has begun: the service is not ready any more."""
        return self._stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self._stopping = value
        self._sync()

    @property
    def ready(self) -> bool:
        return self._started and not self._stopping and not self._reasons

    def set_not_ready(self, key: str, reason: str) -> None:
        """Record (or replace) the reason `key` for not being ready."""
        self._reasons[key] = reason
        self._sync()

    def set_ready(self, key: str) -> None:
        """Clear the reason `key`; clearing one that is not set does nothing."""
        self._reasons.pop(key, None)
        self._sync()

    def set_degraded(self, key: str, reason: str) -> None:
        """Record that the dependency `key` is down (without being not-ready for it)."""
        self._degraded[key] = reason

    def clear_degraded(self, key: str) -> None:
        self._degraded.pop(key, None)

    def degraded(self) -> dict[str, str]:
        """The dependencies that are down, by key, with why."""
        return dict(self._degraded)

    def reasons(self) -> dict[str, str]:
        """Every reason for not being ready, including "stopping" and "starting"."""
        found: dict[str, str] = {}
        if self._stopping:
            found[STOPPING] = "the service is stopping"
        if not self._started:
            found[STARTING] = "the service has not finished starting"
        found.update(self._reasons)
        return found

    def _sync(self) -> None:
        if self._metrics is not None:
            self._metrics.ready.set(1 if self.ready else 0)

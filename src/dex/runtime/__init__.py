"""The service runtime shared by the five services.

`settings` (the `DEX_*` environment), `logging` (JSON lines through structlog), `metrics`
(per-service Prometheus registries named `dex_<service>_<what>_<unit>`), `health` (readiness
reasons), `http` (the Litestar app with probes, metrics, error shape, admin guard and request
ids) and `server` (uvicorn inside the caller's event loop). Import the submodules; this package
imports nothing so that reading settings does not pull in the web stack.
"""

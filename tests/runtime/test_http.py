"""The shared HTTP app, served by a real HttpServer on a free port and called with httpx."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar, get, post
from litestar.params import FromQuery, JSONBody

from dex.runtime.http import ApiError, Health, HttpServer, admin_guard, build_app, request_id
from dex.runtime.logging import get_logger
from dex.runtime.metrics import ServiceMetrics
from tests.runtime.conftest import LogLines

Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


class Order(msgspec.Struct, forbid_unknown_fields=True):
    price: int
    qty: int


@post("/orders")
async def place(data: JSONBody[Order]) -> dict[str, int]:
    get_logger().info("order received", price=data.price)
    return {"price": data.price, "qty": data.qty}


@get("/orders")
async def listing(limit: FromQuery[int]) -> dict[str, int]:
    return {"limit": limit}


@get("/fails")
async def fails() -> None:
    raise RuntimeError("db password is hunter2")


@get("/conflict")
async def conflict() -> None:
    raise ApiError(409, "duplicate_order", "client order id already used", "client_order_id")


@get("/admin/by-opt", opt={"admin": True})
async def admin_by_opt() -> dict[str, bool]:
    return {"ok": True}


@get("/admin/by-guard", guards=[admin_guard])
async def admin_by_guard() -> dict[str, bool]:
    return {"ok": True}


HANDLERS = [place, listing, fails, conflict, admin_by_opt, admin_by_guard]


def make_app(
    health: Health | None = None,
    metrics: ServiceMetrics | Sequence[ServiceMetrics] | None = None,
    **options: Any,
) -> Litestar:
    return build_app(
        "gateway",
        health if health is not None else Health(),
        metrics if metrics is not None else ServiceMetrics("gateway"),
        route_handlers=HANDLERS,
        **options,
    )


def serve(app: Litestar, scenario: Scenario) -> None:
    """Run `scenario` against `app` served on a free port of 127.0.0.1, then stop."""

    async def main() -> None:
        server = HttpServer(app)
        await server.start("127.0.0.1", 0)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
                await scenario(client)
        finally:
            await server.stop()

    asyncio.run(main())


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"] and set(body["error"]) == {"code", "message", "field"}
    return dict(body["error"])


def test_healthz_answers_while_the_process_is_up() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz")

        assert response.status_code == 200
        assert response.json() == {"status": "ok", "service": "gateway"}

    serve(make_app(), scenario)


def test_readyz_goes_from_503_with_reasons_to_200_and_back() -> None:
    health = Health()

    async def scenario(client: httpx.AsyncClient) -> None:
        starting = await client.get("/readyz")
        assert starting.status_code == 503
        assert starting.json()["ready"] is False
        assert list(starting.json()["reasons"]) == ["starting"]

        health.started = True
        health.set_not_ready("redis", "redis unreachable")
        waiting = await client.get("/readyz")
        assert (waiting.status_code, waiting.json()) == (
            503,
            {"ready": False, "reasons": {"redis": "redis unreachable"}},
        )

        health.set_ready("redis")
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})

        health.stopping = True
        stopping = await client.get("/readyz")
        assert stopping.status_code == 503
        assert list(stopping.json()["reasons"]) == ["stopping"]

    serve(make_app(health), scenario)


def test_metrics_serves_every_given_registry() -> None:
    gateway, risk = ServiceMetrics("gateway"), ServiceMetrics("risk-engine")
    health = Health(gateway)
    health.started = True
    risk.counter("holds", "total", "Holds placed").inc(3)

    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.get("/metrics")

        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "dex_gateway_ready_bool 1.0" in response.text
        assert "dex_risk_engine_holds_total 3.0" in response.text

    serve(make_app(health, [gateway, risk]), scenario)


@pytest.mark.parametrize("path", ["/admin/by-opt", "/admin/by-guard"])
def test_admin_handlers_need_the_bearer_token(path: str) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        missing = await client.get(path)
        wrong = await client.get(path, headers={"Authorization": "Bearer not-it"})
        basic = await client.get(path, headers={"Authorization": "Basic t0ken"})
        right = await client.get(path, headers={"Authorization": "Bearer t0ken"})

        for refused in (missing, wrong, basic):
            assert refused.status_code == 401
            assert error_of(refused)["code"] == "unauthorized"
            assert refused.headers["www-authenticate"] == "Bearer"
        assert (right.status_code, right.json()) == (200, {"ok": True})

    serve(make_app(admin_token="t0ken"), scenario)


def test_without_a_configured_token_admin_refuses_everything() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer x"}):
            response = await client.get("/admin/by-opt", headers=headers)
            assert response.status_code == 401
            assert error_of(response)["code"] == "unauthorized"

    serve(make_app(admin_token=""), scenario)


def test_api_error_gives_its_status_code_message_and_field() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.get("/conflict")

        assert response.status_code == 409
        assert error_of(response) == {
            "code": "duplicate_order",
            "message": "client order id already used",
            "field": "client_order_id",
        }

    serve(make_app(), scenario)


def test_an_unexpected_exception_is_a_generic_500_logged_with_its_traceback(
    log_lines: LogLines,
) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.get("/fails", headers={"X-Request-Id": "req-500"})

        assert response.status_code == 500
        assert error_of(response) == {
            "code": "internal_error",
            "message": "internal error",
            "field": None,
        }
        assert "hunter2" not in response.text and "RuntimeError" not in response.text

    serve(make_app(), scenario)

    (logged,) = [line for line in log_lines() if line["level"] == "error"]
    assert logged["request_id"] == "req-500"
    assert logged["path"] == "/fails"
    assert "RuntimeError" in logged["exception"]


def test_an_unknown_path_is_404_not_found() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.get("/no/such/route")

        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"

    serve(make_app(), scenario)


def test_a_wrong_method_is_405_method_not_allowed() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.delete("/healthz")

        assert response.status_code == 405
        assert error_of(response)["code"] == "method_not_allowed"

    serve(make_app(), scenario)


@pytest.mark.parametrize(
    ("request_args", "field"),
    [
        ({"method": "POST", "url": "/orders", "json": {"price": "x", "qty": 1}}, "price"),
        ({"method": "POST", "url": "/orders", "json": {"price": 1}}, "qty"),
        ({"method": "POST", "url": "/orders", "json": {"price": 1, "qty": 1, "px": 2}}, "px"),
        ({"method": "GET", "url": "/orders"}, "limit"),
        ({"method": "GET", "url": "/orders", "params": {"limit": "many"}}, "limit"),
        ({"method": "POST", "url": "/orders", "content": b"{not json"}, None),
    ],
)
def test_invalid_requests_are_400_naming_the_field(
    request_args: dict[str, Any], field: str | None
) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.request(**request_args)

        assert response.status_code == 400
        error = error_of(response)
        assert error["code"] == "invalid_request"
        assert error["field"] == field
        if field is not None:
            assert field in error["message"]

    serve(make_app(), scenario)


def test_a_valid_request_reaches_its_handler_with_the_request_id_bound(
    log_lines: LogLines,
) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/orders", json={"price": 5, "qty": 2}, headers={"X-Request-Id": "req-1"}
        )

        assert (response.status_code, response.json()) == (201, {"price": 5, "qty": 2})
        assert response.headers["x-request-id"] == "req-1"

    serve(make_app(), scenario)

    (line,) = [line for line in log_lines() if line["event"] == "order received"]
    assert line["request_id"] == "req-1"


def test_request_ids_are_echoed_or_made_on_every_response() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        given = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
        on_404 = await client.get("/nowhere", headers={"X-Request-Id": "abc-404"})
        made = [await client.get("/healthz") for _ in range(2)]
        insane = await client.get("/healthz", headers={"X-Request-Id": "a b\tc" + "x" * 200})

        assert given.headers["x-request-id"] == "abc-123"
        assert on_404.headers["x-request-id"] == "abc-404"
        made_ids = [response.headers["x-request-id"] for response in made]
        assert all(made_ids) and made_ids[0] != made_ids[1]
        assert insane.headers["x-request-id"] not in ("", "a b\tc" + "x" * 200)

    serve(make_app(), scenario)


def test_request_id_is_kept_in_the_scope() -> None:
    scope: Any = {"type": "http", "headers": [(b"x-request-id", b"given-1")]}

    assert request_id(scope) == "given-1"
    assert scope["state"]["dex_request_id"] == "given-1"
    assert request_id({"type": "http", "headers": []}) != request_id(
        {"type": "http", "headers": []}
    )


def test_openapi_docs_are_served_at_docs_only_when_asked() -> None:
    async def with_docs(client: httpx.AsyncClient) -> None:
        schema = await client.get("/docs/openapi.json")
        page = await client.get("/docs")

        assert schema.status_code == 200
        assert "/orders" in schema.json()["paths"]
        assert "/healthz" not in schema.json()["paths"]
        assert page.status_code == 200

    async def without_docs(client: httpx.AsyncClient) -> None:
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/schema")).status_code == 404

    serve(make_app(openapi=True), with_docs)
    serve(make_app(), without_docs)


def test_before_send_hooks_run_on_the_event_loop_not_on_a_thread() -> None:
    """Litestar runs a sync `before_send` hook on a worker thread for every message sent
    (each WebSocket frame of the feed too; bench/feed.py found it: a new thread per frame
    with the shards' executor), so the app's hooks are coroutine functions, kept as they are."""
    import inspect

    app = make_app()
    assert app.before_send
    assert all(inspect.iscoroutinefunction(hook) for hook in app.before_send)


def test_guards_run_on_the_event_loop_not_on_a_thread(tmp_path: Path) -> None:
    """Litestar runs a sync guard on a worker thread for every request (bench/gateway.py
    found it: a thread started per request under the shards' executor), so the app's guards,
    the gateway's included, are coroutine functions."""
    import inspect

    from dex.app.units import gateway_unit
    from dex.bus import MemoryBus
    from dex.runtime.settings import Settings

    app = make_app()
    assert app.guards
    assert all(inspect.iscoroutinefunction(g) for g in app.guards)
    unit = gateway_unit(MemoryBus(), Settings(data_dir=str(tmp_path)))
    guards = unit.app_options["guards"]
    assert guards
    assert all(inspect.iscoroutinefunction(type(g).__call__) for g in guards)

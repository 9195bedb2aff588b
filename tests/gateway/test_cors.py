"""Browser clients: CORS answers for the configured origins only, and lets a signed request's
headers through the preflight."""

from __future__ import annotations

from tests.bus.contract import aio
from tests.gateway.harness import gateway

APP = "https://app.example"


@aio
async def test_a_configured_origin_may_call_and_sign_others_get_no_cors_headers() -> None:
    async with gateway(cors_origins=APP) as h:
        preflight = await h.client.options(
            "/v1/orders",
            headers={
                "origin": APP,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type,dex-api-key,dex-timestamp,"
                "dex-signature",
            },
        )
        assert preflight.status_code in (200, 204), preflight.text
        assert preflight.headers["access-control-allow-origin"] == APP
        allowed = preflight.headers["access-control-allow-headers"].lower()
        for name in ("dex-api-key", "dex-timestamp", "dex-signature", "content-type"):
            assert name in allowed
        got = await h.client.get("/v1/markets", headers={"origin": APP})
        assert got.headers["access-control-allow-origin"] == APP
        assert "x-ratelimit-remaining" in got.headers["access-control-expose-headers"].lower()

        other = await h.client.get("/v1/markets", headers={"origin": "https://evil.example"})
        assert other.status_code == 200
        assert "access-control-allow-origin" not in other.headers


@aio
async def test_no_origins_configured_means_no_cors() -> None:
    async with gateway() as h:
        got = await h.client.get("/v1/markets", headers={"origin": APP})
        assert "access-control-allow-origin" not in got.headers

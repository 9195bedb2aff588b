"""A service the gateway reads from that is down: `/readyz` names it (the gateway stays ready:
the order path does not need it), and the reads it serves answer 503 at once."""

from __future__ import annotations

from tests.bus.contract import aio
from tests.gateway.harness import gateway
from tests.support.polling import eventually


@aio
async def test_a_down_upstream_is_named_by_readyz_and_its_reads_fail_fast() -> None:
    async with gateway() as h:  # persistence and market data at 127.0.0.1:9: nobody there
        t = await h.onboard(fund={"USDC": "100"})
        await eventually(
            "the upstream check to find persistence down",
            lambda: "persistence" in h.gw.health.degraded(),
            timeout=10,
        )
        ready = await h.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["ready"] is True
        assert set(body["degraded"]) == {"persistence", "market-data"}
        assert body["degraded"]["persistence"].startswith("unreachable")

        got = await t.call("GET", "/v1/balances")
        assert got.status_code == 503, got.text
        assert got.json()["error"]["code"] == "unavailable"
        assert "persistence" in got.json()["error"]["message"]
        book = await h.client.get("/v1/markets/ETH-USDC/book")
        assert book.status_code == 503 and "market-data" in book.json()["error"]["message"]
        placed = await t.call(
            "POST",
            "/v1/orders",
            {"market": "ETH-USDC", "side": "buy", "type": "limit", "size": "0.01", "price": "1950"},
        )
        assert placed.status_code == 200 and placed.json()["status"] == "open", placed.text

"""Listen keys across gateway replicas: `dex up --distributed --replicas gateway=2` on a
private durable Redis. A listen key made through one replica opens a user-data stream on the
other, which carries the account's orders; closing it through the first ends that stream
with `listenKeyExpired`; neither replica knows it afterwards. (Behind a load balancer each
request may reach any replica: listen keys live in the Redis the replicas share.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from dex.app.launch import service_ports
from tests.services.test_smoke import free_base
from tests.support.dex_process import DexProcess, ready, wait_on_process
from tests.support.redis_server import private_redis_or_skip
from tests.support.trading import trader

WAIT = 20.0


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: Any) -> Iterator[tuple[str, str]]:
    """The two gateway replicas' URLs."""
    tmp: Path = tmp_path_factory.mktemp("dex")
    with private_redis_or_skip() as redis:
        base = free_base(20)
        env = {
            "DEX_PORT": str(base),
            "DEX_REDIS_URL": redis.url,
            "DEX_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'history.sqlite3'}",
            "DEX_STOP_TIMEOUT_MS": "5000",
        }
        dex = DexProcess.start(["up", "--distributed", "--replicas", "gateway=2"], env, tmp)
        try:
            ports = [*service_ports(base).values(), service_ports(base, 1)["gateway"]]
            for port in ports:
                wait_on_process(
                    f"service on {port} ready",
                    lambda p=port: ready(f"http://127.0.0.1:{p}"),
                    timeout=60,
                )
            yield (
                f"http://127.0.0.1:{service_ports(base)['gateway']}",
                f"http://127.0.0.1:{service_ports(base, 1)['gateway']}",
            )
        finally:
            assert dex.stop(timeout=60) == 0, dex.output()[-3000:]


def test_a_listen_key_serves_on_every_replica(gateways: tuple[str, str]) -> None:
    one, two = gateways
    client = trader(one, USDC="5000")
    assert client.credentials is not None
    header = {"X-MBX-APIKEY": client.credentials.api_key}
    with httpx.Client(timeout=WAIT) as http:
        made = http.post(f"{one}/api/v3/userDataStream", headers=header)
        assert made.status_code == 200, made.text
        key = made.json()["listenKey"]
        # the other replica knows it: the same key again, and kept alive there
        again = http.post(f"{two}/api/v3/userDataStream", headers=header)
        assert again.json()["listenKey"] == key
        kept = http.put(f"{two}/api/v3/userDataStream", params={"listenKey": key}, headers=header)
        assert kept.status_code == 200, kept.text
        with ws_connect(f"{two.replace('http', 'ws')}/ws/{key}") as ws:
            placed = client.place("ETH-USDC", "buy", "limit", size="0.1", price="1990")
            while (event := json.loads(ws.recv(timeout=WAIT))).get("e") != "executionReport":
                pass
            assert event["i"] == placed.order_id and event["X"] == "NEW"
            closed = http.delete(
                f"{one}/api/v3/userDataStream", params={"listenKey": key}, headers=header
            )
            assert closed.status_code == 200, closed.text
            while (event := json.loads(ws.recv(timeout=WAIT))).get("e") != "listenKeyExpired":
                pass
            assert event["listenKey"] == key
            with pytest.raises(ConnectionClosed) as ended:
                ws.recv(timeout=WAIT)
            assert ended.value.rcvd is not None and ended.value.rcvd.code == 1000
        for url in gateways:
            gone = http.put(
                f"{url}/api/v3/userDataStream", params={"listenKey": key}, headers=header
            )
            assert gone.status_code == 400 and gone.json()["code"] == -1125

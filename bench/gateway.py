"""Gateway benchmark, in parts: signature verification, and orders through HTTP.

Run from the repository root with the package installed (`pip install -e .`):

    python bench/gateway.py                  # every part, JSON on stdout
    python bench/gateway.py verify           # one part
    python bench/gateway.py verify --n 2000 --runs 1

Each part is a function `(args) -> dict` registered in `PARTS` with its own options; a new
part (say `orders`) adds a function, a sub-parser in `_add_<part>_options` and a `PARTS` row.

Part `verify` (one core, the garbage collector off, medians of `--runs` runs):
- `eip712_orders_per_s`: wallet-signed orders verified as the gateway does it -
  `TypedHasher.digest("Order", message)` + `recover_address` + `same_address` with the
  message's account. `--n` orders from 100 wallets, each with a unique client order id and
  random size and price (so the string-hash cache mostly misses; the cache is cleared before
  each run), signed untimed by `sign_typed`. Target: 8,000/s.
- `eth_account_orders_per_s`: the same check through eth-account's generic path
  (`encode_typed_data` + `Account.recover_message`) on the first n/10 orders, for scale.
- `hmac_requests_per_s`, `ed25519_requests_per_s`: `KeyRing.authenticate` of a signed
  POST /v1/orders with a ~230-byte JSON body, for 100 keys of each kind (lookup, expiry,
  window, signature, permission).
Correctness gate: every verification must succeed (recover the signer, authenticate the key);
otherwise the bench exits 1.

Part `orders`: a whole exchange started as `dex up` (embedded, `--mode embedded`) or
`dex up --distributed` on a private Redis (`--mode distributed`, every service one process),
in a temporary data folder on free ports, rate limits lifted. `--traders` fresh wallets
onboard (EIP-712 key registration, HMAC keys) and get faucet funds; then `--clients`
concurrent HTTP/1.1 keep-alive connections, each with its trader's signed requests, place
resting post-only limit orders (alternating sides, prices far from each other so nothing
trades) for `--seconds`. The load generator is bare `asyncio.Protocol` connections on uvloop
(no HTTP library) sending pre-signed requests (made once per second of their timestamp).
Printed: orders/s, acknowledgement latency p50/p99/max (request sent to the engine's outcome
received), the exchange's CPU per order (user + system of its processes and Redis, from
/proc: robust to the machine's other load, unlike the rates), and two ceilings:
`ceiling_trivial_route_per_s`, the same clients against `GET /v1/time` (a trivial route
through the gateway's whole HTTP stack), and `generator_alone_per_s`, the same clients and
requests against a stub server in another process that answers at once (the generator's own
ceiling). With `cores` and the load average at the start. Correctness gate: every order
answered 200 `open`, else exit 1.

Figures (2026-12-06, 2 cores shared with two other engineers' work: load average 1.0-2.7 at
the start of each run; 20 clients, 10 s; 6 embedded runs, 4 distributed):
- embedded: 1,650-1,980 orders/s, ack p50 9-11 ms, p99 17-23 ms, 460-510 us of CPU per
  order; trivial route 7,700-8,400/s; generator alone 110,000-170,000/s.
- distributed: 830-1,170 orders/s, p50 17-21 ms, p99 28-62 ms, 1,430-1,570 us of CPU per
  order (all processes and Redis); trivial route 3,000-4,800/s (each request also asks Redis
  for its rate limit).
- before this session's order-path work (commit 279ceee, the same generator; 2 runs, 1):
  embedded 1,350-1,430/s, p99 21-25 ms, 700-715 us per order; distributed 619/s, p99 71 ms,
  2,060 us. Interleaved with the same tree minus the order-path changes (3 pairs, a busier
  machine): 680-705 us per order without them, 505-560 us with them.
  (The old generator, asyncio streams signing each request, read 732-986/s embedded.)
- session 7 (2026-12-06, load 0.8-1.5; 6 embedded runs): the embedded bus group-commits
  (appends and readers' positions of one event-loop turn share one transaction and fsync;
  appends alone: ~0.4 commits per order instead of ~0.87): 2,530-2,640 orders/s, ack p50
  7.1-7.5 ms, p99 11.7-13.3 ms, 368-389 us of CPU per order; trivial route 9,700-9,900/s.
  Interleaved runs of the trees before: no group commit 2,050-2,230/s, p99 15-18 ms,
  400-430 us; appends grouped but not positions 2,220-2,510/s, p99 12-20 ms. (A try with
  the commits on a worker thread instead was slower, 1,140-1,190/s: the pipeline's commits
  are sequential, and each then waits for a thread hand-off.)
Target 5,000 orders/s with p99 < 20 ms embedded: not met. The generator can offer far more;
the exchange cannot: one Python process on one core doing HTTP, keys, rate limits, risk,
matching, market data and persistence spends ~400-475 us of CPU per order, and the embedded
bus's SQLite commits (an fsync each: ~0.87 per order at 20 clients before the group commit,
~0.4 after) block its event loop besides. Where the CPU goes (cProfile of the embedded server
during this load, the commits' waits left out, shares scaled to the measured CPU): the
gateway's own code ~150 us (fast path, keys, rate limit, order checks, outcome waits, log
tailing) + uvicorn/httptools ~47 + request id and log context ~11, i.e. ~210 us for the
HTTP front alone; bus reads and writes ~88; persistence ~74; risk ~55; the shards' runtime
~28; matching ~8; market data ~8. 5,000/s needs under ~200 us per order in that process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dex.gateway import keys
from dex.wire import signing

CHAIN_ID = 31337
SEED = 12345
TARGET_EIP712_PER_S = 8_000
NOW_MS = 1_700_000_000_000


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def _median_rate(count: int, runs: int, once: Callable[[], None]) -> float:
    times: list[int] = []
    gc.disable()
    try:
        for _ in range(runs):
            gc.collect()
            t0 = time.perf_counter_ns()
            once()
            times.append(time.perf_counter_ns() - t0)
    finally:
        gc.enable()
    return count * 1e9 / statistics.median(times)


# ---- part: verify ----


def _orders(n: int, rng: random.Random) -> list[tuple[dict[str, Any], str]]:
    wallets = [rng.randbytes(32) for _ in range(100)]
    addresses = [signing.address_of(w) for w in wallets]
    out = []
    for i in range(n):
        w = i % len(wallets)
        message = {
            "account": addresses[w],
            "market": rng.choice(["BTC-USDC", "ETH-USDC", "SOL-USDC"]),
            "side": rng.choice(["buy", "sell"]),
            "type": "limit",
            "size": f"{rng.randint(1, 100_000) / 10_000:.4f}",
            "price": f"{rng.randint(2_000_000, 7_000_000) / 100:.2f}",
            "quoteSize": "",
            "tif": rng.choice(["GTC", "IOC", "GTD"]),
            "postOnly": rng.random() < 0.2,
            "stp": "expire_taker",
            "clientOrderId": f"bench-{i}-{rng.getrandbits(32):08x}",
            "expiresAt": 0,
            "triggerPrice": "",
            "displaySize": "",
            "nonce": NOW_MS + i,
        }
        out.append((message, signing.sign_typed(wallets[w], "Order", message, CHAIN_ID)))
    return out


def _eip712_rate(orders: Sequence[tuple[dict[str, Any], str]], runs: int) -> float:
    digest = signing.TypedHasher(CHAIN_ID).digest
    recover, same = signing.recover_address, signing.same_address

    def once() -> None:
        signing._string_hash.cache_clear()  # each run starts cold but for what it re-caches
        for message, sig in orders:
            if not same(recover(digest("Order", message), sig), message["account"]):
                fail(f"order {message['clientOrderId']} did not recover to its account")

    return _median_rate(len(orders), runs, once)


def _eth_account_rate(orders: Sequence[tuple[dict[str, Any], str]], runs: int) -> float | None:
    try:
        from eth_account import Account
        from eth_account.messages import encode_typed_data
    except ImportError:
        return None
    doc = signing.eip712_document(CHAIN_ID)
    types = {"EIP712Domain": doc["types"]["EIP712Domain"], "Order": doc["types"]["Order"]}

    def once() -> None:
        for message, sig in orders:
            full = {
                "domain": doc["domain"],
                "types": types,
                "primaryType": "Order",
                "message": message,
            }
            got = Account.recover_message(encode_typed_data(full_message=full), signature=sig)
            if got.lower() != message["account"]:
                fail("eth-account recovered another address")

    return _median_rate(len(orders), runs, once)


def _request_rate(key_type: str, n: int, runs: int, rng: random.Random) -> float:
    kek = keys.parse_kek(keys.new_kek())
    ring = keys.KeyRing(kek)
    path = "/v1/orders"
    requests = []
    signers = []
    for i in range(100):
        account = "0x" + rng.randbytes(20).hex()
        api_key = keys.new_api_key()
        if key_type == "hmac":
            secret = keys.new_secret()
            material = keys.seal(kek, secret, f"{api_key}:{account}")
            signers.append(lambda p, s=secret: signing.hmac_signature(s, p))
        else:
            private = Ed25519PrivateKey.generate()
            raw = private.private_bytes_raw()
            pub = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            material = pub.hex()
            signers.append(lambda p, r=raw: signing.ed25519_signature(r, p))
        ring.add(_Record(account, api_key, key_type, material, "read,trade", 0))
        requests.append((api_key, i))
    signed = []
    for j in range(n):
        api_key, i = requests[j % len(requests)]
        ts = str(NOW_MS + j % 1000)
        body = json.dumps(
            {
                "market": "BTC-USDC",
                "side": "buy",
                "type": "limit",
                "size": "0.0125",
                "price": f"{rng.randint(2_000_000, 7_000_000) / 100:.2f}",
                "tif": "GTC",
                "postOnly": False,
                "clientOrderId": f"bench-{j}",
                "stp": "expire_taker",
            },
            separators=(",", ":"),
        ).encode()
        sig = signers[i](signing.request_payload(ts, "POST", path, body))
        signed.append((api_key, ts, sig, body))
    authenticate = ring.authenticate

    def once() -> None:
        for api_key, ts, sig, body in signed:
            authenticate(api_key, ts, sig, "POST", path, body, NOW_MS, 5_000, "trade")

    try:
        return _median_rate(len(signed), runs, once)
    except keys.AuthError as e:
        fail(f"{key_type} request refused: {e.code}")
        raise


class _Record:
    def __init__(
        self,
        account: str,
        api_key: str,
        key_type: str,
        material: str,
        permissions: str,
        expires_at: int,
    ) -> None:
        self.account, self.api_key, self.key_type = account, api_key, key_type
        self.material, self.permissions, self.expires_at = material, permissions, expires_at


def verify(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    orders = _orders(args.n, rng)
    ours = _eip712_rate(orders, args.runs)
    theirs = _eth_account_rate(orders[: max(1, args.n // 10)], args.runs)
    return {
        "orders": args.n,
        "runs": args.runs,
        "keccak": signing.keccak256.__qualname__,
        "eip712_orders_per_s": round(ours),
        "eth_account_orders_per_s": None if theirs is None else round(theirs),
        "target_eip712_per_s": TARGET_EIP712_PER_S,
        "meets_target": ours >= TARGET_EIP712_PER_S,
        "hmac_requests_per_s": round(_request_rate("hmac", args.n * 4, args.runs, rng)),
        "ed25519_requests_per_s": round(_request_rate("ed25519", args.n, args.runs, rng)),
    }


def _add_verify_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=5_000, help="signed orders (requests: 4x for HMAC)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=SEED)


# ---------------------------------------------------------------------- part: orders


def _free_port_block(n: int) -> int:
    """A base port with `n` free ports after it (the services' ports: base, base+1, ...)."""
    import socket

    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65000:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports")


def _start_exchange(mode: str, workdir: str) -> tuple[Any, str, list[Any]]:
    """`dex up` (or --distributed with its own Redis) in `workdir`; (process, URL, extras)."""
    import shutil
    import subprocess
    import urllib.request

    base = _free_port_block(60)
    env = {
        **os.environ,
        "DEX_DATA_DIR": f"{workdir}/data",
        "DEX_PORT": str(base),
        "DEX_RATE_LIMIT_ORDERS": "100000000/100000000",
        "DEX_RATE_LIMIT_PRIVATE": "100000000/100000000",
        "DEX_RATE_LIMIT_PUBLIC": "100000000/100000000",
        "DEX_FAUCET_MAX_PER_DAY": "1000000000",
        "DEX_FAUCET_MAX_PER_CALL": "1000000000",
        "DEX_LOG_LEVEL": "warning",
    }
    extras: list[Any] = []
    args = [sys.executable, "-m", "dex.cli", "up"]
    if mode == "distributed":
        redis_port = _free_port_block(1)
        server = shutil.which("redis-server")
        if server is None:
            fail("redis-server is not installed")
        redis = subprocess.Popen(
            [
                server,
                "--port",
                str(redis_port),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                workdir,
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        extras.append(redis)
        env["DEX_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        args.append("--distributed")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{base}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    with urllib.request.urlopen(url + "/v1/markets", timeout=2) as m:
                        if json.loads(m.read()):
                            return proc, url, extras
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    for e in extras:
        e.kill()
    fail(f"the exchange ({mode}) did not become ready")
    raise AssertionError


async def _orders_run(url: str, args: argparse.Namespace, pids: list[int]) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        traders = await onboard_traders(http, args.traders)
    host, port = url.removeprefix("http://").split(":")
    address = (host, int(port))
    time_request = _raw_request("GET", "/v1/time", b"", {}, host)
    trivial = await _load(
        address, args.clients, args.seconds, lambda c: lambda: time_request, _is_200
    )
    signers = [_OrderSigner(key, host) for key in traders]
    cpu_before = _cpu_s(pids)
    placed = await _load(
        address,
        args.clients,
        args.seconds,
        lambda c: signers[c % len(signers)].next,
        _is_open,
    )
    cpu_after = _cpu_s(pids)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {
        "orders": placed.count,
        "orders_per_s": round(placed.count / placed.seconds),
        "ack_p50_ms": _pct(placed.latencies, 0.50),
        "ack_p99_ms": _pct(placed.latencies, 0.99),
        "ack_max_ms": _pct(placed.latencies, 1.0),
        "refused_or_wrong": placed.bad,
        "server_cpu_us_per_order": None if cpu is None else round(cpu / placed.count * 1e6),
        "ceiling_trivial_route_per_s": round(trivial.count / trivial.seconds),
        "ceiling_p50_ms": _pct(trivial.latencies, 0.50),
        "ceiling_p99_ms": _pct(trivial.latencies, 0.99),
    }


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 2) if xs else 0.0


def _is_200(status: int, body: bytes) -> bool:
    return status == 200


def _is_open(status: int, body: bytes) -> bool:
    return status == 200 and b'"status":"open"' in body


class _OrderSigner:
    """One trader's signed `POST /v1/orders` requests, ready to send: resting post-only
    limit orders, alternating sides, at 50 prices a side within the demo market's band
    (2,000 +- 10%) and never crossing. A request's bytes are made once per second of its
    timestamp (well within the receive window), so the generator spends next to nothing
    on them."""

    def __init__(self, key: dict[str, Any], host: str) -> None:
        self.key = key
        self.host = host
        self.n = 0
        self.bodies = [_order_body(i) for i in range(100)]
        self.second = -1
        self.made: dict[int, bytes] = {}

    def next(self) -> bytes:
        self.n += 1
        second = int(time.time())
        if second != self.second:
            self.second, self.made = second, {}
        i = self.n % len(self.bodies)
        request = self.made.get(i)
        if request is None:
            body = self.bodies[i]
            ts = str(second * 1000)
            sig = signing.hmac_signature(
                self.key["secret"], signing.request_payload(ts, "POST", "/v1/orders", body)
            )
            headers = {
                "DEX-API-KEY": self.key["api_key"],
                "DEX-TIMESTAMP": ts,
                "DEX-SIGNATURE": sig,
                "content-type": "application/json",
            }
            request = self.made[i] = _raw_request("POST", "/v1/orders", body, headers, self.host)
        return request


def _order_body(i: int, client_order_id: str | None = None) -> bytes:
    sell = i % 2 == 0
    price = f"{2101 + i % 50}.00" if sell else f"{1899 - i % 50}.00"
    order = {
        "market": "ETH-USDC",
        "side": "sell" if sell else "buy",
        "type": "limit",
        "size": "0.01",
        "price": price,
        "post_only": True,
    }
    if client_order_id is not None:
        order["client_order_id"] = client_order_id
    return json.dumps(order, separators=(",", ":")).encode()


class _Loaded:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.bad = 0
        self.count = 0
        self.seconds = 0.0


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends a request, reads its answer (by its
    Content-Length), and sends the next, until `stop_at`. A bare protocol on the event
    loop: no streams, no HTTP library (httpx, then asyncio streams, capped the figures)."""

    def __init__(
        self,
        make: Callable[[], bytes],
        check: Callable[[int, bytes], bool],
        stop_at: float,
        out: _Loaded,
        done: asyncio.Future[None],
    ) -> None:
        self.make, self.check, self.stop_at, self.out, self.done = make, check, stop_at, out, done
        self.buf = b""
        self.sent_at = 0.0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        now = time.perf_counter()
        if now >= self.stop_at:
            self.transport.close()
            return
        self.sent_at = now
        self.transport.write(self.make())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        at = head.find(b"content-length:")
        line_end = head.find(b"\r\n", at)
        length = int(head[at + 15 : line_end if line_end > 0 else None]) if at >= 0 else 0
        if len(self.buf) < end + 4 + length:
            return
        took = time.perf_counter() - self.sent_at
        body, self.buf = self.buf[end + 4 : end + 4 + length], self.buf[end + 4 + length :]
        self.out.latencies.append(took)
        if not self.check(int(head[9:12]), body):
            self.out.bad += 1
            if self.out.bad <= 3:
                print(f"bad answer: {head[:12]!r} {body[-200:]!r}", file=sys.stderr)
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _load(
    address: tuple[str, int],
    clients: int,
    seconds: float,
    maker: Callable[[int], Callable[[], bytes]],
    check: Callable[[int, bytes], bool],
) -> _Loaded:
    """`clients` connections, each with its own request maker, for `seconds`."""
    loop = asyncio.get_running_loop()
    out = _Loaded()
    started = time.perf_counter()
    stop_at = started + seconds
    waits = []
    for c in range(clients):
        done: asyncio.Future[None] = loop.create_future()
        make = maker(c)
        await loop.create_connection(
            lambda make=make, done=done: _Connection(make, check, stop_at, out, done), *address
        )
        waits.append(done)
    await asyncio.gather(*waits)
    out.seconds = time.perf_counter() - started
    out.count = len(out.latencies)
    return out


def _stop_exchange(proc: Any, extras: list[Any]) -> None:
    """Stop what `_start_exchange` started: the exchange by SIGTERM (killed if it has not
    ended within 30 s), then its Redis."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    for e in extras:
        e.terminate()
        e.wait(10)


def _cpu_s(pids: list[int]) -> float | None:
    """CPU seconds (user + system) of the processes `pids` and their descendants so far,
    from /proc (None where there is no /proc): the exchange's cost, whatever the machine's
    other load does to its throughput. A process that ended meanwhile counts for nothing."""
    if not os.path.isdir("/proc/self"):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = list(pids)
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children: list[int] = []
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    children += [int(x) for x in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):  # it ended while we read it
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
        todo += children
    return total


async def onboard_traders(http: Any, n: int) -> list[dict[str, Any]]:
    """`n` fresh wallets, each with an HMAC key (EIP-712 `RegisterApiKey`) and faucet funds;
    their `POST /v1/api-keys` answers (api_key, secret)."""
    from eth_account import Account

    chain = (await http.get("/v1/eip712")).json()["domain"]["chainId"]
    keys = []
    for i in range(n):
        wallet = Account.create()
        msg = {
            "account": wallet.address,
            "keyType": "hmac",
            "publicKey": "",
            "permissions": "read,trade",
            "nonce": i + 1,
            "expiresAt": 0,
        }
        sig = signing.sign_typed(bytes(wallet.key), "RegisterApiKey", msg, chain)
        key = (await http.post("/v1/api-keys", json={**msg, "signature": sig})).json()
        for asset, amount in (("ETH", "100000"), ("USDC", "100000000")):
            r = await _signed(http, key, "POST", "/v1/faucet", {"asset": asset, "amount": amount})
            if r.status_code != 200:
                fail(f"faucet: {r.status_code} {r.text[:200]}")
        keys.append(key)
    return keys


def _auth_headers(key: dict[str, Any], method: str, path: str, body: bytes) -> dict[str, str]:
    ts = str(int(time.time() * 1000))
    sig = signing.hmac_signature(key["secret"], signing.request_payload(ts, method, path, body))
    return {
        "DEX-API-KEY": key["api_key"],
        "DEX-TIMESTAMP": ts,
        "DEX-SIGNATURE": sig,
        "content-type": "application/json",
    }


def _raw_request(method: str, path: str, body: bytes, headers: dict[str, str], host: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _raw_response(reader: Any) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _signed(http: Any, key: dict[str, Any], method: str, path: str, body: Any) -> Any:
    raw = json.dumps(body).encode()
    ts = str(int(time.time() * 1000))
    sig = signing.hmac_signature(key["secret"], signing.request_payload(ts, method, path, raw))
    headers = {
        "DEX-API-KEY": key["api_key"],
        "DEX-TIMESTAMP": ts,
        "DEX-SIGNATURE": sig,
        "content-type": "application/json",
    }
    return await http.request(method, path, content=raw, headers=headers)


def orders(args: argparse.Namespace) -> dict[str, Any]:
    import os
    import tempfile

    out: dict[str, Any] = {
        "cores": os.cpu_count(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "clients": args.clients,
        "seconds": args.seconds,
        "generator_alone_per_s": _generator_alone(args),
    }
    for mode in args.mode.split(","):
        with tempfile.TemporaryDirectory() as workdir:
            proc, url, extras = _start_exchange(mode, workdir)
            try:
                got = _run_loop(_orders_run(url, args, [proc.pid, *(e.pid for e in extras)]))
            finally:
                _stop_exchange(proc, extras)
        if got["refused_or_wrong"]:
            fail(f"{mode}: {got['refused_or_wrong']} orders were not answered 200 open")
        out[mode] = got
    return out


def _run_loop(main: Any) -> Any:
    """`main` on uvloop (the generator's own cost per request is then about halved)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


_STUB_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class _Stub(asyncio.Protocol):
    """Answers every request on the connection with the same 200 (ends at its blank line
    and content-length, as the generator's requests do)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n")[0]) if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            self.transport.write(_STUB_ANSWER)


def _serve_stub(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Stub, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    _run_loop(main())


def _generator_alone(args: argparse.Namespace) -> int:
    """Requests/s the generator offers on its own: the same clients sending the same signed
    order requests to a stub server in another process that answers each at once."""
    import multiprocessing

    port = _free_port_block(1)
    stub = multiprocessing.get_context("fork").Process(target=_serve_stub, args=(port,))
    stub.start()
    try:
        key = {"api_key": "dk_" + "0" * 32, "secret": "s" * 43}

        async def run() -> _Loaded:
            deadline = time.monotonic() + 10
            while True:  # until the stub listens
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", port)
                    w.close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            signers = [_OrderSigner(key, "127.0.0.1") for _ in range(args.clients)]
            return await _load(
                ("127.0.0.1", port),
                args.clients,
                min(args.seconds, 5.0),
                lambda c: signers[c].next,
                _is_200,
            )

        got = _run_loop(run())
    finally:
        stub.terminate()
        stub.join(10)
    return round(got.count / got.seconds)


def _add_orders_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", default="embedded,distributed", help="embedded, distributed or both")
    p.add_argument("--clients", type=int, default=20, help="concurrent HTTP clients")
    p.add_argument("--traders", type=int, default=20, help="wallets (one API key each)")
    p.add_argument("--seconds", type=float, default=10.0)


PARTS: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Any]], Callable[..., None]]] = {
    "verify": (verify, _add_verify_options),
    "orders": (orders, _add_orders_options),
}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = ap.add_subparsers(dest="part")
    for name, (_, add_options) in PARTS.items():
        add_options(sub.add_parser(name))
    args = ap.parse_args(argv)
    if args.part is None:  # every part, each with its defaults
        chosen = {name: sub.choices[name].parse_args([]) for name in PARTS}
    else:
        chosen = {args.part: args}
    result: dict[str, Any] = {"python": platform.python_version()}
    for name, part_args in chosen.items():
        result[name] = PARTS[name][0](part_args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

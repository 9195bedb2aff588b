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
concurrent HTTP/1.1 keep-alive clients, each trader's own signed requests, place resting
post-only limit orders (alternating sides, prices far from each other so nothing trades) for
`--seconds`. Printed: orders/s, acknowledgement latency p50/p99/max (request sent to the
engine's outcome received), and the load generator's own ceiling: the same clients against
`GET /v1/time` (a trivial route) with the same concurrency, so a figure near the ceiling says
the generator, not the exchange, was the limit. Correctness gate: every order answered 200
`open`, else exit 1.
"""

from __future__ import annotations

import argparse
import gc
import json
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
    import os
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


async def _orders_run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    import httpx

    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        traders = await onboard_traders(http, args.traders)

        host, port = url.removeprefix("http://").split(":")

        async def load(kind: str) -> tuple[int, list[float], int]:
            """`--clients` keep-alive connections, each sending a request and reading its
            answer in turn (a bare HTTP/1.1 client: httpx's own cost capped the figures)."""
            stop_at = time.perf_counter() + args.seconds
            latencies: list[float] = []
            bad = 0

            async def client(c: int) -> None:
                nonlocal bad
                key = traders[c % len(traders)]
                reader, writer = await asyncio.open_connection(host, int(port))
                n = 0
                try:
                    while time.perf_counter() < stop_at:
                        n += 1
                        if kind == "time":
                            request = _raw_request("GET", "/v1/time", b"", {}, host)
                        else:
                            sell = n % 2 == 0
                            # within the demo market's band (2,000 +- 10%), never crossing
                            price = f"{2101 + n % 50}.00" if sell else f"{1899 - n % 50}.00"
                            body = json.dumps(
                                {
                                    "market": "ETH-USDC",
                                    "side": "sell" if sell else "buy",
                                    "type": "limit",
                                    "size": "0.01",
                                    "price": price,
                                    "post_only": True,
                                }
                            ).encode()
                            headers = _auth_headers(key, "POST", "/v1/orders", body)
                            request = _raw_request("POST", "/v1/orders", body, headers, host)
                        t0 = time.perf_counter()
                        writer.write(request)
                        status, answer = await _raw_response(reader)
                        latencies.append(time.perf_counter() - t0)
                        ok = status == 200 and (kind == "time" or b'"status":"open"' in answer)
                        if not ok:
                            bad += 1
                            if bad <= 3:
                                print(f"bad answer: {status} {answer[-200:]!r}", file=sys.stderr)
                finally:
                    writer.close()

            await asyncio.gather(*(client(c) for c in range(args.clients)))
            return len(latencies), latencies, bad

        count_t, lat_t, _ = await load("time")
        count, lat, bad = await load("orders")

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 2) if xs else 0.0

    return {
        "orders": count,
        "orders_per_s": round(count / args.seconds),
        "ack_p50_ms": pct(lat, 0.50),
        "ack_p99_ms": pct(lat, 0.99),
        "ack_max_ms": pct(lat, 1.0),
        "refused_or_wrong": bad,
        "ceiling_trivial_route_per_s": round(count_t / args.seconds),
        "ceiling_p50_ms": pct(lat_t, 0.50),
        "ceiling_p99_ms": pct(lat_t, 0.99),
    }


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
    import asyncio
    import tempfile

    out: dict[str, Any] = {"clients": args.clients, "seconds": args.seconds}
    for mode in args.mode.split(","):
        with tempfile.TemporaryDirectory() as workdir:
            proc, url, extras = _start_exchange(mode, workdir)
            try:
                got = asyncio.run(_orders_run(url, args))
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                for e in extras:
                    e.terminate()
                    e.wait(10)
        if got["refused_or_wrong"]:
            fail(f"{mode}: {got['refused_or_wrong']} orders were not answered 200 open")
        out[mode] = got
    return out


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

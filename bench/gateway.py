"""Gateway benchmark, in parts: signature verification (more parts to come).

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
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
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


PARTS: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Any]], Callable[..., None]]] = {
    "verify": (verify, _add_verify_options),
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

"""The exchange's refusals as exceptions: `DexError` and one subclass per stable error code.

Owns the mapping from an error answer `{"error": {"code", "message", "field"}}` (any
status) to an exception: the subclass named after the code in CamelCase, or `DexError`
itself for a code this library does not know (a newer server), so a caller can always catch
`DexError`. `RateLimited.retry_after` is the `Retry-After` header in seconds.
"""

from __future__ import annotations

from typing import Any


class DexError(Exception):
    """A refusal: the HTTP status, the stable code, a message and the field it names."""

    code = ""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" ({field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after


# The gateway's own codes (dex.gateway, dex.runtime.http).
class InvalidRequest(DexError):
    code = "invalid_request"


class InvalidJson(DexError):
    code = "invalid_json"


class Unauthorized(DexError):
    code = "unauthorized"


class Forbidden(DexError):
    code = "forbidden"


class NotFound(DexError):
    code = "not_found"


class MethodNotAllowed(DexError):
    code = "method_not_allowed"


class NotAcceptable(DexError):
    code = "not_acceptable"


class Conflict(DexError):
    code = "conflict"


class PayloadTooLarge(DexError):
    code = "payload_too_large"


class UnsupportedMediaType(DexError):
    code = "unsupported_media_type"


class RateLimited(DexError):
    code = "rate_limited"


class InternalError(DexError):
    code = "internal_error"


class Unavailable(DexError):
    code = "unavailable"


class OutcomeUnknown(DexError):
    """No outcome in time: the request is logged and takes effect (look it up, do not
    resend blindly)."""

    code = "outcome_unknown"


class MissingCredentials(DexError):
    code = "missing_credentials"


class KeyRevoked(DexError):
    code = "key_revoked"


class KeyExpired(DexError):
    code = "key_expired"


class BadSignature(DexError):
    code = "bad_signature"


class TimestampOutOfWindow(DexError):
    code = "timestamp_out_of_window"


class PermissionDenied(DexError):
    code = "permission_denied"


class NotCaughtUp(DexError):
    """The history has not yet applied the account's last write (read-your-writes): retry
    the read shortly."""

    code = "not_caught_up"


class FaucetLimit(DexError):
    code = "faucet_limit"


class UnknownMarket(DexError):
    code = "unknown_market"


class DuplicateDeposit(DexError):
    code = "duplicate_deposit"


# Risk's codes (dex.risk.codes.RiskCode).
class InvalidAddress(DexError):
    code = "invalid_address"


class InvalidClientOrderId(DexError):
    code = "invalid_client_order_id"


class InvalidAmount(DexError):
    code = "invalid_amount"


class UnknownAsset(DexError):
    code = "unknown_asset"


class GlobalHalt(DexError):
    code = "global_halt"


class MarketUnavailable(DexError):
    code = "market_unavailable"


class AccountFrozen(DexError):
    code = "account_frozen"


class TradingDisabled(DexError):
    code = "trading_disabled"


class NotionalLimit(DexError):
    code = "notional_limit"


class OpenOrdersLimit(DexError):
    code = "open_orders_limit"


class NoReferencePrice(DexError):
    code = "no_reference_price"


class InsufficientFunds(DexError):
    code = "insufficient_funds"


class UnknownOrder(DexError):
    code = "unknown_order"


class AmendInProgress(DexError):
    code = "amend_in_progress"


class InvalidFeeRates(DexError):
    code = "invalid_fee_rates"


class NonceUsed(DexError):
    code = "nonce_used"


class UnknownKey(DexError):
    code = "unknown_key"


class TooManyKeys(DexError):
    code = "too_many_keys"


class InvalidKey(DexError):
    code = "invalid_key"


# The engine's codes (dex.core.errors.RejectCode) on an amend or cancel it refused.
class MarketStatus(DexError):
    code = "market_status"


class DuplicateOrderId(DexError):
    code = "duplicate_order_id"


class DuplicateClientOrderId(DexError):
    code = "duplicate_client_order_id"


class InvalidOrder(DexError):
    code = "invalid_order"


class BelowMinSize(DexError):
    code = "below_min_size"


class BelowMinNotional(DexError):
    code = "below_min_notional"


class TooManyOpenOrders(DexError):
    code = "too_many_open_orders"


class OutsidePriceBand(DexError):
    code = "outside_price_band"


class PostOnlyWouldTake(DexError):
    code = "post_only_would_take"


class StopWouldTrigger(DexError):
    code = "stop_would_trigger"


class AlreadyExpired(DexError):
    code = "already_expired"


class NotAmendable(DexError):
    code = "not_amendable"


def _all_codes() -> dict[str, type[DexError]]:
    found: dict[str, type[DexError]] = {}
    for cls in DexError.__subclasses__():
        found[cls.code] = cls
    return found


BY_CODE: dict[str, type[DexError]] = _all_codes()


def _retry_after(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None  # an HTTP date: we never send one, and a guess is worse than none


def error_from(status: int, body: Any, retry_after: str | None = None) -> DexError:
    """The exception for an error answer; a body without the error shape still raises
    (`DexError` with code "http_<status>"), never passes as a result."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        return DexError(status, f"http_{status}", str(body)[:200], None, _retry_after(retry_after))
    code = str(detail.get("code", f"http_{status}"))
    field = detail.get("field")
    cls = BY_CODE.get(code, DexError)
    return cls(
        status,
        code,
        str(detail.get("message", "")),
        field if isinstance(field, str) else None,
        _retry_after(retry_after),
    )

"""Shared store plumbing: connection, transactions, cursors, cancellation reasons."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.errors import InvalidInput
from chalicelib.settings import Settings, get_settings

TransactionBody = Callable[[TransactWrite], None]


@dataclass(frozen=True, slots=True)
class TxOutcome:
    """How a transaction ended: committed, or which items' conditions failed."""

    committed: bool
    failed_items: tuple[int, ...] = ()
    conflict: bool = False


class Transactions:
    """Runs `TransactWriteItems` and reports cancellations as data, not exceptions.

    Note: PynamoDB sends condition checks first, then deletes, puts and updates, whatever
    the order of the calls; `failed_items` indexes that order.
    """

    def __init__(self, settings: Settings) -> None:
        retries = 8 if settings.dynamodb_endpoint else 3  # as the models (chalicelib.store.models.configure)
        self._connection = Connection(
            region=settings.aws_region, host=settings.dynamodb_endpoint, max_retry_attempts=retries
        )

    def run(self, body: TransactionBody) -> TxOutcome:
        """Commit the writes `body` adds; a cancelled transaction returns what failed."""
        try:
            with TransactWrite(connection=self._connection) as tx:
                body(tx)
        except TransactWriteError as exc:
            reasons = exc.cancellation_reasons or []
            failed = tuple(i for i, r in enumerate(reasons) if r is not None and r.code == "ConditionalCheckFailed")
            conflict = any(r is not None and r.code == "TransactionConflict" for r in reasons) or not reasons
            if not failed and not conflict:
                raise
            return TxOutcome(committed=False, failed_items=failed, conflict=conflict and not failed)
        return TxOutcome(committed=True)


def conditional_write(write: Callable[[], object]) -> bool:
    """Run a conditional write (any condition: not-exists, a version, a state); True when it was
    written, False (instead of an exception) when its condition failed."""
    try:
        write()
    except PynamoDBException as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            return False
        raise
    return True


MAX_CURSOR = 4096


def _cursor_key() -> bytes:
    """The HMAC key of cursors, derived from the JWT secret (a cursor is as forgeable as a token)."""
    secret = get_settings().jwt_secret.get_secret_value().encode()
    return hmac.new(secret, b"fenxiao cursor v1", hashlib.sha256).digest()


def seal(payload: bytes) -> str:
    """An opaque, signed token for `payload` (a cursor): base64url(payload) . base64url(HMAC)."""
    mac = hmac.new(_cursor_key(), payload, hashlib.sha256).digest()[:16]
    return f"{_b64(payload)}.{_b64(mac)}"


def unseal(token: str) -> bytes:
    """The payload of a token made by `seal`, or 400 `invalid_cursor` (forged, changed, too long)."""
    body, _, mac = token.partition(".")
    try:
        if len(token) > MAX_CURSOR or not mac:
            raise ValueError("malformed")
        payload, tag = _unb64(body), _unb64(mac)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("cursor is not valid", code="invalid_cursor") from exc
    expected = hmac.new(_cursor_key(), payload, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(tag, expected):
        raise InvalidInput("cursor is not valid", code="invalid_cursor")
    return payload


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode())


def encode_cursor(last_key: dict[str, Any] | None) -> str | None:
    """An opaque, signed cursor for a DynamoDB LastEvaluatedKey."""
    if not last_key:
        return None
    return seal(json.dumps(last_key, separators=(",", ":"), sort_keys=True).encode())


def decode_cursor(cursor: str | None, *, hash_attr: str, hash_value: str) -> dict[str, Any] | None:
    """The LastEvaluatedKey inside a cursor, refused unless it is ours, unchanged (HMAC) and
    belongs to this query: a crafted start key never reaches DynamoDB."""
    if not cursor:
        return None
    try:
        key = json.loads(unseal(cursor))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not valid", code="invalid_cursor") from exc
    if not isinstance(key, dict) or key.get(hash_attr) != {"S": hash_value}:
        raise InvalidInput("cursor does not belong to this list", code="invalid_cursor")
    if not all(isinstance(v, dict) and len(v) == 1 for v in key.values()):
        raise InvalidInput("cursor is not valid", code="invalid_cursor")
    return key

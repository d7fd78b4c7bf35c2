"""The merchant order API in-process (chalice.test.Client) on DynamoDB Local: signed events are
applied once however often they come, commission follows, and refused requests write nothing."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from chalice.test import Client

from app import app
from chalicelib import signing
from chalicelib.clock import utcnow
from chalicelib.entities import Principal, Role
from chalicelib.errors import InvalidInput, Missing, StateConflict
from chalicelib.services import logins, merchant, merchant_credentials, plans, referrals, shares
from chalicelib.store import audit, get_store
from chalicelib.store.models import MerchantModel
from tests.envutil import environ
from tests.stack import OTHER_TENANT, Stack, reset_caches, unique

PATH = "/v1/merchant/order-events"
MERCHANT, SECRET = "shop1", "shop1-secret-0123456789abcdef"
PLAN_10_5_2 = {"rates_bps": [1000, 500, 200], "cap_bps": 3000}


SHOP2, SHOP2_SECRET = "shop2", "shop2-secret-0123456789abcdef"  # a merchant of the other tenant


@pytest.fixture(scope="module")
def client(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    for merchant_id, tenant, secret in ((MERCHANT, stack.tenant, SECRET), (SHOP2, OTHER_TENANT, SHOP2_SECRET)):
        if get_store().merchants.get(merchant_id) is None:
            merchant_credentials.create(tenant, merchant_id, merchant_id, secret, "system:test")
    with Client(app, project_dir=str(tmp_path_factory.mktemp("no-config"))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def plan(stack: Stack, client: Client) -> int:
    owner = stack.principal("owner", Role.OWNER)
    return int(plans.activate(owner, plans.create(owner, PLAN_10_5_2)["version"])["version"])


def chain(stack: Stack, depth: int) -> list[Principal]:
    """A shares to B, B to C ...: the last one's upline is the ones before, nearest first."""
    people = [stack.principal(logins.login(f"dev-{unique('u')}", stack.tenant).user.id) for _ in range(depth)]
    for sharer, friend in itertools.pairwise(people):
        assert referrals.scan(friend, shares.create(sharer, None, None).code).status.value == "bound"
    return people


def openid(stack: Stack, user: Principal) -> str:
    found = get_store().users.get(stack.tenant, user.subject)
    assert found is not None
    return found.openid


def signed(
    body: bytes, *, merchant_id: str = MERCHANT, secret: str = SECRET, nonce: str | None = None, at: float | None = None
) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    nonce = nonce or uuid.uuid4().hex
    return {
        "Content-Type": "application/json",
        "X-Merchant-Id": merchant_id,
        "X-Timestamp": timestamp,
        "X-Nonce": nonce,
        "X-Signature": signing.sign(secret, timestamp, nonce, body),
    }


def post(client: Client, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    response = client.http.post(PATH, headers=headers, body=body)
    return response.status_code, json.loads(response.body or b"null")


def send(client: Client, event: dict[str, Any] | bytes, appid: str | None = None, **sign: Any) -> tuple[int, Any]:
    """Sign and post an event (a fresh nonce each time unless one is given)."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = signed(body, **sign)
    if appid:
        headers["X-Appid"] = appid
    return post(client, body, headers)


def days_ago(days: int) -> str:
    return (utcnow() - timedelta(days=days)).replace(microsecond=0).isoformat()


def paid(buyer_openid: str, amount_fen: int = 10_000, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": unique("pay"),
        "type": "paid",
        "order_id": unique("SO"),
        "openid": buyer_openid,
        "amount_fen": amount_fen,
        **fields,
    }


def follow_up(event: dict[str, Any], kind: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": unique(kind), "type": kind, "order_id": event["order_id"], "openid": event["openid"], **fields}


def our_order(stack: Stack, event: dict[str, Any], tenant: str | None = None, merchant_id: str = MERCHANT) -> Any:
    tenant = tenant or stack.tenant
    return get_store().orders.get(tenant, merchant.order_id_for(tenant, merchant_id, event["order_id"]))


def account(stack: Stack, promoter: Principal) -> dict[str, int]:
    return get_store().ledger.account(stack.tenant, promoter.subject)


def assert_error(status: int, payload: Any, expected_status: int, code: str) -> None:
    assert status == expected_status, payload
    assert set(payload) == {"error"}
    assert payload["error"]["code"] == code
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]


def nonce_remembered(stack: Stack, nonce: str, tenant: str | None = None) -> bool:
    from chalicelib.store.models import NonceModel

    try:
        NonceModel.get(f"{tenant or stack.tenant}#{MERCHANT}#{nonce}", consistent_read=True)
    except NonceModel.DoesNotExist:
        return False
    return True


# --- paid -----------------------------------------------------------------------------------


def test_a_paid_event_creates_a_paid_order_and_commission_for_the_upline(
    stack: Stack, client: Client, plan: int
) -> None:
    # Given a 10/5/2 plan, top -> sharer -> buyer, and the sharer's code
    top, sharer, buyer = chain(stack, 3)
    code = shares.create(sharer, None, "shop").code
    lines = [{"product_id": "SKU-1", "qty": 2, "paid_fen": 6_001}, {"product_id": "SKU-2", "qty": 1, "paid_fen": 3_999}]
    when = days_ago(2)
    event = paid(openid(stack, buyer), lines=lines, share_code=code, occurred_at=when)

    # When the shop reports the payment
    status, result = send(client, event, appid=stack.tenant)

    # Then a paid order exists with the attribution of now and the shop's lines
    assert status == 200, result
    assert result["status"] == "applied" and result["order_status"] == "paid" and result["amount_fen"] == 10_000
    order = our_order(stack, event)
    assert result["order_id"] == order.id and result["merchant_order_id"] == event["order_id"]
    assert order.status.value == "paid" and order.buyer == buyer.subject and order.source == "merchant:shop1"
    assert order.snapshot.upline == (sharer.subject, top.subject) and order.snapshot.share_code == code
    assert order.snapshot.plan_version == plan
    assert [(x.product_id, x.qty, x.unit_price_fen, x.paid_fen) for x in order.lines] == [
        ("SKU-1", 2, 3_001, 6_001),
        ("SKU-2", 1, 3_999, 3_999),
    ]
    assert order.list_fen - order.discount_fen == order.amount_fen == 10_000
    assert order.paid_at.isoformat() == when

    # And, once the stream is processed, the upline earns on the amount paid
    stack.drain()
    assert account(stack, sharer)["pending_fen"] == 1_000
    assert account(stack, top)["pending_fen"] == 500

    # And both versions of the order are audited as the merchant's doing
    from chalicelib.store import audit

    records = list(audit.for_entity(stack.tenant, f"order:{order.id}"))
    assert [(r.action, r.actor) for r in records] == [
        ("order.created", "merchant:shop1"),
        ("order.paid", "merchant:shop1"),
    ]
    assert json.loads(records[1].data)["event_id"] == event["event_id"]
    assert audit.verify_chain(records)


def test_the_same_paid_event_three_times_pays_once(stack: Stack, client: Client, plan: int) -> None:
    top, sharer, buyer = chain(stack, 3)
    event = paid(openid(stack, buyer), amount_fen=5_000)

    status, first = send(client, event)
    assert (status, first["status"]) == (200, "applied")
    stack.drain()
    once = (account(stack, sharer), account(stack, top))

    again = [send(client, event) for _ in range(2)]
    stack.drain()

    assert [(s, r["status"], r["order_id"]) for s, r in again] == [(200, "duplicate", first["order_id"])] * 2
    assert (account(stack, sharer), account(stack, top)) == once
    assert once[0]["pending_fen"] == 500
    assert len(get_store().ledger.lines_of_order(stack.tenant, first["order_id"], [sharer.subject])) == 1


def test_concurrent_deliveries_of_one_payment_apply_once(stack: Stack, client: Client, plan: int) -> None:
    sharer, buyer = chain(stack, 2)
    event = merchant.MerchantEvent(
        event_id=unique("pay"),
        type=merchant.EventType.PAID,
        order_id=unique("SO"),
        openid=openid(stack, buyer),
        amount_fen=2_000,
    )

    def deliver(_: int) -> str:
        caller = merchant.Caller(merchant=MERCHANT, nonce=uuid.uuid4().hex, tenant=stack.tenant)
        return str(merchant.apply(caller, event)["status"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = sorted(pool.map(deliver, range(4)))

    assert outcomes == ["applied", "duplicate", "duplicate", "duplicate"]
    stack.drain()
    assert account(stack, sharer)["pending_fen"] == 200


def test_a_paid_event_for_someone_new_creates_the_user_and_earns_nobody_anything(
    stack: Stack, client: Client, plan: int
) -> None:
    stranger = f"o{uuid.uuid4().hex}"
    uid = logins.user_id_for(stack.tenant, stranger)
    assert get_store().users.get(stack.tenant, uid) is None

    status, result = send(client, paid(stranger, amount_fen=1_234))

    assert (status, result["status"]) == (200, "applied")
    user = get_store().users.get(stack.tenant, uid)
    assert user is not None and user.openid == stranger and user.upline == ()
    stack.drain()
    assert get_store().ledger.lines_of_order(stack.tenant, result["order_id"], [uid]) == []


def test_a_merchant_acts_in_its_own_tenant_only(stack: Stack, client: Client) -> None:
    """The attack of issue 10: shop1 posted a paid order of 500,000 fen into another tenant by
    naming it in the unsigned X-Appid, and got `applied`."""
    event = paid(f"o{uuid.uuid4().hex}", amount_fen=500_000)

    assert_error(*send(client, event, appid=OTHER_TENANT), 403, "merchant_tenant_mismatch")
    assert our_order(stack, event, OTHER_TENANT) is None
    assert our_order(stack, event) is None

    # without X-Appid, or naming its own tenant, the merchant's tenant is used
    status, here = send(client, event)
    assert (status, here["status"]) == (200, "applied")
    assert our_order(stack, event) is not None and our_order(stack, event, OTHER_TENANT) is None
    assert send(client, {**event, "event_id": unique("pay")}, appid=stack.tenant)[1]["status"] == "duplicate"


def test_each_tenant_has_its_own_merchants(stack: Stack, client: Client) -> None:
    event = paid(f"o{uuid.uuid4().hex}", amount_fen=100)

    status, there = send(client, event, merchant_id=SHOP2, secret=SHOP2_SECRET)
    assert (status, there["status"]) == (200, "applied")
    assert our_order(stack, event, OTHER_TENANT, merchant_id=SHOP2) is not None
    mismatch = send(client, event, appid=stack.tenant, merchant_id=SHOP2, secret=SHOP2_SECRET)
    assert_error(*mismatch, 403, "merchant_tenant_mismatch")


def test_a_paid_event_that_contradicts_the_order_is_refused(stack: Stack, client: Client) -> None:
    event = paid(f"o{uuid.uuid4().hex}", amount_fen=100)
    assert send(client, event)[0] == 200

    assert_error(*send(client, {**event, "amount_fen": 101, "event_id": unique("pay")}), 409, "order_mismatch")
    assert_error(*send(client, {**event, "openid": "o-someone-else"}), 409, "order_mismatch")
    assert our_order(stack, event).amount_fen == 100


def test_an_unknown_share_code_is_a_404_and_writes_no_order_and_no_user(stack: Stack, client: Client) -> None:
    stranger = f"o{uuid.uuid4().hex}"
    event = paid(stranger, share_code="ZZZZZZZZ")

    assert_error(*send(client, event), 404, "unknown_share")

    assert our_order(stack, event) is None
    assert get_store().users.get(stack.tenant, logins.user_id_for(stack.tenant, stranger)) is None


# --- authentication -------------------------------------------------------------------------


def test_a_replayed_request_is_refused(stack: Stack, client: Client) -> None:
    body = json.dumps(paid(f"o{uuid.uuid4().hex}", amount_fen=100)).encode()
    headers = signed(body)

    assert post(client, body, headers)[0] == 200
    assert_error(*post(client, body, headers), 401, "replayed_nonce")
    # the same nonce with another event, properly signed, is a replay as well
    other = json.dumps(paid(f"o{uuid.uuid4().hex}", amount_fen=100)).encode()
    assert_error(*post(client, other, signed(other, nonce=headers["X-Nonce"])), 401, "replayed_nonce")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"secret": "not-the-secret-of-shop1"}, "bad_signature"),
        ({"merchant_id": "nobody"}, "bad_signature"),
        ({"merchant_id": "shop2"}, "bad_signature"),  # another merchant's id with shop1's secret
        ({"at": time.time() - 301}, "stale_request"),
        ({"at": time.time() + 3600}, "stale_request"),
        ({"nonce": "short"}, "bad_signature"),
    ],
)
def test_unauthentic_or_stale_requests_are_401_and_write_nothing(
    stack: Stack, client: Client, change: dict[str, Any], code: str
) -> None:
    event = paid(f"o{uuid.uuid4().hex}", amount_fen=100)
    body = json.dumps(event).encode()
    headers = signed(body, **change)

    assert_error(*post(client, body, headers), 401, code)

    assert our_order(stack, event) is None
    assert not nonce_remembered(stack, headers["X-Nonce"])


def test_a_tampered_body_or_missing_headers_are_401(stack: Stack, client: Client) -> None:
    event = paid(f"o{uuid.uuid4().hex}", amount_fen=100)
    body = json.dumps(event).encode()
    headers = signed(body)

    tampered = json.dumps({**event, "amount_fen": 1}).encode()
    assert_error(*post(client, tampered, headers), 401, "bad_signature")
    for name in ("X-Merchant-Id", "X-Timestamp", "X-Nonce", "X-Signature"):
        assert_error(*post(client, body, {k: v for k, v in headers.items() if k != name}), 401, "bad_signature")
    assert our_order(stack, event) is None
    assert post(client, body, headers)[0] == 200  # the nonce was not used up by the refusals


# --- malformed bodies -----------------------------------------------------------------------


def _event(**fields: Any) -> dict[str, Any]:
    return {**paid(f"o{uuid.uuid4().hex}", amount_fen=100), **fields}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_body"),
        (b"", "invalid_body"),
        (_event(type="shipped"), "invalid_body"),
        (_event(amount_fen="100"), "invalid_body"),
        (_event(amount_fen=0), "invalid_body"),
        (_event(amount_fen=10.5), "invalid_body"),
        (_event(amount_fen=None), "invalid_body"),
        (_event(order_id="x" * 65), "invalid_body"),
        (_event(order_id="has space"), "invalid_body"),
        (_event(event_id=""), "invalid_body"),
        (_event(openid=""), "invalid_body"),
        (_event(extra=1), "invalid_body"),
        (_event(lines=[]), "invalid_body"),
        (_event(lines=[{"product_id": "A", "qty": 1, "paid_fen": 99}]), "invalid_body"),
        (_event(lines=[{"product_id": "A", "qty": 0, "paid_fen": 100}]), "invalid_body"),
        (_event(occurred_at="2026-11-11T09:30:00"), "invalid_body"),
        (_event(occurred_at="2999-01-01T00:00:00Z"), "invalid_occurred_at"),
        (_event(occurred_at="2020-01-01T00:00:00Z"), "invalid_occurred_at"),  # older than the return window
        (_event(type="received", share_code="K7Q2M9XD"), "invalid_body"),
        (_event(type="refunded", amount_fen=None), "invalid_body"),
    ],
)
def test_malformed_bodies_are_400_and_write_nothing(
    stack: Stack, client: Client, body: dict[str, Any] | bytes, code: str
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = signed(raw)

    assert_error(*post(client, raw, headers), 400, code)

    assert not nonce_remembered(stack, headers["X-Nonce"])
    if isinstance(body, dict) and isinstance(body.get("order_id"), str):
        assert our_order(stack, body) is None
        uid = logins.user_id_for(stack.tenant, str(body["openid"]))
        assert get_store().users.get(stack.tenant, uid) is None
    # the nonce is still good for a well-formed event
    good = json.dumps(_event()).encode()
    assert post(client, good, signed(good, nonce=headers["X-Nonce"]))[0] == 200


# --- received and refunded ------------------------------------------------------------------


def test_receipt_then_a_partial_refund_reduces_commission_in_proportion(
    stack: Stack, client: Client, plan: int
) -> None:
    top, sharer, buyer = chain(stack, 3)
    event = paid(openid(stack, buyer))
    assert send(client, event)[0] == 200

    status, received = send(client, follow_up(event, "received", occurred_at=days_ago(1)))
    assert (status, received["status"], received["order_status"]) == (200, "applied", "received")
    stack.drain()
    assert account(stack, sharer)["frozen_fen"] == 1_000 and account(stack, sharer)["pending_fen"] == 0
    assert send(client, follow_up(event, "received"))[1]["status"] == "duplicate"

    status, refunded = send(client, follow_up(event, "refunded", amount_fen=3_000))
    assert (status, refunded["status"], refunded["refunded_fen"]) == (200, "applied", 3_000)
    stack.drain()

    assert account(stack, sharer)["frozen_fen"] == 700
    assert account(stack, top)["frozen_fen"] == 350
    order = our_order(stack, event)
    assert order.status.value == "received" and order.refunded_fen == 3_000


def test_a_refund_event_twice_is_applied_once(stack: Stack, client: Client, plan: int) -> None:
    sharer, buyer = chain(stack, 2)
    event = paid(openid(stack, buyer))
    send(client, event)
    refund = follow_up(event, "refunded", amount_fen=2_000)

    outcomes = [send(client, refund) for _ in range(3)]
    stack.drain()

    assert [(s, r["status"], r["refunded_fen"]) for s, r in outcomes] == [
        (200, "applied", 2_000),
        (200, "duplicate", 2_000),
        (200, "duplicate", 2_000),
    ]
    assert our_order(stack, event).refunded_fen == 2_000
    assert account(stack, sharer)["pending_fen"] == 800
    lines = get_store().ledger.lines_of_order(stack.tenant, outcomes[0][1]["order_id"], [sharer.subject])
    assert sorted((line.event, line.amount_fen) for line in lines) == [
        ("paid", 1_000),
        (f"refund-{refund['event_id']}", -200),
    ]


def test_a_full_refund_delivered_again_is_a_duplicate_not_an_error(stack: Stack, client: Client, plan: int) -> None:
    sharer, buyer = chain(stack, 2)
    event = paid(openid(stack, buyer), amount_fen=900)
    send(client, event)
    refund = follow_up(event, "refunded", amount_fen=900)

    assert send(client, refund)[1]["status"] == "applied"
    assert send(client, refund)[1]["status"] == "duplicate"
    stack.drain()
    assert account(stack, sharer)["pending_fen"] == 0


def test_refunds_that_cannot_apply_are_refused(stack: Stack, client: Client) -> None:
    event = paid(f"o{uuid.uuid4().hex}", amount_fen=500)
    assert_error(*send(client, follow_up(event, "refunded", amount_fen=100)), 404, "unknown_order")
    assert_error(*send(client, follow_up(event, "received")), 404, "unknown_order")
    send(client, event)

    assert_error(*send(client, follow_up(event, "refunded", amount_fen=501)), 400, "invalid_amount")
    refund = follow_up(event, "refunded", amount_fen=100)
    assert send(client, refund)[1]["status"] == "applied"
    other = paid(f"o{uuid.uuid4().hex}", amount_fen=500)
    send(client, other)
    assert_error(
        *send(client, {**refund, "order_id": other["order_id"], "openid": other["openid"]}), 409, "event_id_reused"
    )
    assert our_order(stack, other).refunded_fen == 0


# --- the nonce store ------------------------------------------------------------------------


def test_nonces_are_remembered_once_and_forgotten_when_expired(stack: Stack, client: Client) -> None:
    nonces = get_store().nonces
    nonce = uuid.uuid4().hex

    assert nonces.remember(stack.tenant, MERCHANT, nonce, 600) is True
    assert nonces.remember(stack.tenant, MERCHANT, nonce, 600) is False
    assert nonces.remember(OTHER_TENANT, MERCHANT, nonce, 600) is False  # per merchant, across tenants
    assert nonces.remember(stack.tenant, "shop2", nonce, 600) is True

    expired = uuid.uuid4().hex
    assert nonces.remember(stack.tenant, MERCHANT, expired, -1) is True
    # TTL deletes lazily: an expired item still there counts as forgotten
    assert nonces.remember(stack.tenant, MERCHANT, expired, 600) is True
    assert nonces.remember(stack.tenant, MERCHANT, expired, 600) is False


def test_the_nonces_table_has_time_to_live_on_expires_at(stack: Stack) -> None:
    import boto3

    ddb = boto3.client("dynamodb", endpoint_url=stack.endpoint, region_name="us-east-1")
    ttl = ddb.describe_time_to_live(TableName=f"{stack.prefix}-nonces")["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


def test_concurrent_refunds_each_apply_once_with_an_exact_refunded_before(
    stack: Stack, client: Client, plan: int
) -> None:
    from chalicelib.store import audit

    _, buyer = chain(stack, 2)
    event = paid(openid(stack, buyer), amount_fen=1_000)
    order_id = send(client, event)[1]["order_id"]
    refunds = [
        merchant.MerchantEvent(
            event_id=unique("refund"),
            type=merchant.EventType.REFUNDED,
            order_id=event["order_id"],
            openid=event["openid"],
            amount_fen=100,
        )
        for _ in range(3)
    ]

    def deliver(refund: merchant.MerchantEvent) -> str:
        caller = merchant.Caller(merchant=MERCHANT, nonce=uuid.uuid4().hex, tenant=stack.tenant)
        return str(merchant.apply(caller, refund)["status"])

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(deliver, refunds + refunds))

    assert sorted(outcomes) == ["applied"] * 3 + ["duplicate"] * 3
    assert our_order(stack, event).refunded_fen == 300
    stack.drain()
    refunded = [
        json.loads(r.data) for r in audit.for_entity(stack.tenant, f"order:{order_id}") if r.action == "order.refunded"
    ]
    assert sorted(d["refunded_before_fen"] for d in refunded) == [0, 100, 200]
    assert {d["refund_id"] for d in refunded} == {r.event_id for r in refunds}


def test_refund_once_writes_the_refund_and_the_event_id_together_or_neither(stack: Stack, client: Client) -> None:
    from chalicelib.clock import utcnow
    from chalicelib.entities import AuditEvent
    from chalicelib.store.nonces import RefundOutcome

    event = paid(f"o{uuid.uuid4().hex}", amount_fen=1_000)
    send(client, event)
    before = our_order(stack, event)
    nonces = get_store().nonces
    first, second = unique("r"), unique("r")

    def refund(order: Any, event_id: str) -> RefundOutcome:
        data = {"refund_id": event_id, "amount_fen": 100, "refunded_before_fen": order.refunded_fen, "reason": "t"}
        audit_event = AuditEvent(entity=f"order:{order.id}", action="order.refunded", actor="merchant:shop1", data=data)
        return nonces.refund_once(order, MERCHANT, event_id, 100, when=utcnow(), event=audit_event, ttl_seconds=60)

    assert refund(before, first) is RefundOutcome.APPLIED
    # the same event id again, even on the order as it is now: nothing is written
    assert refund(our_order(stack, event), first) is RefundOutcome.DUPLICATE
    # another event on the order as it was before the first refund: refused, its id not remembered
    assert refund(before, second) is RefundOutcome.ORDER_CHANGED
    assert nonces.applied_to(stack.tenant, MERCHANT, second) is None
    assert nonces.applied_to(stack.tenant, MERCHANT, first) == before.id
    assert our_order(stack, event).refunded_fen == 100


def test_a_nonce_cannot_be_replayed_against_another_tenant() -> None:
    from chalicelib.store.nonces import nonce_key

    assert nonce_key("wxa", "shop", "n0nce123") == nonce_key("wxb", "shop", "n0nce123")


# --- credentials: one tenant each, sealed at rest, rotated without downtime -------------------


def test_a_rotated_secret_works_beside_the_old_one_until_it_is_retired(stack: Stack, client: Client) -> None:
    merchant_id = unique("rot").replace("-", "_")[:30]
    old = merchant_credentials.create(stack.tenant, merchant_id, "Rotating shop", None, "admin:owner")
    assert len(old) >= 32  # generated when none is given

    def status_with(secret: str) -> int:
        return send(client, paid(f"o{uuid.uuid4().hex}", amount_fen=100), merchant_id=merchant_id, secret=secret)[0]

    assert status_with(old) == 200
    new = merchant_credentials.rotate(stack.tenant, merchant_id, None, "admin:owner")
    assert new != old
    assert (status_with(old), status_with(new)) == (200, 200)
    merchant_credentials.retire_previous(stack.tenant, merchant_id, "admin:owner")
    assert (status_with(old), status_with(new)) == (401, 200)
    merchant_credentials.set_disabled(stack.tenant, merchant_id, True, "admin:owner")
    assert status_with(new) == 401
    merchant_credentials.set_disabled(stack.tenant, merchant_id, False, "admin:owner")
    assert status_with(new) == 200

    actions = [r.action for r in audit.for_entity(stack.tenant, f"merchant:{merchant_id}")]
    assert actions == [
        "merchant.created",
        "merchant.secret_rotated",
        "merchant.previous_secret_retired",
        "merchant.disabled",
        "merchant.enabled",
    ]
    assert audit.verify_chain(list(audit.for_entity(stack.tenant, f"merchant:{merchant_id}")))
    for record in audit.for_entity(stack.tenant, f"merchant:{merchant_id}"):
        assert old not in record.data and new not in record.data


def test_secrets_are_sealed_at_rest_and_bound_to_their_merchant(stack: Stack, client: Client) -> None:
    item = MerchantModel.get(MERCHANT, consistent_read=True)
    assert SECRET not in json.dumps(item.attribute_values)
    # shop2's sealed secret copied into shop1's record does not open there: nobody can sign as shop1 with it
    other = MerchantModel.get(SHOP2, consistent_read=True)
    victim = unique("vic").replace("-", "_")[:30]
    merchant_credentials.create(stack.tenant, victim, victim, None, "system:test")
    MerchantModel(victim).update(actions=[MerchantModel.current.set(other.current)])
    event = paid(f"o{uuid.uuid4().hex}", amount_fen=100)
    assert_error(*send(client, event, merchant_id=victim, secret=SHOP2_SECRET), 401, "bad_signature")


def test_merchant_ids_are_unique_across_tenants_and_secrets_are_checked(stack: Stack, client: Client) -> None:
    with pytest.raises(StateConflict) as taken:
        merchant_credentials.create(stack.tenant, SHOP2, "mine now", None, "admin:owner")
    assert taken.value.code == "merchant_exists"
    with pytest.raises(Missing):  # another tenant's merchant cannot be rotated from here
        merchant_credentials.rotate(stack.tenant, SHOP2, None, "admin:owner")
    with pytest.raises(InvalidInput):
        merchant_credentials.create(stack.tenant, unique("m").replace("-", "_")[:30], "x", "too-short", "admin:owner")
    assert MerchantModel.get(SHOP2).tenant == OTHER_TENANT


def test_without_a_merchant_key_the_api_says_it_is_not_configured(stack: Stack, client: Client) -> None:
    event = paid(f"o{uuid.uuid4().hex}", amount_fen=100)
    with environ({"MERCHANT_KEY": ""}):
        reset_caches()
        assert_error(*send(client, event), 503, "merchant_api_unconfigured")
    reset_caches()
    assert our_order(stack, event) is None

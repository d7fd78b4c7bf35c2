"""Products and coupons over HTTP in-process (chalice.test.Client) on DynamoDB Local."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chalice.test import Client

from app import app
from tests.integration.test_api import assert_error, call, count_items, login
from tests.stack import OTHER_TENANT, Stack, unique

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def client(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with Client(app, project_dir=str(tmp_path_factory.mktemp("no-config"))) as test_client:
        yield test_client


def admin_token(client: Client, role: str = "owner", appid: str | None = None) -> str:
    body = {"username": role, "password": f"pw-{role}", **({"appid": appid} if appid else {})}
    status, payload = call(client, "post", "/v1/admin/auth/login", body)
    assert status == 200, payload
    return str(payload["token"])


@pytest.fixture(scope="module")
def owner(client: Client) -> str:
    return admin_token(client)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def coupon_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "id": new_id("c"),
        "name": "满100减20",
        "threshold_fen": 10_000,
        "amount_fen": 2_000,
        "valid_from": stamp(NOW - timedelta(hours=1)),
        "valid_until": stamp(NOW + timedelta(days=7)),
    }
    return {**body, **overrides}


def create_coupon(client: Client, token: str, **overrides: Any) -> dict[str, Any]:
    status, coupon = call(client, "post", "/v1/admin/coupons", coupon_body(**overrides), token)
    assert status == 201, coupon
    return coupon


def all_pages(client: Client, path: str, token: str, limit: int) -> list[dict[str, Any]]:
    items, cursor = [], None
    for _ in range(100):
        sep = "&" if "?" in path else "?"
        status, page = call(
            client, "get", f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else ""), None, token
        )
        assert status == 200, page
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items
    raise AssertionError("pagination does not end")


# --- products --------------------------------------------------------------------------------


def test_product_create_update_list(client: Client, owner: str) -> None:
    from chalicelib.store import audit

    ops = admin_token(client, "ops")
    pid = new_id("p")
    body = {"id": pid, "name": "Rose cream", "price_fen": 12_900, "repurchase_days": 30}

    status, created = call(client, "post", "/v1/admin/products", body, owner)
    assert status == 201
    assert created["id"] == pid and created["price_fen"] == 12_900 and created["active"] is True
    assert created["created_at"] == created["updated_at"]
    assert_error(*call(client, "post", "/v1/admin/products", body, ops), 409, "product_exists")

    # ops may change it; PUT replaces the fields but keeps the creation time
    update = {"name": "Rose cream 50ml", "price_fen": 9_900, "active": False}
    status, updated = call(client, "put", f"/v1/admin/products/{pid}", update, ops)
    assert status == 200, updated
    assert updated["name"] == "Rose cream 50ml" and updated["price_fen"] == 9_900
    assert updated["active"] is False and updated["repurchase_days"] is None
    assert updated["created_at"] == created["created_at"] and updated["updated_at"] > created["updated_at"]

    # every change is audited and chained
    records = list(audit.for_entity("wxtest000000000a", f"product:{pid}"))
    assert [r.action for r in records] == ["product.created", "product.updated"]
    assert [r.actor for r in records] == ["admin:owner", "admin:ops"]
    assert audit.verify_chain(records)

    # an inactive product is listed for admins, not in the mini-program
    user_token, _ = login(client, unique("shopper"))
    assert pid in {p["id"] for p in all_pages(client, "/v1/admin/products", owner, 100)}
    assert pid not in {p["id"] for p in all_pages(client, "/v1/products", user_token, 100)}
    call(client, "put", f"/v1/admin/products/{pid}", {**update, "active": True}, ops)
    shown = {p["id"]: p for p in all_pages(client, "/v1/products", user_token, 100)}
    assert shown[pid] == {"id": pid, "name": "Rose cream 50ml", "price_fen": 9_900, "repurchase_days": None}


def test_unknown_product_update_is_404(client: Client, owner: str) -> None:
    body = {"name": "x", "price_fen": 1}
    assert_error(*call(client, "put", f"/v1/admin/products/{new_id('none')}", body, owner), 404, "unknown_product")
    assert_error(*call(client, "put", "/v1/admin/products/bad%20id", body, owner), 404, "unknown_product")


def test_products_are_paginated_and_the_mini_program_sees_only_active_ones(client: Client) -> None:
    # Given a tenant of its own (the other one), with 7 products of which 3 are inactive
    token = admin_token(client, "owner", appid=OTHER_TENANT)
    ids = sorted(new_id("pg") for _ in range(7))
    inactive = set(ids[1::2])
    for pid in ids:
        body = {"id": pid, "name": pid, "price_fen": 100, "active": pid not in inactive}
        assert call(client, "post", "/v1/admin/products", body, token)[0] == 201
    user_token, _ = login(client, unique("pager"), appid=OTHER_TENANT)

    # When both lists are read two by two
    admin_ids = [p["id"] for p in all_pages(client, "/v1/admin/products", token, 2)]
    shop_ids = [p["id"] for p in all_pages(client, "/v1/products", user_token, 2)]

    # Then each product appears once, in id order
    assert [i for i in admin_ids if i in ids] == ids
    assert [i for i in shop_ids if i in ids] == [i for i in ids if i not in inactive]
    assert len(admin_ids) == len(set(admin_ids)) and len(shop_ids) == len(set(shop_ids))


def test_a_cursor_of_one_tenant_is_refused_by_another(client: Client, owner: str) -> None:
    other = admin_token(client, "owner", appid=OTHER_TENANT)
    for _ in range(2):
        call(client, "post", "/v1/admin/products", {"id": new_id("x"), "name": "x", "price_fen": 1}, other)
    _, page = call(client, "get", "/v1/admin/products?limit=1", None, other)
    assert page["next_cursor"]
    status, payload = call(client, "get", f"/v1/admin/products?cursor={page['next_cursor']}", None, owner)
    assert_error(status, payload, 400, "invalid_cursor")
    assert_error(*call(client, "get", "/v1/products?cursor=%%%", None, owner), 400, "invalid_cursor")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"id": "ok1", "name": "x", "price_fen": 0}, "invalid_body"),
        ({"id": "ok1", "name": "x", "price_fen": -5}, "invalid_body"),
        ({"id": "ok1", "name": "x", "price_fen": 10**9 + 1}, "invalid_body"),
        ({"id": "ok1", "name": "x", "price_fen": 12.5}, "invalid_body"),
        ({"id": "ok1", "name": "x", "price_fen": "100"}, "invalid_body"),
        ({"id": "ok1", "name": "x", "price_fen": True}, "invalid_body"),
        ({"id": "no spaces", "name": "x", "price_fen": 1}, "invalid_body"),
        ({"id": "x" * 65, "name": "x", "price_fen": 1}, "invalid_body"),
        ({"id": "ok1", "name": "", "price_fen": 1}, "invalid_body"),
        ({"id": "ok1", "name": "x", "price_fen": 1, "repurchase_days": 0}, "invalid_body"),
        ({"id": "ok1", "name": "x", "price_fen": 1, "stock": 3}, "invalid_body"),
        ({"name": "x", "price_fen": 1}, "invalid_body"),
        ("[]", "invalid_body"),
        ("{nope", "invalid_json"),
    ],
)
def test_bad_products_are_400_and_write_nothing(client: Client, owner: str, body: Any, code: str) -> None:
    from chalicelib.store.models import AuditModel, ProductModel

    before = count_items(ProductModel), count_items(AuditModel)
    assert_error(*call(client, "post", "/v1/admin/products", body, owner), 400, code)
    assert (count_items(ProductModel), count_items(AuditModel)) == before


def test_product_roles(client: Client) -> None:
    user_token, _ = login(client, unique("u"))
    body = {"id": new_id("r"), "name": "x", "price_fen": 1}
    for token in (user_token, admin_token(client, "finance"), admin_token(client, "auditor")):
        assert_error(*call(client, "post", "/v1/admin/products", body, token), 403)
        update = {"name": "x", "price_fen": 1}
        assert_error(*call(client, "put", f"/v1/admin/products/{body['id']}", update, token), 403)
    assert_error(*call(client, "get", "/v1/admin/products", None, user_token), 403)
    assert call(client, "get", "/v1/admin/products", None, admin_token(client, "auditor"))[0] == 200
    assert_error(*call(client, "get", "/v1/products"), 401, "missing_token")


# --- coupons ---------------------------------------------------------------------------------


def test_coupon_create_list_claim_and_my_coupons(client: Client, owner: str) -> None:
    pid = new_id("p")
    call(client, "post", "/v1/admin/products", {"id": pid, "name": "Serum", "price_fen": 20_000}, owner)
    coupon = create_coupon(
        client, owner, per_user_limit=2, total_limit=100, product_ids=[pid], valid_from="2020-01-01T08:00:00+08:00"
    )
    assert coupon["valid_from"] == "2020-01-01T00:00:00.000000Z"  # stored in UTC
    assert coupon["issued"] == 0 and coupon["product_ids"] == [pid]

    token, _ = login(client, unique("claimer"))
    status, first = call(client, "post", f"/v1/coupons/{coupon['id']}/claim", None, token)
    assert status == 201, first
    assert first["coupon_id"] == coupon["id"] and first["claim"] == 1 and first["state"] == "claimed"
    assert first["amount_fen"] == 2_000 and first["threshold_fen"] == 10_000

    status, mine = call(client, "get", "/v1/me/coupons", None, token)
    assert status == 200 and [(c["coupon_id"], c["claim"]) for c in mine["items"]] == [(coupon["id"], 1)]

    listed = {c["id"]: c for c in all_pages(client, "/v1/admin/coupons", owner, 100)}
    assert listed[coupon["id"]]["issued"] == 1 and listed[coupon["id"]]["name"] == "满100减20"
    # another user's wallet does not show it
    other_token, _ = login(client, unique("other"))
    _, theirs = call(client, "get", "/v1/me/coupons", None, other_token)
    assert coupon["id"] not in {c["coupon_id"] for c in theirs["items"]}


def test_coupon_id_is_generated_when_missing(client: Client, owner: str) -> None:
    body = coupon_body()
    del body["id"]
    status, coupon = call(client, "post", "/v1/admin/coupons", body, owner)
    assert status == 201 and coupon["id"].startswith("cp")
    assert_error(*call(client, "post", "/v1/admin/coupons", coupon_body(id=coupon["id"]), owner), 409, "coupon_exists")


def test_claims_are_capped_per_user_even_when_ten_race(client: Client, owner: str) -> None:
    from chalicelib.store import get_store

    coupon = create_coupon(client, owner, per_user_limit=2)
    token, uid = login(client, unique("racer"))

    def claim(_: int) -> tuple[int, Any]:
        return call(client, "post", f"/v1/coupons/{coupon['id']}/claim", None, token)

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(claim, range(10)))

    statuses = sorted(status for status, _ in results)
    assert statuses == [201, 201] + [409] * 8, results
    assert {p["error"]["code"] for s, p in results if s == 409} == {"limit_reached"}
    assert sorted(p["claim"] for s, p in results if s == 201) == [1, 2]
    claims = get_store().coupons.claims("wxtest000000000a", coupon["id"], uid)
    assert [c.number for c in claims] == [1, 2]
    assert get_store().coupons.get("wxtest000000000a", coupon["id"]).issued == 2  # type: ignore[union-attr]


def test_a_total_limit_sells_out(client: Client, owner: str) -> None:
    coupon = create_coupon(client, owner, total_limit=2)
    results = [
        call(client, "post", f"/v1/coupons/{coupon['id']}/claim", None, login(client, unique("u"))[0]) for _ in range(3)
    ]
    assert [s for s, _ in results] == [201, 201, 409]
    assert_error(*results[2], 409, "sold_out")


def test_claims_of_expired_unknown_and_future_coupons(client: Client, owner: str) -> None:
    from chalicelib.store import get_store
    from chalicelib.store.models import CouponModel

    token, _ = login(client, unique("late"))
    assert_error(*call(client, "post", "/v1/coupons/nope-nope/claim", None, token), 404, "unknown_coupon")
    assert_error(*call(client, "post", "/v1/coupons/bad%20id/claim", None, token), 404, "unknown_coupon")
    future = create_coupon(client, owner, valid_from=stamp(NOW + timedelta(days=1)))
    assert_error(*call(client, "post", f"/v1/coupons/{future['id']}/claim", None, token), 409, "not_started")

    # a coupon that has ended since it was created (created directly: the API refuses past ones)
    from chalicelib.entities import AuditEvent, CouponTemplate

    ended = CouponTemplate(
        "wxtest000000000a", new_id("old"), "old", 0, 100, NOW - timedelta(days=9), NOW - timedelta(days=1)
    )
    assert get_store().coupons.create(ended, AuditEvent(f"coupon:{ended.coupon_id}", "coupon.created", "test"))
    before = count_items(CouponModel)
    assert_error(*call(client, "post", f"/v1/coupons/{ended.coupon_id}/claim", None, token), 410, "expired")
    assert count_items(CouponModel) == before


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"amount_fen": 0}, 400, "invalid_body"),
        ({"amount_fen": -100}, 400, "invalid_body"),
        ({"amount_fen": 10_000}, 400, "invalid_coupon"),  # spend 100, save 100
        ({"threshold_fen": -1}, 400, "invalid_body"),
        ({"amount_fen": 20.5}, 400, "invalid_body"),
        ({"valid_from": "2026-11-01T00:00:00"}, 400, "invalid_body"),  # no offset
        ({"valid_until": "tomorrow"}, 400, "invalid_body"),
        ({"valid_until": 1_900_000_000}, 400, "invalid_body"),
        ({"valid_until": "2020-01-01T00:00:00Z"}, 400, "invalid_coupon"),  # before valid_from
        ({"valid_from": "2019-01-01T00:00:00Z", "valid_until": "2020-01-01T00:00:00Z"}, 400, "invalid_coupon"),
        ({"per_user_limit": 0}, 400, "invalid_body"),
        ({"per_user_limit": 11}, 400, "invalid_body"),
        ({"total_limit": 0}, 400, "invalid_body"),
        ({"product_ids": ["not a product id"]}, 400, "invalid_body"),
        ({"product_ids": ["never-created-product"]}, 400, "unknown_product"),
        ({"product_ids": ["a", "a"]}, 400, "invalid_coupon"),
        ({"id": "has space"}, 400, "invalid_body"),
        ({"colour": "red"}, 400, "invalid_body"),
    ],
)
def test_bad_coupons_are_400_and_write_nothing(
    client: Client, owner: str, change: dict[str, Any], status: int, code: str
) -> None:
    from chalicelib.store.models import AuditModel, CouponModel

    before = count_items(CouponModel), count_items(AuditModel)
    got, payload = call(client, "post", "/v1/admin/coupons", coupon_body(**change), owner)
    assert_error(got, payload, status, code)
    assert (count_items(CouponModel), count_items(AuditModel)) == before


def test_coupon_roles(client: Client) -> None:
    user_token, _ = login(client, unique("u"))
    ops = admin_token(client, "ops")
    for token in (user_token, admin_token(client, "finance"), admin_token(client, "auditor")):
        assert_error(*call(client, "post", "/v1/admin/coupons", coupon_body(), token), 403)
    assert_error(*call(client, "get", "/v1/admin/coupons", None, user_token), 403)
    coupon = create_coupon(client, ops)
    # admins have no wallet
    assert_error(*call(client, "post", f"/v1/coupons/{coupon['id']}/claim", None, ops), 403)
    assert_error(*call(client, "get", "/v1/me/coupons", None, ops), 403)


def test_coupon_list_is_paginated(client: Client) -> None:
    token = admin_token(client, "ops", appid=OTHER_TENANT)
    made = {create_coupon(client, token)["id"] for _ in range(5)}
    seen = [c["id"] for c in all_pages(client, "/v1/admin/coupons", token, 2)]
    assert made <= set(seen) and len(seen) == len(set(seen))


# --- redemption (what orders call) ---------------------------------------------------------


def test_a_used_coupon_cannot_be_used_again_and_a_release_gives_it_back(client: Client, owner: str) -> None:
    from chalicelib.entities import ClaimState
    from chalicelib.store import audit, get_store

    tenant = "wxtest000000000a"
    coupons = get_store().coupons
    coupon = create_coupon(client, owner)
    token, uid = login(client, unique("buyer"))
    call(client, "post", f"/v1/coupons/{coupon['id']}/claim", None, token)

    used = coupons.use(tenant, coupon["id"], uid, "order-1")
    assert used is not None and used.state is ClaimState.USED and used.order_id == "order-1"
    # the same order again is a replay, another order finds nothing to use
    assert coupons.use(tenant, coupon["id"], uid, "order-1") == used
    assert coupons.use(tenant, coupon["id"], uid, "order-2") is None
    _, mine = call(client, "get", "/v1/me/coupons", None, token)
    assert coupon["id"] not in {c["coupon_id"] for c in mine["items"]}

    # a release by another order changes nothing; by the order that used it, frees it once
    assert coupons.release(tenant, coupon["id"], uid, "order-2") is None
    released = coupons.release(tenant, coupon["id"], uid, "order-1")
    assert released is not None and released.state is ClaimState.CLAIMED and released.order_id is None
    assert coupons.release(tenant, coupon["id"], uid, "order-1") is None
    _, mine = call(client, "get", "/v1/me/coupons", None, token)
    assert coupon["id"] in {c["coupon_id"] for c in mine["items"]}
    assert coupons.use(tenant, coupon["id"], uid, "order-3") is not None

    records = list(audit.for_entity(tenant, f"claim:{coupon['id']}:{uid}:1"))
    assert [r.action for r in records] == ["coupon.claimed", "coupon.used", "coupon.released", "coupon.used"]
    assert audit.verify_chain(records)


def test_one_claim_raced_by_five_orders_is_used_once(client: Client, owner: str) -> None:
    from chalicelib.store import get_store

    tenant = "wxtest000000000a"
    coupons = get_store().coupons
    coupon = create_coupon(client, owner)
    token, uid = login(client, unique("racer"))
    call(client, "post", f"/v1/coupons/{coupon['id']}/claim", None, token)

    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(lambda n: coupons.use(tenant, coupon["id"], uid, f"order-{n}"), range(5)))

    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert [c.order_id for c in coupons.claims(tenant, coupon["id"], uid)] == [winners[0].order_id]


def test_quote_and_redeem_for_an_order(client: Client, owner: str) -> None:
    from chalicelib.errors import Missing, StateConflict
    from chalicelib.services import catalog

    tenant = "wxtest000000000a"
    cream, mask = new_id("cream"), new_id("mask")
    for pid in (cream, mask):
        call(client, "post", "/v1/admin/products", {"id": pid, "name": pid, "price_fen": 6_000}, owner)
    coupon = create_coupon(client, owner, product_ids=[cream])
    token, uid = login(client, unique("q"))
    at = datetime.now(UTC)

    with pytest.raises(StateConflict, match="no unused"):
        catalog.quote_coupon(tenant, uid, coupon["id"], [(cream, 12_000)], at)
    call(client, "post", f"/v1/coupons/{coupon['id']}/claim", None, token)
    with pytest.raises(Missing):
        catalog.quote_coupon(tenant, uid, "missing-coupon", [(cream, 12_000)], at)
    with pytest.raises(StateConflict) as refused:  # the mask does not count towards the threshold
        catalog.quote_coupon(tenant, uid, coupon["id"], [(cream, 6_000), (mask, 6_000)], at)
    assert refused.value.code == "coupon_not_applicable"
    template, discount = catalog.quote_coupon(tenant, uid, coupon["id"], [(cream, 12_000), (mask, 6_000)], at)
    assert discount == 2_000 and template.coupon_id == coupon["id"]

    assert catalog.redeem_coupon(tenant, uid, coupon["id"], "o-1", at).order_id == "o-1"
    with pytest.raises(StateConflict):
        catalog.redeem_coupon(tenant, uid, coupon["id"], "o-2", at)
    assert catalog.release_coupon(tenant, uid, coupon["id"], "o-1") is True
    assert catalog.release_coupon(tenant, uid, coupon["id"], "o-1") is False


def test_an_update_based_on_a_stale_read_is_refused(client: Client, owner: str) -> None:
    from dataclasses import replace

    from chalicelib.entities import AuditEvent
    from chalicelib.store import get_store

    # Given two editors who read the same version of a product
    pid = new_id("p")
    call(client, "post", "/v1/admin/products", {"id": pid, "name": "Tea", "price_fen": 3_000}, owner)
    products = get_store().products
    read = products.get("wxtest000000000a", pid)
    assert read is not None and read.updated_at is not None
    # When one saves a change over HTTP and the other then saves theirs from the old read
    call(client, "put", f"/v1/admin/products/{pid}", {"name": "Tea", "price_fen": 2_500}, owner)
    stale = replace(read, price_fen=9_999, updated_at=read.updated_at + timedelta(seconds=1))
    event = AuditEvent(f"product:{pid}", "product.updated", "test")
    # Then the second write is refused and the first one stands
    assert products.update(stale, read, event) is False
    assert products.get("wxtest000000000a", pid).price_fen == 2_500  # type: ignore[union-attr]

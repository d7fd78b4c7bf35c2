"""The console's promoters and orders APIs (issue 12 §5) on DynamoDB Local, over HTTP in-process:
search and lists with signed cursors, one promoter and one order with their commission lines,
roles, another tenant's operators (404, never a leak) and bad input (400 JSON, never 500).

The module has a tenant of its own, so "every promoter" and "every order" are known exactly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from chalice.test import Client

from app import app
from chalicelib.auth import hash_password, issue_token
from chalicelib.clock import utcnow
from chalicelib.entities import Admin, AuditEvent, Principal, Product, Role, Tenant
from chalicelib.services import logins, orders, plans, referrals, shares
from chalicelib.settings import get_settings
from chalicelib.store import get_store
from tests.stack import OTHER_TENANT, Stack, unique

JSON = {"Content-Type": "application/json"}
ROLES = (Role.OWNER, Role.OPS, Role.FINANCE, Role.AUDITOR)


@dataclass
class World:
    tenant: str
    tokens: dict[str, str]
    users: dict[str, str]  # name -> id
    names: dict[str, str]  # name -> display name
    paid: list[str]  # order ids, oldest first
    unpaid: str
    price: int


def _token(tenant: str, subject: str, role: Role) -> str:
    return issue_token(get_settings(), Principal(tenant=tenant, subject=subject, role=role), utcnow())


def _call(client: Client, path: str, token: str, method: str = "get", body: Any = None) -> tuple[int, Any]:
    headers = {**JSON, "Authorization": f"Bearer {token}"}
    response = getattr(client.http, method)(path, headers=headers, body=json.dumps(body) if body else b"")
    return response.status_code, json.loads(response.body)


@pytest.fixture(scope="module")
def client(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with Client(app, project_dir=str(tmp_path_factory.mktemp("no-config"))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def world(stack: Stack) -> World:
    """alice ← bob ← carol ← dave (dave buys twice, pays one more is left unpaid); erin under alice."""
    store = get_store()
    tenant = unique("wxpo").replace("-", "")
    store.tenants.put(Tenant(tenant, "promoters"), utcnow())
    for role in ROLES:
        store.admins.put(Admin(tenant, role.value, hash_password("pw"), role), utcnow())
    owner = Principal(tenant=tenant, subject="owner", role=Role.OWNER)
    plans.activate(owner, plans.create(owner, {"rates_bps": [1000, 500, 200], "cap_bps": 2000})["version"])
    names = {n: unique(n.capitalize()) for n in ("alice", "bob", "carol", "dave", "erin")}
    users = {n: logins.login(f"dev-{names[n]}", tenant).user.id for n in names}
    person = {n: Principal(tenant, uid, Role.USER) for n, uid in users.items()}
    for child, parent in (("bob", "alice"), ("carol", "bob"), ("dave", "carol"), ("erin", "alice")):
        code = shares.create(person[parent], None, "poster").code
        assert referrals.scan(person[child], code).status == "bound"
    stack.drain()
    pid, price = unique("p").replace("-", "_"), 10_000
    now = utcnow()
    event = AuditEvent(entity=f"product:{pid}", action="product.created", actor="system:test", data={})
    store.products.create(Product(tenant, pid, "Tea", price, True, None, now, now), event)
    paid = []
    for _ in range(2):
        order = orders.place(person["dave"], [(pid, 1)], None, None)
        orders.sandbox_pay_success(person["dave"], order.id)
        paid.append(order.id)
    unpaid = orders.place(person["dave"], [(pid, 2)], None, None).id
    stack.drain()
    tokens = {role.value: _token(tenant, role.value, role) for role in ROLES}
    tokens["user"] = _token(tenant, users["dave"], Role.USER)
    tokens["other"] = _token(OTHER_TENANT, "owner", Role.OWNER)
    return World(tenant, tokens, users, names, paid, unpaid, price)


def _all_pages(client: Client, path: str, token: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        sep = "&" if "?" in path else "?"
        status, page = _call(client, path + (f"{sep}cursor={cursor}" if cursor else ""), token)
        assert status == 200, page
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the list never ended")


def _error(status: int, payload: Any, expected: int, code: str) -> None:
    assert (status, set(payload), payload["error"]["code"]) == (expected, {"error"}, code), payload


# --- promoters ------------------------------------------------------------------------------------


def test_every_promoter_newest_first_with_counters_and_balances(client: Client, world: World) -> None:
    # When
    rows = _all_pages(client, "/v1/admin/promoters?limit=2", world.tokens["ops"])
    # Then: everyone once, newest first
    assert [r["id"] for r in rows] == [world.users[n] for n in ("erin", "dave", "carol", "bob", "alice")]
    by_id = {r["id"]: r for r in rows}
    alice, carol = by_id[world.users["alice"]], by_id[world.users["carol"]]
    assert alice["team_counts"] == {"1": 2, "2": 1, "3": 1}
    assert [u["id"] for u in carol["upline"]] == [world.users["bob"], world.users["alice"]]
    assert carol["upline"][0]["name"] == world.names["bob"]
    # two paid orders of 10,000 fen: carol earns 10 % at level 1, alice 2 % at level 3
    assert (carol["sales_fen"], carol["commission_fen"]) == (2 * world.price, 2 * 1000)
    assert (alice["sales_fen"], alice["commission_fen"]) == (2 * world.price, 2 * 200)
    assert carol["account"]["pending_fen"] + carol["account"]["frozen_fen"] == 2000
    user = get_store().users.get(world.tenant, world.users["carol"])
    assert user is not None and user.openid not in json.dumps(rows) and carol["openid"].count("*") == 4


def test_search_by_id_openid_and_name_prefix(client: Client, world: World) -> None:
    token = world.tokens["auditor"]
    carol = world.users["carol"]
    openid = get_store().users.get(world.tenant, carol).openid  # type: ignore[union-attr]
    for q in (carol, openid):
        status, page = _call(client, f"/v1/admin/promoters?q={q}", token)
        assert status == 200 and [r["id"] for r in page["items"]] == [carol], page
    prefix = world.names["carol"][:-3]
    status, page = _call(client, f"/v1/admin/promoters?q={prefix}", token)
    assert status == 200 and [r["id"] for r in page["items"]] == [carol]
    status, page = _call(client, "/v1/admin/promoters?q=Nobody-here", token)
    assert status == 200 and page == {"items": [], "next_cursor": None}


def test_one_promoter_account_commission_lines_and_team_paged(client: Client, world: World) -> None:
    alice = world.users["alice"]
    status, one = _call(client, f"/v1/admin/promoters/{alice}?limit=1", world.tokens["finance"])
    assert status == 200, one
    assert one["account"] == {**one["account"], "pending_fen": 400}
    line = one["commissions"]["items"][0]
    assert (line["level"], line["amount_fen"], line["event"]) == (3, 200, "paid")
    assert line["buyer"] == {"id": world.users["dave"], "name": world.names["dave"]}
    assert line["trace"]["rate_bps"] == 200 and line["trace"]["words"]
    # the second commission line and the second level-1 member are on the next pages
    lines_cursor, team_cursor = one["commissions"]["next_cursor"], one["team"]["next_cursor"]
    assert lines_cursor and team_cursor
    status, two = _call(
        client,
        f"/v1/admin/promoters/{alice}?limit=1&lines_cursor={lines_cursor}&team_cursor={team_cursor}",
        world.tokens["finance"],
    )
    assert status == 200, two
    assert {one["commissions"]["items"][0]["order_id"], two["commissions"]["items"][0]["order_id"]} == set(world.paid)
    team = [one["team"]["items"][0]["id"], two["team"]["items"][0]["id"]]
    assert team == [world.users["erin"], world.users["bob"]]
    # a cursor of alice's lines does not page bob's
    status, payload = _call(
        client, f"/v1/admin/promoters/{world.users['bob']}?lines_cursor={lines_cursor}", world.tokens["owner"]
    )
    _error(status, payload, 400, "invalid_cursor")


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v1/admin/promoters?q=" + "x" * 65, "invalid_query"),
        ("/v1/admin/promoters?limit=0", "invalid_limit"),
        ("/v1/admin/promoters?limit=abc", "invalid_limit"),
        ("/v1/admin/promoters?cursor=forged.cursor", "invalid_cursor"),
        ("/v1/admin/promoters?cursor=eyJ0ZW5hbnQiOnsiUyI6Ind4In19.AAAA", "invalid_cursor"),
        ("/v1/admin/promoters/uX?team_cursor=nope", "invalid_cursor"),
    ],
)
def test_promoters_bad_input_is_a_400(client: Client, world: World, path: str, code: str) -> None:
    path = path.replace("/uX", "/" + world.users["alice"])
    _error(*_call(client, path, world.tokens["owner"]), 400, code)


def test_promoters_of_another_tenant_are_not_there(client: Client, world: World) -> None:
    other = world.tokens["other"]
    status, page = _call(client, "/v1/admin/promoters", other)
    assert status == 200 and not {r["id"] for r in page["items"]} & set(world.users.values())
    status, page = _call(client, f"/v1/admin/promoters?q={world.users['alice']}", other)
    assert (status, page["items"]) == (200, [])
    status, page = _call(client, f"/v1/admin/promoters?q={world.names['alice']}", other)
    assert (status, page["items"]) == (200, [])
    _error(*_call(client, f"/v1/admin/promoters/{world.users['alice']}", other), 404, "unknown_user")
    _error(*_call(client, "/v1/admin/promoters/nobody", world.tokens["owner"]), 404, "unknown_user")


def test_promoters_need_an_operator(client: Client, world: World) -> None:
    _error(*_call(client, "/v1/admin/promoters", world.tokens["user"]), 403, "forbidden")
    _error(*_call(client, f"/v1/admin/promoters/{world.users['dave']}", world.tokens["user"]), 403, "forbidden")
    status, _ = _call(client, "/v1/admin/promoters", "not-a-token")
    assert status == 401


# --- orders ---------------------------------------------------------------------------------------


def test_orders_newest_first_and_filtered(client: Client, world: World) -> None:
    token = world.tokens["auditor"]
    newest_first = [world.unpaid, *reversed(world.paid)]
    assert [o["id"] for o in _all_pages(client, "/v1/admin/orders?limit=1", token)] == newest_first
    paid = _all_pages(client, "/v1/admin/orders?state=paid", token)
    assert [o["id"] for o in paid] == list(reversed(world.paid))
    assert paid[0]["buyer"] == {"id": world.users["dave"], "name": world.names["dave"]}
    assert [u["id"] for u in paid[0]["upline"]] == [world.users[n] for n in ("carol", "bob", "alice")]
    assert _all_pages(client, "/v1/admin/orders?state=cancelled", token) == []
    for level in ("carol", "bob", "alice"):  # a promoter at level 1, 2 or 3
        found = _all_pages(client, f"/v1/admin/orders?promoter={world.users[level]}&state=created", token)
        assert [o["id"] for o in found] == [world.unpaid]
    assert _all_pages(client, f"/v1/admin/orders?promoter={world.users['erin']}", token) == []
    assert _all_pages(client, f"/v1/admin/orders?promoter={world.users['dave']}", token) == []  # the buyer


def test_an_unfiltered_page_reads_the_state_of_its_own_orders_only(
    client: Client, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each of the 8 shards reads up to a page of the index; only the page's orders are then read
    from chalicelib.store.models import OrderModel

    asked: list[str] = []
    batch_get = OrderModel.batch_get

    def counting(keys: Any, **kwargs: Any) -> Any:
        asked.extend(keys)
        return batch_get(keys, **kwargs)

    monkeypatch.setattr(OrderModel, "batch_get", counting)
    status, page = _call(client, "/v1/admin/orders?limit=1", world.tokens["auditor"])
    assert status == 200 and [o["id"] for o in page["items"]] == [world.unpaid]
    assert len(asked) == 1


def test_orders_by_local_dates(client: Client, world: World) -> None:
    token = world.tokens["owner"]
    today = utcnow().astimezone(ZoneInfo("Asia/Shanghai")).date()
    yesterday, tomorrow = today - timedelta(days=1), today + timedelta(days=1)
    assert len(_all_pages(client, f"/v1/admin/orders?from={today}&to={today}", token)) == 3
    assert len(_all_pages(client, f"/v1/admin/orders?from={today}", token)) == 3
    assert _all_pages(client, f"/v1/admin/orders?to={yesterday}", token) == []
    assert _all_pages(client, f"/v1/admin/orders?from={tomorrow}", token) == []


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("state=shipped", "invalid_state"),
        ("from=2026-13-01", "invalid_date"),
        ("from=20261101", "invalid_date"),
        ("to=yesterday", "invalid_date"),
        ("from=2026-11-02&to=2026-11-01", "invalid_range"),
        ("promoter=" + "u" * 65, "invalid_promoter"),
        ("limit=101", "invalid_limit"),
        ("cursor=abc.def", "invalid_cursor"),
    ],
)
def test_orders_bad_input_is_a_400(client: Client, world: World, query: str, code: str) -> None:
    _error(*_call(client, f"/v1/admin/orders?{query}", world.tokens["ops"]), 400, code)


def test_an_orders_cursor_is_signed_and_its_own(client: Client, world: World) -> None:
    from chalicelib.store import shards

    forged = shards.encode_positions({f"{world.tenant}#orders#0": {"pk": {"S": "x"}}})  # signed, not a position
    _error(*_call(client, f"/v1/admin/orders?cursor={forged}", world.tokens["ops"]), 400, "invalid_cursor")
    status, page = _call(client, "/v1/admin/orders?limit=1", world.tokens["ops"])
    assert status == 200 and page["next_cursor"]
    stolen = page["next_cursor"]  # another tenant cannot page this tenant's index with it
    _error(*_call(client, f"/v1/admin/orders?cursor={stolen}", world.tokens["other"]), 400, "invalid_cursor")


def test_a_withdrawals_cursor_of_another_tenant_is_refused(client: Client, world: World) -> None:
    # The sharded pager checks that a (signed) cursor's shards are the list's own: another
    # tenant's owner holding this tenant's cursor cannot page its withdrawals with it.
    from chalicelib.store import shards

    partition = shards.keys(f"{world.tenant}#requested")[0]
    cursor = shards.encode_positions({partition: "done"})
    status, page = _call(client, f"/v1/admin/withdrawals?state=requested&cursor={cursor}", world.tokens["finance"])
    assert status == 200 and page["items"] == []
    refused = _call(client, f"/v1/admin/withdrawals?state=requested&cursor={cursor}", world.tokens["other"])
    _error(*refused, 400, "invalid_cursor")


def test_one_order_with_commission_lines_traces_and_a_refund(client: Client, world: World, stack: Stack) -> None:
    order_id = world.paid[0]
    status, order = _call(client, f"/v1/admin/orders/{order_id}", world.tokens["auditor"])
    assert status == 200, order
    assert order["buyer"] == {"id": world.users["dave"], "name": world.names["dave"]}
    assert [u["name"] for u in order["attribution"]["upline"]] == [world.names[n] for n in ("carol", "bob", "alice")]
    assert [(c["level"], c["amount_fen"], c["promoter"]["id"]) for c in order["commissions"]] == [
        (1, 1000, world.users["carol"]),
        (2, 500, world.users["bob"]),
        (3, 200, world.users["alice"]),
    ]
    assert all(c["trace"]["words"] for c in order["commissions"])
    assert order["refundable_fen"] == world.price and order["refunds"] == []
    # When finance refunds half from the console
    status, refund = _call(
        client,
        f"/v1/admin/orders/{order_id}/refunds",
        world.tokens["finance"],
        "post",
        {"amount_fen": 5000, "reason": "broken"},
    )
    assert status == 201, refund
    stack.drain()
    # Then the order shows the refund and each level's reversal
    _, after = _call(client, f"/v1/admin/orders/{order_id}", world.tokens["auditor"])
    assert [(r["amount_fen"], r["reason"], r["actor"]) for r in after["refunds"]] == [(5000, "broken", "admin:finance")]
    assert after["refunded_fen"] == 5000 and after["refundable_fen"] == 5000
    assert sum(c["amount_fen"] for c in after["commissions"] if c["level"] == 1) == 500


def test_orders_of_another_tenant_are_not_there(client: Client, world: World) -> None:
    other = world.tokens["other"]
    status, page = _call(client, "/v1/admin/orders", other)
    assert status == 200 and not {o["id"] for o in page["items"]} & {*world.paid, world.unpaid}
    status, page = _call(client, f"/v1/admin/orders?promoter={world.users['carol']}", other)
    assert (status, page["items"]) == (200, [])
    _error(*_call(client, f"/v1/admin/orders/{world.paid[0]}", other), 404, "unknown_order")
    _error(
        *_call(client, f"/v1/admin/orders/{world.paid[0]}/refunds", other, "post", {"amount_fen": 1, "reason": "x"}),
        404,
        "unknown_order",
    )
    _error(*_call(client, "/v1/admin/orders/nothing", world.tokens["owner"]), 404, "unknown_order")


def test_orders_need_an_operator(client: Client, world: World) -> None:
    _error(*_call(client, "/v1/admin/orders", world.tokens["user"]), 403, "forbidden")
    _error(*_call(client, f"/v1/admin/orders/{world.paid[0]}", world.tokens["user"]), 403, "forbidden")


# --- the filtered, sharded pages under the orders list ---------------------------------------------


@dataclass(frozen=True)
class _Item:
    pk: str
    placed_at: str
    order_id: str
    match: bool


def _fake_index(shards_items: dict[str, list[_Item]]) -> Any:
    """A shard read as DynamoDB answers one filtered query page: `room` items evaluated, the
    matching ones returned as rows, where the reading stopped when the partition has more."""

    def read(partition: str, start: dict[str, Any] | None, room: int) -> tuple[list[Any], Any]:
        items = shards_items[partition]
        at = 0
        if start is not None:
            at = next(i for i, x in enumerate(items) if x.pk == start["pk"]["S"]) + 1
        evaluated = items[at : at + room]
        more = at + room < len(items)
        last = evaluated[-1] if evaluated and more else None
        rows = [((x.placed_at, x.pk), _key(x, partition), x) for x in evaluated if x.match]
        return rows, (_key(last, partition), (last.placed_at, last.pk)) if last else None

    return read


def _key(item: _Item, partition: str) -> dict[str, Any]:
    return {"pk": {"S": item.pk}, "listed_key": {"S": partition}, "placed_at": {"S": item.placed_at}}


def test_filtered_shards_keep_newest_first_across_pages(stack: Stack) -> None:
    """One shard full of newer orders the filter drops (it stops after `shards.MAX_READS` reads with more to
    read), others with older matches: no page may return an older match before a newer one that the
    stopped shard has not read yet, and the list may not end while a shard has more."""
    from chalicelib.store import shards

    partitions = shards.keys("t#orders")
    data: dict[str, list[_Item]] = {p: [] for p in partitions}
    stamp = 10_000
    for n in range(60):  # shard 0: newest, mostly not matching, a match now and then
        stamp -= 1
        data[partitions[0]].append(_Item(f"a{n}", f"{stamp:06d}", f"a{n}", n % 25 == 24))
    for n in range(40):  # the rest: older, every third matches
        stamp -= 1
        p = partitions[1 + n % 7]
        data[p].append(_Item(f"b{n}", f"{stamp:06d}", f"b{n}", n % 3 == 0))
    expected = sorted((x for items in data.values() for x in items if x.match), key=lambda x: x.placed_at, reverse=True)

    seen: list[_Item] = []
    cursor = None
    for _ in range(100):
        items, cursor = shards.page("t#orders", _fake_index(data), cursor, 3, reverse=True)
        seen += items
        if cursor is None:
            break
    assert [x.pk for x in seen] == [x.pk for x in expected]

"""Operator management (issue 10 §2): owners manage their own mini-program's operators, every
operator changes their own password, all audited; a tenant never loses its last enabled owner."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.auth import hash_password
from chalicelib.clock import utcnow
from chalicelib.entities import Admin, Principal, Role, Tenant
from chalicelib.errors import StateConflict
from chalicelib.store import audit, get_store
from chalicelib.store.admins import AdminStore
from chalicelib.store.base import encode_cursor
from tests.stack import OTHER_TENANT, TEST_TENANT, Stack

pytestmark = pytest.mark.integration

PASSWORD = "pw-operator-0123"


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[Client]:
    from app import app

    with Client(app) as test_client:
        yield test_client


def name(prefix: str = "op") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def call(client: Client, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    raw = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    response = getattr(client.http, method)(path, headers=headers, body=raw or b"")
    text = response.body.decode() if isinstance(response.body, bytes) else (response.body or "")
    return response.status_code, json.loads(text) if text else None


def login(client: Client, username: str, password: str, tenant: str = TEST_TENANT) -> str:
    status, body = call(
        client, "post", "/v1/admin/auth/login", body={"username": username, "password": password, "appid": tenant}
    )
    assert status == 200, body
    return str(body["token"])


def seeded(client: Client, role: str, tenant: str = TEST_TENANT) -> str:
    """A token of the session's seeded operator of `role` (its password is `pw-<role>`)."""
    return login(client, role, f"pw-{role}", tenant)


def error_code(status_body: tuple[int, Any]) -> tuple[int, str]:
    status, body = status_body
    assert set(body) == {"error"}, body
    assert body["error"]["message"]
    return status, body["error"]["code"]


def create(client: Client, token: str, username: str, role: str = "ops", password: str = PASSWORD) -> dict[str, Any]:
    status, body = call(
        client, "post", "/v1/admin/operators", token, {"username": username, "password": password, "role": role}
    )
    assert status == 201, body
    return dict(body)


def patch(client: Client, token: str, username: str, **fields: Any) -> tuple[int, Any]:
    return call(client, "patch", f"/v1/admin/operators/{username}", token, fields)


def listed(client: Client, token: str, limit: int = 3) -> list[dict[str, Any]]:
    """Every operator the caller can list, page by page."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        path = f"/v1/admin/operators?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        status, body = call(client, "get", path, token)
        assert status == 200, body
        assert len(body["items"]) <= limit
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            return items
    raise AssertionError("the listing never ended")


def records(tenant: str, username: str) -> list[Any]:
    return list(audit.for_entity(tenant, f"operator:{username}"))


@pytest.fixture
def lone_owner(stack: Stack) -> tuple[str, str]:
    """A fresh mini-program whose only operator is one enabled owner: (tenant, username)."""
    tenant = "wxop" + uuid.uuid4().hex[:12]
    store = get_store()
    store.tenants.put(Tenant(tenant, "Operators test"), utcnow())
    store.admins.put(Admin(tenant, "boss", hash_password(PASSWORD), Role.OWNER), utcnow())
    return tenant, "boss"


# --- owners manage their own tenant's operators ---------------------------------------------------


def test_an_owner_creates_an_operator_who_is_listed_and_logs_in(client: Client) -> None:
    owner = seeded(client, "owner")
    username = name()

    view = create(client, owner, username, role="finance")

    assert set(view) == {"username", "role", "disabled", "created_at"}
    assert (view["username"], view["role"], view["disabled"]) == (username, "finance", False)
    mine = {item["username"]: item for item in listed(client, owner)}
    assert mine[username] == view
    assert {"owner", "ops", "finance", "auditor"} <= set(mine)
    stored = get_store().admins.get(TEST_TENANT, username)
    assert stored is not None and stored.password_hash.startswith("$argon2")
    login(client, username, PASSWORD)


def test_a_taken_username_is_409_and_the_operator_is_unchanged(client: Client) -> None:
    owner = seeded(client, "owner")
    username = name()
    create(client, owner, username, role="ops")

    status, body = call(
        client,
        "post",
        "/v1/admin/operators",
        owner,
        {"username": username, "password": "another-pass-1", "role": "owner"},
    )

    assert error_code((status, body)) == (409, "operator_exists")
    login(client, username, PASSWORD)  # the first password still works, the role stayed
    assert get_store().admins.get(TEST_TENANT, username).role is Role.OPS  # type: ignore[union-attr]
    assert len(records(TEST_TENANT, username)) == 1


def test_another_tenants_owner_sees_and_changes_only_their_own_operators(client: Client) -> None:
    # Given an operator of tenant A
    a_owner, b_owner = seeded(client, "owner"), seeded(client, "owner", OTHER_TENANT)
    a_operator = name("a")
    create(client, a_owner, a_operator, role="finance")

    # When tenant B's owner lists, patches and creates under the same name
    b_listed = {item["username"] for item in listed(client, b_owner)}
    patched = patch(client, b_owner, a_operator, disabled=True, role="owner", password="taken-over-123")
    b_operator = create(client, b_owner, a_operator, role="owner", password="b-password-123")

    # Then B never sees nor touches A's operator: its own is a different person
    assert a_operator not in b_listed
    assert error_code(patched) == (404, "unknown_operator")
    assert b_operator["role"] == "owner"
    a_stored = get_store().admins.get(TEST_TENANT, a_operator)
    assert a_stored is not None and (a_stored.role, a_stored.disabled) == (Role.FINANCE, False)
    login(client, a_operator, PASSWORD, TEST_TENANT)
    login(client, a_operator, "b-password-123", OTHER_TENANT)
    assert a_operator in {item["username"] for item in listed(client, a_owner)}
    assert len(records(TEST_TENANT, a_operator)) == 1  # only its creation


@pytest.mark.parametrize("role", ["ops", "finance", "auditor"])
def test_other_roles_are_refused(client: Client, role: str) -> None:
    token = seeded(client, role)
    target = name()

    assert error_code(call(client, "get", "/v1/admin/operators", token)) == (403, "forbidden")
    created = call(
        client, "post", "/v1/admin/operators", token, {"username": target, "password": PASSWORD, "role": "owner"}
    )
    assert error_code(created) == (403, "forbidden")
    assert error_code(patch(client, token, role, role="owner")) == (403, "forbidden")
    assert get_store().admins.get(TEST_TENANT, target) is None
    assert get_store().admins.get(TEST_TENANT, role).role is Role(role)  # type: ignore[union-attr]


def test_users_tokens_and_missing_tokens_are_refused(client: Client) -> None:
    _, body = call(client, "post", "/v1/auth/login", body={"code": f"dev-{name('u')}", "appid": TEST_TENANT})
    user = body["token"]

    assert error_code(call(client, "get", "/v1/admin/operators", user)) == (403, "forbidden")
    assert error_code(call(client, "get", "/v1/admin/operators")) == (401, "missing_token")
    assert error_code(
        call(client, "put", "/v1/admin/me/password", user, {"current_password": "x", "new_password": "y" * 10})
    ) == (403, "forbidden")


# --- changes end the operator's tokens ------------------------------------------------------------


def test_a_disabled_owners_token_stops_on_its_next_request(client: Client) -> None:
    owner = seeded(client, "owner")
    username = name()
    create(client, owner, username, role="owner")
    token = login(client, username, PASSWORD)
    assert call(client, "get", "/v1/admin/operators", token)[0] == 200

    status, view = patch(client, owner, username, disabled=True)

    assert status == 200 and view["disabled"] is True
    assert error_code(call(client, "get", "/v1/admin/operators", token)) == (401, "token_revoked")
    assert error_code(
        call(
            client,
            "post",
            "/v1/admin/auth/login",
            body={"username": username, "password": PASSWORD, "appid": TEST_TENANT},
        )
    ) == (401, "invalid_credentials")
    # enabled again: the old token stays dead, a new login works
    assert patch(client, owner, username, disabled=False)[1]["disabled"] is False
    assert error_code(call(client, "get", "/v1/admin/operators", token)) == (401, "token_revoked")
    assert call(client, "get", "/v1/admin/operators", login(client, username, PASSWORD))[0] == 200


def test_a_demoted_owners_token_stops_and_the_new_role_is_refused(client: Client) -> None:
    owner = seeded(client, "owner")
    username = name()
    create(client, owner, username, role="owner")
    token = login(client, username, PASSWORD)

    status, view = patch(client, owner, username, role="auditor")

    assert (status, view["role"]) == (200, "auditor")
    assert error_code(
        call(client, "post", "/v1/admin/operators", token, {"username": name(), "password": PASSWORD, "role": "owner"})
    ) == (401, "token_revoked")
    assert error_code(call(client, "get", "/v1/admin/operators", login(client, username, PASSWORD))) == (
        403,
        "forbidden",
    )


def test_an_owner_resets_a_password_and_the_old_one_and_its_tokens_stop(client: Client) -> None:
    owner = seeded(client, "owner")
    username = name()
    create(client, owner, username, role="owner")
    token = login(client, username, PASSWORD)

    assert patch(client, owner, username, password="brand-new-pass-1")[0] == 200

    assert error_code(call(client, "get", "/v1/admin/operators", token)) == (401, "token_revoked")
    assert error_code(
        call(
            client,
            "post",
            "/v1/admin/auth/login",
            body={"username": username, "password": PASSWORD, "appid": TEST_TENANT},
        )
    ) == (401, "invalid_credentials")
    login(client, username, "brand-new-pass-1")


def test_a_patch_that_changes_nothing_writes_nothing(client: Client) -> None:
    owner = seeded(client, "owner")
    username = name()
    create(client, owner, username, role="owner")
    token = login(client, username, PASSWORD)

    status, view = patch(client, owner, username, role="owner", disabled=False)

    assert (status, view["role"], view["disabled"]) == (200, "owner", False)
    assert call(client, "get", "/v1/admin/operators", token)[0] == 200
    assert len(records(TEST_TENANT, username)) == 1


def test_unknown_operators_are_404(client: Client) -> None:
    owner = seeded(client, "owner")
    assert error_code(patch(client, owner, name("nobody"), disabled=True)) == (404, "unknown_operator")
    assert error_code(patch(client, owner, "NOT%20VALID", disabled=True)) == (404, "unknown_operator")


# --- the last owner -------------------------------------------------------------------------------


def test_the_last_enabled_owner_can_be_neither_demoted_nor_disabled(
    client: Client, lone_owner: tuple[str, str]
) -> None:
    tenant, boss = lone_owner
    token = login(client, boss, PASSWORD, tenant)

    assert error_code(patch(client, token, boss, role="ops")) == (409, "last_owner")
    assert error_code(patch(client, token, boss, disabled=True)) == (409, "last_owner")
    assert call(client, "get", "/v1/admin/operators", token)[0] == 200  # nothing changed
    assert records(tenant, boss) == []

    # A disabled second owner does not count; an enabled one does
    other = name("second")
    create(client, token, other, role="owner")
    assert patch(client, token, other, disabled=True)[0] == 200
    assert error_code(patch(client, token, boss, role="ops")) == (409, "last_owner")
    assert patch(client, token, other, disabled=False)[0] == 200
    status, view = patch(client, token, boss, role="ops")
    assert (status, view["role"]) == (200, "ops")
    # now `other` is the last owner, and the demoted boss's token is over
    assert error_code(call(client, "get", "/v1/admin/operators", token)) == (401, "token_revoked")
    other_token = login(client, other, PASSWORD, tenant)
    assert error_code(patch(client, other_token, other, disabled=True)) == (409, "last_owner")


def test_two_owners_demoting_each_other_at_once_leave_one_owner(
    lone_owner: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read "the other is an owner" before either writes: only the condition on the other
    owner's item, checked in the transaction, stops the second demotion."""
    from chalicelib.services import operators

    tenant, boss = lone_owner
    other = name("other")
    get_store().admins.put(Admin(tenant, other, hash_password(PASSWORD), Role.OWNER), utcnow())
    barrier = threading.Barrier(2, timeout=20)
    waited: set[int] = set()
    original = AdminStore.change

    def change_after_both_read(self: AdminStore, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() not in waited:  # the first write of each thread waits for the other's read
            waited.add(threading.get_ident())
            barrier.wait()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AdminStore, "change", change_after_both_read)

    def demote(actor: str, target: str) -> str:
        try:
            operators.change(Principal(tenant, actor, Role.OWNER), target, role=Role.OPS, disabled=None, password=None)
        except StateConflict as exc:
            return exc.code
        return "done"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(lambda pair: demote(*pair), [(boss, other), (other, boss)]))

    assert outcomes == ["done", "last_owner"]
    owners = [u for u in (boss, other) if get_store().admins.get(tenant, u).role is Role.OWNER]  # type: ignore[union-attr]
    assert len(owners) == 1


# --- an operator's own password -------------------------------------------------------------------


def change_password(client: Client, token: str, current: str, new: str) -> tuple[int, Any]:
    return call(client, "put", "/v1/admin/me/password", token, {"current_password": current, "new_password": new})


@pytest.mark.parametrize("role", ["owner", "auditor"])
def test_an_operator_changes_their_password_and_stays_logged_in(client: Client, role: str) -> None:
    owner = seeded(client, "owner")
    username = name()
    create(client, owner, username, role=role)
    token, elsewhere = login(client, username, PASSWORD), login(client, username, PASSWORD)

    status, body = change_password(client, token, PASSWORD, "my-own-new-password")

    assert status == 200 and set(body) == {"token"}
    fresh = body["token"]
    tree = f"/v1/admin/users/u{uuid.uuid4().hex[:15]}/tree"
    assert call(client, "get", tree, fresh)[0] != 401  # the caller stays logged in
    for old in (token, elsewhere):  # every other session ends
        assert error_code(call(client, "get", tree, old)) == (401, "token_revoked")
    login(client, username, "my-own-new-password")
    assert error_code(
        call(
            client,
            "post",
            "/v1/admin/auth/login",
            body={"username": username, "password": PASSWORD, "appid": TEST_TENANT},
        )
    ) == (401, "invalid_credentials")
    assert change_password(client, fresh, "my-own-new-password", "and-another-one-9")[0] == 200


def test_a_wrong_current_password_is_403_and_counts_as_a_failed_login(client: Client) -> None:
    owner = seeded(client, "owner")
    username = name()
    create(client, owner, username, role="ops")
    token = login(client, username, PASSWORD)

    for _ in range(10):
        assert error_code(change_password(client, token, "not-my-password", "whatever-new-1")) == (
            403,
            "wrong_password",
        )

    # the password did not change, and the username is now throttled even for the right one
    assert get_store().admins.get(TEST_TENANT, username).token_version == 0  # type: ignore[union-attr]
    assert error_code(change_password(client, token, PASSWORD, "whatever-new-1")) == (429, "too_many_attempts")
    assert error_code(
        call(
            client,
            "post",
            "/v1/admin/auth/login",
            body={"username": username, "password": PASSWORD, "appid": TEST_TENANT},
        )
    ) == (429, "too_many_attempts")


# --- the audit trail ------------------------------------------------------------------------------


def test_every_change_is_audited_chained_and_without_password_material(client: Client) -> None:
    owner = seeded(client, "owner")
    username = name()
    create(client, owner, username, role="ops")
    assert patch(client, owner, username, role="finance")[0] == 200
    assert patch(client, owner, username, disabled=True)[0] == 200
    assert patch(client, owner, username, disabled=False)[0] == 200
    assert patch(client, owner, username, role="auditor", disabled=True, password="owner-set-pass-1")[0] == 200
    assert patch(client, owner, username, disabled=False)[0] == 200
    token = login(client, username, "owner-set-pass-1")
    assert change_password(client, token, "owner-set-pass-1", "self-chosen-pass-2")[0] == 200

    trail = records(TEST_TENANT, username)

    assert [(r.action, r.actor) for r in trail] == [
        ("operator.created", "admin:owner"),
        ("operator.role_changed", "admin:owner"),
        ("operator.disabled", "admin:owner"),
        ("operator.enabled", "admin:owner"),
        ("operator.role_changed", "admin:owner"),
        ("operator.disabled", "admin:owner"),
        ("operator.password_changed", "admin:owner"),
        ("operator.enabled", "admin:owner"),
        ("operator.password_changed", f"admin:{username}"),
    ]
    assert json.loads(trail[0].data) == {"role": "ops", "disabled": False}
    assert json.loads(trail[4].data) == {"from": "finance", "to": "auditor"}
    assert audit.verify_chain(trail)
    stored_hash = get_store().admins.get(TEST_TENANT, username).password_hash  # type: ignore[union-attr]
    for record in trail:
        text = record.data + record.action + record.actor
        for secret in (PASSWORD, "owner-set-pass-1", "self-chosen-pass-2", "$argon2", stored_hash):
            assert secret not in text


# --- bad input is a 4xx, never a 5xx --------------------------------------------------------------

BAD_CREATES = [
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_body"),
    ({}, "invalid_body"),
    ({"username": "valid.name", "password": PASSWORD}, "invalid_body"),
    ({"username": "valid.name", "password": PASSWORD, "role": "user"}, "invalid_body"),
    ({"username": "valid.name", "password": PASSWORD, "role": "root"}, "invalid_body"),
    ({"username": "valid.name", "password": PASSWORD, "role": "ops", "extra": 1}, "invalid_body"),
    ({"username": 12345, "password": PASSWORD, "role": "ops"}, "invalid_body"),
    ({"username": "valid.name", "password": None, "role": "ops"}, "invalid_body"),
    ({"username": "valid.name", "password": "short", "role": "ops"}, "invalid_password"),
    ({"username": "valid.name", "password": "x" * 300, "role": "ops"}, "invalid_body"),
    ({"username": "ab", "password": PASSWORD, "role": "ops"}, "invalid_username"),
    ({"username": "Upper.Case", "password": PASSWORD, "role": "ops"}, "invalid_username"),
    ({"username": "has#hash", "password": PASSWORD, "role": "ops"}, "invalid_username"),
    ({"username": "x" * 33, "password": PASSWORD, "role": "ops"}, "invalid_username"),
    ({"username": "名字名字", "password": PASSWORD, "role": "ops"}, "invalid_username"),
]


@pytest.mark.parametrize(("body", "code"), BAD_CREATES)
def test_bad_create_bodies_are_400(client: Client, body: Any, code: str) -> None:
    assert error_code(call(client, "post", "/v1/admin/operators", seeded(client, "owner"), body)) == (400, code)


BAD_PATCHES = [
    ({}, "invalid_body"),
    ({"role": None, "disabled": None}, "invalid_body"),
    ({"role": "user"}, "invalid_body"),
    ({"disabled": "yes"}, "invalid_body"),
    ({"disabled": 1}, "invalid_body"),
    ({"password": "short"}, "invalid_password"),
    ({"username": "renamed"}, "invalid_body"),
]


@pytest.mark.parametrize(("body", "code"), BAD_PATCHES)
def test_bad_patch_bodies_are_400(client: Client, body: Any, code: str) -> None:
    response = call(client, "patch", "/v1/admin/operators/ops", seeded(client, "owner"), body)
    assert error_code(response) == (400, code)
    assert get_store().admins.get(TEST_TENANT, "ops").role is Role.OPS  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    [{}, {"current_password": "pw-finance"}, {"current_password": 1, "new_password": PASSWORD}, "[]", "{"],
)
def test_bad_password_bodies_are_400(client: Client, body: Any) -> None:
    assert error_code(call(client, "put", "/v1/admin/me/password", seeded(client, "finance"), body))[0] == 400


def test_a_too_short_new_password_is_400(client: Client) -> None:
    token = seeded(client, "finance")
    assert error_code(change_password(client, token, "pw-finance", "short")) == (400, "invalid_password")
    assert call(client, "get", "/v1/admin/users/u000000000000000/tree", token)[0] != 401  # nothing changed


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=abc",
        "cursor=forged",
        # signed (as another list of the same tenant would be) but not a key of this index
        "cursor=" + "{plan_cursor}",
    ],
)
def test_bad_list_parameters_are_400(client: Client, query: str) -> None:
    plan_cursor = encode_cursor({"tenant": {"S": TEST_TENANT}, "version": {"N": "1"}})
    status, body = call(
        client, "get", "/v1/admin/operators?" + query.format(plan_cursor=plan_cursor), seeded(client, "owner")
    )
    assert status == 400, body
    assert body["error"]["code"] in {"invalid_limit", "invalid_cursor"}


def test_another_tenants_cursor_is_refused(client: Client) -> None:
    status, body = call(client, "get", "/v1/admin/operators?limit=1", seeded(client, "owner", OTHER_TENANT))
    assert status == 200 and body["next_cursor"]
    assert error_code(
        call(client, "get", f"/v1/admin/operators?limit=1&cursor={body['next_cursor']}", seeded(client, "owner"))
    ) == (400, "invalid_cursor")

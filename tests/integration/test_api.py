"""The HTTP contract in-process (chalice.test.Client) on DynamoDB Local: bad input is a clear 4xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from chalice.test import Client

from app import app
from tests.stack import JWT_SECRET, OTHER_TENANT, Stack, unique

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def client(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with Client(app, project_dir=str(tmp_path_factory.mktemp("no-config"))) as test_client:
        yield test_client


def call(
    client: Client, method: str, path: str, body: Any = None, token: str | None = None, **headers: str
) -> tuple[int, Any]:
    hdrs = {**JSON, **headers}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    raw = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    response = getattr(client.http, method)(path, headers=hdrs, body=raw or b"")
    text = response.body.decode() if isinstance(response.body, bytes) else (response.body or "")
    payload = json.loads(text) if text[:1] in ("{", "[") else None
    return response.status_code, payload


def login(client: Client, name: str, appid: str | None = None) -> tuple[str, str]:
    body = {"code": f"dev-{name}"} if appid is None else {"code": f"dev-{name}", "appid": appid}
    status, payload = call(client, "post", "/v1/auth/login", body)
    assert status == 200, payload
    return payload["token"], payload["user"]["id"]


def count_items(model: Any) -> int:
    return sum(1 for _ in model.scan())


def assert_error(status: int, payload: Any, expected_status: int, code: str | None = None) -> None:
    assert status == expected_status, payload
    assert set(payload) == {"error"}
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    if code:
        assert payload["error"]["code"] == code


def test_health(client: Client) -> None:
    assert call(client, "get", "/v1/health") == (200, {"status": "ok"})


def test_login_share_scan_me_team(client: Client, stack: Stack) -> None:
    alice_token, alice = login(client, unique("alice"))
    bob_token, bob = login(client, unique("bob"))

    status, share = call(client, "post", "/v1/shares", {"channel": "moments"}, alice_token)
    assert status == 201
    assert (
        len(share["code"]) <= 32
        and share["code"] in share["path"]
        and share["qr_url"].endswith(share["code"] + "/qrcode?appid=wxtest000000000a")
    )

    assert call(client, "post", "/v1/referrals/scan", {"code": share["code"]}, bob_token) == (200, {"status": "bound"})
    assert call(client, "post", "/v1/referrals/scan", {"code": share["code"]}, bob_token) == (
        200,
        {"status": "already_bound"},
    )
    stack.drain()  # team counts are counters the users stream keeps (seconds behind in AWS)

    _, me = call(client, "get", "/v1/me", token=bob_token)
    assert me["upline"]["id"] == alice and me["team_counts"] == {"1": 0, "2": 0, "3": 0}
    _, alice_me = call(client, "get", "/v1/me", token=alice_token)
    assert alice_me["upline"] is None and alice_me["team_counts"]["1"] == 1
    _, team = call(client, "get", "/v1/me/team?level=1", token=alice_token)
    assert [m["id"] for m in team["items"]] == [bob] and team["next_cursor"] is None


def test_self_scan_is_rejected_with_a_reason(client: Client) -> None:
    token, _ = login(client, unique("solo"))
    _, share = call(client, "post", "/v1/shares", {}, token)
    assert call(client, "post", "/v1/referrals/scan", {"code": share["code"]}, token) == (
        200,
        {"status": "rejected", "reason": "self_binding"},
    )


def test_team_pagination_is_newest_first_with_an_opaque_cursor(client: Client) -> None:
    token, _ = login(client, unique("boss"))
    _, share = call(client, "post", "/v1/shares", {}, token)
    members = []
    for i in range(5):
        t, uid = login(client, unique(f"m{i}"))
        call(client, "post", "/v1/referrals/scan", {"code": share["code"]}, t)
        members.append(uid)
    seen, cursor = [], None
    while True:
        path = "/v1/me/team?level=1&limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = call(client, "get", path, token=token)
        assert status == 200 and len(page["items"]) <= 2
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(members))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_body"),
        ({"code": 123}, "invalid_body"),
        ({"code": ""}, "invalid_body"),
        ({"code": "dev-x", "extra": 1}, "invalid_body"),
        ({}, "invalid_body"),
        ({"code": "not-a-sandbox-code"}, "invalid_code"),
        ({"code": "err-45011"}, "rate_limited"),
        ({"code": "err-40226"}, "risky_user"),
        ({"code": "dev-x", "appid": "wxunknown"}, "unknown_tenant"),
    ],
)
def test_bad_logins_are_clear_4xx_and_write_nothing(client: Client, body: Any, code: str) -> None:
    from chalicelib.store.models import UserModel

    before = count_items(UserModel)
    status, payload = call(client, "post", "/v1/auth/login", body)
    assert 400 <= status < 500
    assert_error(status, payload, status, code)
    assert count_items(UserModel) == before


def test_wechat_errors_map_to_the_documented_statuses(client: Client) -> None:
    assert call(client, "post", "/v1/auth/login", {"code": "err-40029"})[0] == 401
    assert call(client, "post", "/v1/auth/login", {"code": "err-45011"})[0] == 429
    assert call(client, "post", "/v1/auth/login", {"code": "err-40226"})[0] == 403
    assert call(client, "post", "/v1/auth/login", {"code": "   "})[0] == 400


def _token(claims: dict[str, Any], secret: str = JWT_SECRET) -> str:
    now = datetime.now(UTC)
    base = {
        "iss": "fenxiao",
        "sub": "u1",
        "ten": "wxtest000000000a",
        "role": "user",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
    }
    return jwt.encode({**base, **claims}, secret, algorithm="HS256")


BAD_TOKENS = {
    "missing": lambda: None,
    "garbage": lambda: "garbage",
    "other-secret": lambda: _token({}, secret="another-secret-0123456789abcdef"),
    "expired": lambda: _token({"exp": 1_000_000}),
    "unknown-tenant": lambda: _token({"ten": "wxnotatenant"}),
    "unknown-role": lambda: _token({"role": "emperor"}),
}


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("missing", "missing_token"),
        ("garbage", "invalid_token"),
        ("other-secret", "invalid_token"),
        ("expired", "token_expired"),
        ("unknown-tenant", "invalid_token"),
        ("unknown-role", "invalid_token"),
    ],
)
def test_bad_tokens_are_401(client: Client, kind: str, code: str) -> None:
    status, payload = call(client, "get", "/v1/me", token=BAD_TOKENS[kind]())
    assert_error(status, payload, 401, code)


def test_another_tenants_token_cannot_act_for_this_mini_program(client: Client) -> None:
    token, _ = login(client, unique("other"), appid=OTHER_TENANT)
    status, payload = call(client, "get", "/v1/me", token=token, **{"X-Appid": "wxtest000000000a"})
    assert_error(status, payload, 401, "tenant_mismatch")
    referer = "https://servicewechat.com/wxtest000000000a/3/page-frame.html"
    status, payload = call(client, "get", "/v1/me", token=token, Referer=referer)
    assert_error(status, payload, 401, "tenant_mismatch")


def test_another_tenants_share_code_is_unknown(client: Client) -> None:
    other_token, _ = login(client, unique("o"), appid=OTHER_TENANT)
    _, share = call(client, "post", "/v1/shares", {}, other_token)
    token, _ = login(client, unique("t"))
    status, payload = call(client, "post", "/v1/referrals/scan", {"code": share["code"]}, token)
    assert_error(status, payload, 404, "unknown_share")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"code": "ZZZZZZZZ"}, 404, "unknown_share"),
        ({"code": "lower-case!"}, 404, "unknown_share"),
        ({"code": "X" * 33}, 400, "invalid_body"),
        ({"code": None}, 400, "invalid_body"),
        ("", 400, "invalid_body"),
    ],
)
def test_bad_scans(client: Client, body: Any, status: int, code: str) -> None:
    from chalicelib.store.models import AuditModel

    token, _ = login(client, unique("scanner"))
    before = count_items(AuditModel)
    got, payload = call(client, "post", "/v1/referrals/scan", body, token)
    assert_error(got, payload, status, code)
    assert count_items(AuditModel) == before


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("level=4", "invalid_level"),
        ("level=x", "invalid_level"),
        ("limit=0", "invalid_limit"),
        ("cursor=%%%", "invalid_cursor"),
        ("cursor=eyJhIjoxfQ", "invalid_cursor"),
    ],
)
def test_bad_team_queries(client: Client, query: str, code: str) -> None:
    token, _ = login(client, unique("q"))
    status, payload = call(client, "get", f"/v1/me/team?{query}", token=token)
    assert_error(status, payload, 400, code)


def test_a_cursor_from_someone_elses_list_is_refused(client: Client) -> None:
    boss_token, _ = login(client, unique("boss"))
    _, share = call(client, "post", "/v1/shares", {}, boss_token)
    for i in range(3):
        t, _ = login(client, unique(f"m{i}"))
        call(client, "post", "/v1/referrals/scan", {"code": share["code"]}, t)
    _, page = call(client, "get", "/v1/me/team?level=1&limit=1", token=boss_token)
    spy_token, _ = login(client, unique("spy"))
    status, payload = call(client, "get", f"/v1/me/team?level=1&cursor={page['next_cursor']}", token=spy_token)
    assert_error(status, payload, 400, "invalid_cursor")


def test_method_not_allowed_and_media_type_use_the_error_shape(client: Client) -> None:
    status, payload = call(client, "put", "/v1/me")
    assert_error(status, payload, 405)
    status, payload = call(
        client, "post", "/v1/auth/login", "code=x", **{"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert_error(status, payload, 415)


def test_admin_login_and_roles(client: Client) -> None:
    assert_error(
        *call(client, "post", "/v1/admin/auth/login", {"username": "owner", "password": "wrong"}),
        401,
        "invalid_credentials",
    )
    assert_error(
        *call(client, "post", "/v1/admin/auth/login", {"username": "nobody", "password": "x"}),
        401,
        "invalid_credentials",
    )
    _, owner = call(client, "post", "/v1/admin/auth/login", {"username": "owner", "password": "pw-owner"})
    _, finance = call(client, "post", "/v1/admin/auth/login", {"username": "finance", "password": "pw-finance"})
    user_token, uid = login(client, unique("u"))

    # a shopper's token cannot reach admin routes
    assert_error(*call(client, "get", f"/v1/admin/users/{uid}/tree", token=user_token), 403)
    status, tree = call(client, "get", f"/v1/admin/users/{uid}/tree", token=finance["token"])
    assert status == 200 and tree["id"] == uid and tree["children"] == []
    # only owners run jobs
    assert_error(*call(client, "post", "/v1/admin/jobs/seal_audit/run", token=finance["token"]), 403)
    status, job = call(client, "post", "/v1/admin/jobs/seal_audit/run", token=owner["token"])
    assert status == 200 and job["job"] == "seal_audit"
    assert_error(*call(client, "post", "/v1/admin/jobs/nope/run", token=owner["token"]), 404, "unknown_job")


def test_admin_tree_and_rebind_over_http(client: Client, stack: Stack) -> None:
    _, owner = call(client, "post", "/v1/admin/auth/login", {"username": "owner", "password": "pw-owner"})
    _, ops = call(client, "post", "/v1/admin/auth/login", {"username": "ops", "password": "pw-ops"})
    _, auditor = call(client, "post", "/v1/admin/auth/login", {"username": "auditor", "password": "pw-auditor"})
    a_token, a = login(client, unique("a"))
    b_token, b = login(client, unique("b"))
    c_token, c = login(client, unique("c"))
    _, n = login(client, unique("n"))
    _, sa = call(client, "post", "/v1/shares", {}, a_token)
    call(client, "post", "/v1/referrals/scan", {"code": sa["code"]}, b_token)
    _, sb = call(client, "post", "/v1/shares", {}, b_token)
    call(client, "post", "/v1/referrals/scan", {"code": sb["code"]}, c_token)
    stack.drain()  # team counts are counters the users stream keeps

    status, tree = call(client, "get", f"/v1/admin/users/{a}/tree?depth=3", token=owner["token"])
    assert status == 200
    assert tree["children"][0]["id"] == b and tree["children"][0]["children"][0]["id"] == c
    assert tree["team_counts"] == {"1": 1, "2": 1, "3": 0}

    path = f"/v1/admin/users/{b}/rebind"
    assert_error(*call(client, "post", path, {"parent_id": n}, ops["token"]), 400, "invalid_body")
    assert_error(*call(client, "post", path, {"parent_id": n, "reason": "x"}, auditor["token"]), 403)
    assert_error(
        *call(client, "post", f"/v1/admin/users/{a}/rebind", {"parent_id": c, "reason": "x"}, ops["token"]),
        409,
        "cycle",
    )
    assert_error(*call(client, "post", path, {"parent_id": "nobody", "reason": "x"}, ops["token"]), 404)
    status, moved = call(client, "post", path, {"parent_id": n, "reason": "wrong team"}, ops["token"])
    assert status == 200 and [u["id"] for u in moved["upline"]] == [n]

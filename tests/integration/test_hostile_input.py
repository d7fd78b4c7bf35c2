"""Hostile input never causes a 5xx: deep or huge JSON bodies, forged cursors."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.api.http import MAX_BODY_BYTES, json_depth
from tests.stack import Stack, unique

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(stack: Stack) -> Client:
    from app import app

    return Client(app)


def post(client: Client, path: str, body: bytes, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = client.http.post(path, headers=headers, body=body)
    return response.status_code, json.loads(response.body or b"{}")


@pytest.mark.parametrize("path", ["/v1/auth/login", "/v1/admin/auth/login"])
def test_deeply_nested_json_is_a_4xx_not_a_500(client: Client, path: str) -> None:
    # 50,000 deep (the review's case) is over the size limit; 30,000 deep is under it
    status, body = post(client, path, b"[" * 50_000 + b"]" * 50_000)
    assert status == 413 and body["error"]["code"] == "body_too_large"
    status, body = post(client, path, b"[" * 30_000 + b"]" * 30_000)
    assert status == 400 and body["error"]["code"] == "body_too_deep"
    status, body = post(client, path, b'{"a":' * 10_000 + b"1" + b"}" * 10_000)
    assert status == 400 and body["error"]["code"] == "body_too_deep"


@pytest.mark.parametrize("path", ["/v1/auth/login", "/v1/admin/auth/login"])
def test_a_body_over_the_limit_is_a_413(client: Client, path: str) -> None:
    status, body = post(client, path, b'{"code":"' + b"x" * MAX_BODY_BYTES + b'"}')
    assert status == 413 and body["error"]["code"] == "body_too_large"


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"name": "[" * 100 + "{" * 100, "list": [[1]]}).encode()
    assert json_depth(text) == 3  # the object, then two arrays


def login(client: Client) -> str:
    status, body = post(client, "/v1/auth/login", json.dumps({"code": f"dev-{unique('c')}"}).encode())
    assert status == 200, body
    return str(body["token"])


def test_a_crafted_cursor_with_the_right_partition_and_a_bad_range_is_a_400(client: Client, stack: Stack) -> None:
    token = login(client)
    me = json.loads(client.http.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).body)
    # the old, unsigned cursor format: the right partition, a start key DynamoDB refuses
    crafted = {"pk": {"S": f"{stack.tenant}#{me['id']}"}, "sk": {"N": "not-a-number"}}
    forged = base64.urlsafe_b64encode(json.dumps(crafted).encode()).decode().rstrip("=")
    for path in (
        f"/v1/orders?cursor={forged}",
        f"/v1/withdrawals?cursor={forged}",
        f"/v1/me/commissions?cursor={forged}",
    ):
        response = client.http.get(path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 400, (path, response.body)
        assert json.loads(response.body)["error"]["code"] == "invalid_cursor"


def test_a_cursor_changed_by_one_character_is_refused() -> None:
    from chalicelib.errors import InvalidInput
    from chalicelib.store.base import decode_cursor, encode_cursor

    cursor = encode_cursor({"pk": {"S": "t#u"}, "sk": {"S": "a"}})
    assert cursor is not None
    assert decode_cursor(cursor, hash_attr="pk", hash_value="t#u") == {"pk": {"S": "t#u"}, "sk": {"S": "a"}}
    tampered = cursor[:-1] + ("A" if cursor[-1] != "A" else "B")
    with pytest.raises(InvalidInput):
        decode_cursor(tampered, hash_attr="pk", hash_value="t#u")

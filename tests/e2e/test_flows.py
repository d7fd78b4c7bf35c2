"""End to end over HTTP on the local stack: chalice local + event runner + DynamoDB Local."""

from __future__ import annotations

import itertools

from tests.e2e.conftest import LiveApi, eventually
from tests.stack import unique


def team_ids(api: LiveApi, token: str, level: int) -> list[str]:
    response = api.call("GET", f"/v1/me/team?level={level}", token)
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["items"]]


def share_and_scan(api: LiveApi, sharer_token: str, friend_token: str) -> None:
    unknown = api.call("POST", "/v1/shares", sharer_token, json={"product_id": "lipstick-01", "channel": "wechat"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_product", unknown.text
    share = api.call("POST", "/v1/shares", sharer_token, json={"channel": "wechat"})
    assert share.status_code == 201, share.text
    assert share.json()["path"].startswith("pages/index/index?scene=")
    scan = api.call("POST", "/v1/referrals/scan", friend_token, json={"code": share.json()["code"]})
    assert scan.json() == {"status": "bound"}


def counts(api: LiveApi, token: str) -> dict[str, int]:
    return dict(api.call("GET", "/v1/me", token).json()["team_counts"])


def test_health_needs_no_token(live_api: LiveApi) -> None:
    response = live_api.call("GET", "/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_share_scan_team_and_no_fourth_level(live_api: LiveApi) -> None:
    # Given five generations: a shares to b, b to c, c to d, d to e
    people = [live_api.login(unique(n)) for n in ("a", "b", "c", "d", "e")]
    for (sharer_token, _), (friend_token, _) in itertools.pairwise(people):
        share_and_scan(live_api, sharer_token, friend_token)
    (a_tok, _), (b_tok, b), (c_tok, c), (d_tok, d), (e_tok, e) = people

    # Then each sees the friend at level 1 and the friend's friend at level 2
    assert team_ids(live_api, a_tok, 1) == [b]
    assert team_ids(live_api, a_tok, 2) == [c]
    assert team_ids(live_api, a_tok, 3) == [d]
    assert team_ids(live_api, b_tok, 3) == [e]
    # and the fourth generation below a (e) is in nobody's chain with a in it
    assert e not in team_ids(live_api, a_tok, 1) + team_ids(live_api, a_tok, 2) + team_ids(live_api, a_tok, 3)
    me_e = live_api.call("GET", "/v1/me", e_tok).json()
    assert me_e["upline"]["id"] == d
    assert set(me_e) >= {"id", "upline", "team_counts"}
    # team counts are counters the users stream keeps: they follow within the runner's delay
    eventually(lambda: counts(live_api, a_tok) == {"1": 1, "2": 1, "3": 1})
    eventually(lambda: counts(live_api, c_tok) == {"1": 1, "2": 1, "3": 0})
    assert live_api.call("GET", "/v1/me", d_tok).json()["upline"]["id"] == c


def test_qrcode_is_a_png(live_api: LiveApi) -> None:
    token, _ = live_api.login(unique("qr"))
    share = live_api.call("POST", "/v1/shares", token, json={}).json()
    assert share["qr_url"].startswith(live_api.url)  # the public URL is the server's own
    response = live_api.call("GET", share["qr_url"].removeprefix(live_api.url), headers={"Accept": "image/png"})
    assert response.status_code == 200, response.text
    assert response.content.startswith(b"\x89PNG")
    missing = live_api.call(
        "GET", f"/v1/shares/ZZZZZZZZ/qrcode?appid={live_api.tenant}", headers={"Accept": "image/png"}
    )
    assert missing.status_code == 404


def test_operator_rebind_moves_the_downline_through_the_stream(live_api: LiveApi) -> None:
    people = [live_api.login(unique(n)) for n in ("old", "m", "k", "g", "new")]
    (old_tok, old), (m_tok, m), (k_tok, k), (g_tok, _), (_, new) = people
    share_and_scan(live_api, old_tok, m_tok)
    share_and_scan(live_api, m_tok, k_tok)
    share_and_scan(live_api, k_tok, g_tok)
    owner = live_api.admin("owner")

    moved = live_api.call("POST", f"/v1/admin/users/{m}/rebind", owner, json={"parent_id": new, "reason": "wrong team"})

    assert moved.status_code == 200, moved.text
    assert [u["id"] for u in moved.json()["upline"]] == [new]
    eventually(lambda: _upline(live_api, g_tok) == [k, m, new])
    eventually(
        lambda: (
            live_api.call("GET", f"/v1/admin/users/{new}/tree?depth=3", owner).json()["team_counts"]
            == {"1": 1, "2": 1, "3": 1}
        )
    )
    tree = live_api.call("GET", f"/v1/admin/users/{new}/tree?depth=3", owner).json()
    assert tree["children"][0]["id"] == m
    assert tree["children"][0]["children"][0]["id"] == k
    assert tree["team_counts"] == {"1": 1, "2": 1, "3": 1}
    assert old not in [c["id"] for c in tree["children"]]


def _upline(api: LiveApi, token: str) -> list[str]:
    me = api.call("GET", "/v1/me", token).json()
    tree_of = api.call("GET", f"/v1/admin/users/{me['id']}/tree?depth=1", api.admin("auditor")).json()
    return [ref["id"] for ref in tree_of["upline"]]


def test_jobs_run_on_demand(live_api: LiveApi) -> None:
    owner = live_api.admin("owner")
    response = live_api.call("POST", "/v1/admin/jobs/seal_audit/run", owner)
    assert response.status_code == 200, response.text
    assert response.json()["job"] == "seal_audit"
    again = live_api.call("POST", "/v1/admin/jobs/seal_audit/run", owner).json()
    assert again["summary"]["sealed"] is False  # sealing twice seals once


def test_an_unknown_route_answers_our_404_and_never_echoes_the_token(live_api: LiveApi) -> None:
    token = live_api.admin("owner")
    for path in ("/v1/admin/nope", "/v1/nothing/here"):
        response = live_api.call("GET", path, token)
        assert response.status_code == 404, response.text
        assert response.json() == {"error": {"code": "not_found", "message": "no such route"}}
        assert token not in response.text

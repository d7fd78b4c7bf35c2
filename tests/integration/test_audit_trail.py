"""Operators read the audit trail and verify it: altering, removing or re-sealing any stored
record makes verification name it. Each test has a tenant of its own (the others' records
would be in its way)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from chalice.test import Client

from chalicelib.auth import hash_password
from chalicelib.clock import utcnow
from chalicelib.entities import Admin, AuditEvent, Principal, Role, Tenant
from chalicelib.errors import InvalidInput, NotAllowed
from chalicelib.services import audit_trail, jobs
from chalicelib.store import audit, get_store
from chalicelib.store.models import AuditModel
from tests.stack import Stack, reset_caches, unique

pytestmark = pytest.mark.integration


@pytest.fixture
def tenant(stack: Stack) -> str:
    appid = "wx" + unique("aud").replace("-", "")[:14]
    get_store().tenants.put(Tenant(appid, "Audit shop", "UTC"), utcnow())
    for username, role in (("owner", Role.OWNER), ("auditor", Role.AUDITOR), ("ops", Role.OPS)):
        get_store().admins.put(Admin(appid, username, hash_password("pw-audit-1234"), role), utcnow())
    reset_caches()
    return appid


def owner(tenant: str, role: Role = Role.OWNER) -> Principal:
    return Principal(tenant=tenant, subject=role.value, role=role)


def record(tenant: str, entity: str, action: str, when: datetime, **data: object) -> AuditModel:
    row = audit.action_record(tenant, AuditEvent(entity=entity, action=action, actor="admin:owner", data=data), when)
    assert audit.put_once(row)
    return row


def workload(tenant: str) -> tuple[str, str, list[AuditModel]]:
    """Records yesterday and today (UTC), and yesterday sealed."""
    now = utcnow()
    yesterday = (now - timedelta(days=1)).replace(hour=10)
    rows = [
        record(tenant, "probe:a", "probe.made", yesterday, n=1),
        record(tenant, "probe:a", "probe.changed", yesterday + timedelta(minutes=1), n=2),
        record(tenant, "probe:b", "probe.made", yesterday + timedelta(minutes=2), n=3),
        record(tenant, "probe:a", "probe.changed", yesterday + timedelta(minutes=3), n=4),
    ]
    assert jobs.seal_audit(now, tenant, "system:test")["records"] == 4
    rows.append(record(tenant, "probe:a", "probe.changed", now - timedelta(seconds=5), n=5))
    return yesterday.date().isoformat(), now.date().isoformat(), rows


def test_an_untouched_trail_verifies(tenant: str) -> None:
    first, last, _ = workload(tenant)
    result = audit_trail.verify(owner(tenant, Role.AUDITOR), first, last)
    assert result == {"ok": True, "checked": 6, "seals_checked": 1, "first_bad": None}  # 5 records + the seal


@pytest.mark.parametrize("change", ["data", "actor", "delete", "reseal"])
def test_any_altered_record_is_named(tenant: str, change: str) -> None:
    first, last, rows = workload(tenant)
    victim = rows[1]
    if change == "data":
        victim.update(actions=[AuditModel.data.set(json.dumps({"n": 2000}))])
        expected: tuple[str, str | None, str] = (victim.entity, victim.sk, "altered")
    elif change == "actor":
        victim.update(actions=[AuditModel.actor.set("admin:someone-else")])
        expected = (victim.entity, victim.sk, "altered")
    elif change == "delete":  # the record after it no longer links to its predecessor
        victim.delete()
        expected = (rows[3].entity, rows[3].sk, "broken_chain")
    else:  # a record rewritten with a consistent hash still breaks the day's seal
        forged = audit.build(tenant, AuditEvent("probe:b", "probe.made", "admin:owner", {"n": 30}), _at(rows[2]), None)
        rows[2].update(actions=[AuditModel.data.set(forged.data), AuditModel.hash.set(forged.hash)])
        expected = (f"seal:{first}", None, "seal_mismatch")
    result = audit_trail.verify(owner(tenant), first, last)
    bad = result["first_bad"]
    assert result["ok"] is False and bad is not None
    assert (bad["entity"], bad["id"] if expected[1] else None, bad["reason"]) == expected


def _at(row: AuditModel) -> datetime:
    return datetime.strptime(row.at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def test_the_trail_is_listed_newest_first_with_filters_and_cursors(tenant: str) -> None:
    first, last, rows = workload(tenant)
    reader = owner(tenant, Role.AUDITOR)

    seen, cursor = [], None
    while True:
        page = audit_trail.listing(
            reader, entity=None, action=None, actor=None, first=first, last=last, cursor=cursor, limit=2
        )
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [i["id"] for i in seen] == sorted((i["id"] for i in seen), reverse=True)
    assert {i["id"] for i in seen} == {r.sk for r in rows} | {f"{first}T00:00:00.000000Z#seal"}

    only_a = audit_trail.listing(
        reader, entity="probe:a", action="probe.changed", actor=None, first=first, last=last, cursor=None, limit=50
    )
    assert [i["data"]["n"] for i in only_a["items"]] == [5, 4, 2]
    with pytest.raises(InvalidInput):  # a cursor of another query
        audit_trail.listing(
            reader,
            entity="probe:b",
            action=None,
            actor=None,
            first=first,
            last=last,
            cursor=cursor or page_cursor(reader, first, last),
            limit=2,
        )
    with pytest.raises(NotAllowed):
        audit_trail.listing(
            owner(tenant, Role.OPS), entity=None, action=None, actor=None, first=first, last=last, cursor=None, limit=2
        )


def page_cursor(reader: Principal, first: str, last: str) -> str:
    page = audit_trail.listing(
        reader, entity=None, action=None, actor=None, first=first, last=last, cursor=None, limit=1
    )
    assert page["next_cursor"]
    return str(page["next_cursor"])


def test_the_routes_serve_their_own_tenant_only(stack: Stack, tenant: str) -> None:
    from app import app

    first, last, _ = workload(tenant)
    client = Client(app)

    def token(appid: str, username: str, password: str) -> str:
        response = client.http.post(
            "/v1/admin/auth/login",
            headers={"Content-Type": "application/json"},
            body=json.dumps({"username": username, "password": password, "appid": appid}),
        )
        assert response.status_code == 200, response.body
        return str(json.loads(response.body)["token"])

    mine = {"Authorization": f"Bearer {token(tenant, 'auditor', 'pw-audit-1234')}"}
    listed = client.http.get(f"/v1/admin/audit?from={first}&to={last}&entity=probe:a", headers=mine)
    assert listed.status_code == 200 and len(json.loads(listed.body)["items"]) == 4
    verified = client.http.post(
        "/v1/admin/audit/verify",
        headers={**mine, "Content-Type": "application/json"},
        body=json.dumps({"from": first, "to": last}),
    )
    assert verified.status_code == 200 and json.loads(verified.body)["ok"] is True

    other = {"Authorization": f"Bearer {token(stack.tenant, 'owner', 'pw-owner')}"}
    theirs = client.http.get(f"/v1/admin/audit?from={first}&to={last}&entity=probe:a", headers=other)
    assert theirs.status_code == 200 and json.loads(theirs.body)["items"] == []  # another tenant's trail
    for bad in ("from=2026-13-01", "from=2026-11-20&to=2026-11-01", "from=2020-01-01&to=2026-01-01", "cursor=x.y"):
        response = client.http.get(f"/v1/admin/audit?{bad}", headers=mine)
        assert response.status_code == 400, (bad, response.body)
    response = client.http.post(
        "/v1/admin/audit/verify", headers={**mine, "Content-Type": "application/json"}, body=json.dumps({"from": 1})
    )
    assert response.status_code == 400


def test_make_audit_verify_exits_1_on_an_altered_record(tenant: str, capsys: pytest.CaptureFixture[str]) -> None:
    from devtools import audit as cli

    first, last, rows = workload(tenant)
    assert cli.main(["verify", "--tenant", tenant, "--from", first, "--to", last]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    rows[0].update(actions=[AuditModel.action.set("probe.forged")])
    assert cli.main(["verify", "--tenant", tenant, "--from", first, "--to", last]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["first_bad"]["id"] == rows[0].sk and printed["tenant"] == tenant


def test_plans_and_rules_changed_by_operators_keep_their_chains(tenant: str) -> None:
    from chalicelib.services import plans, withdrawals

    boss = owner(tenant)
    version = plans.create(boss, {"rates_bps": [1000, 500, 200], "cap_bps": 3000})["version"]
    plans.activate(boss, version)
    plans.activate(boss, version)  # again: a second activation record on the same chain
    withdrawals.set_rules(boss, {"min_fen": 200})
    withdrawals.set_rules(boss, {"min_fen": 300})
    today = utcnow().date().isoformat()
    assert audit_trail.verify(boss, today, today)["first_bad"] is None
    assert audit.verify_chain(list(audit.for_entity(tenant, f"plan:{version}")))

"""Scheduled jobs, one tenant at a time: the schedule fans out per tenant through the jobs queue,
and an owner's "run now" acts on the owner's tenant only, audited with the owner as actor."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.entities import Principal, Role
from chalicelib.services import logins, withdrawals
from chalicelib.store import audit, get_store
from chalicelib.withdrawal import WithdrawalState
from tests.integration.test_withdrawals import credit
from tests.stack import OPEN_RULES, OTHER_TENANT, TEST_TENANT, Stack, unique


@pytest.fixture
def both_open(stack: Stack) -> None:
    for tenant in (TEST_TENANT, OTHER_TENANT):
        withdrawals.set_rules(Principal(tenant, "finance", Role.FINANCE), OPEN_RULES)


def approved_withdrawal(tenant: str, amount_fen: int = 1_000) -> str:
    who = Principal(tenant, logins.login(f"dev-{unique('j')}", tenant).user.id, Role.USER)
    credit(None, who, amount_fen)  # type: ignore[arg-type]
    body, _ = withdrawals.request(who, amount_fen)
    if body["state"] == "requested":
        withdrawals.approve(Principal(tenant, "finance", Role.FINANCE), body["id"])
    return str(body["id"])


def state(tenant: str, wid: str) -> WithdrawalState:
    w = get_store().withdrawals.get(tenant, wid)
    assert w is not None
    return w.state


def owner_token(client: Client, tenant: str) -> str:
    response = client.http.post(
        "/v1/admin/auth/login",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"username": "owner", "password": "pw-owner", "appid": tenant}),
    )
    assert response.status_code == 200, response.body
    return str(json.loads(response.body)["token"])


def test_an_owners_run_now_acts_on_the_owners_tenant_only(stack: Stack, both_open: None) -> None:
    from app import app

    client = Client(app)
    # Given an approved withdrawal in each tenant
    ours, theirs = approved_withdrawal(TEST_TENANT), approved_withdrawal(OTHER_TENANT)
    # When the other tenant's owner runs the payout now
    response = client.http.post(
        "/v1/admin/jobs/payout_run/run", headers={"Authorization": f"Bearer {owner_token(client, OTHER_TENANT)}"}
    )
    assert response.status_code == 200, response.body
    stack.drain()
    # Then only their withdrawal went to WeChat, and nothing of ours is in their answer
    assert state(OTHER_TENANT, theirs) is not WithdrawalState.APPROVED
    assert state(TEST_TENANT, ours) is WithdrawalState.APPROVED
    body: dict[str, Any] = json.loads(response.body)
    assert TEST_TENANT not in json.dumps(body) and ours not in json.dumps(body)
    # And the run is audited with the operator as actor
    run_id = body["summary"]["run"]
    record = next(iter(audit.for_entity(OTHER_TENANT, f"payout_run:{run_id}")))
    assert record.actor == "admin:owner"


def test_the_schedule_fans_out_one_run_per_tenant(stack: Stack, both_open: None) -> None:
    # Given approved withdrawals in both tenants
    ours, theirs = approved_withdrawal(TEST_TENANT), approved_withdrawal(OTHER_TENANT)
    # When the schedule fires: one message per tenant, each run as an invocation of its own
    fanned = stack.runner.fire_schedule("payout_run")
    assert fanned["tenants"] >= 2
    stack.drain()
    # Then both tenants' withdrawals went out
    assert state(TEST_TENANT, ours) is not WithdrawalState.APPROVED
    assert state(OTHER_TENANT, theirs) is not WithdrawalState.APPROVED


def test_every_job_runs_for_one_tenant(stack: Stack) -> None:
    from chalicelib.services import jobs

    for name in jobs.JOBS:
        summary = jobs.run_for_tenant(name, OTHER_TENANT, actor=f"system:{name}")
        assert TEST_TENANT not in json.dumps(summary, default=str), name


def test_the_per_tenant_redrive_still_publishes_the_parked_gauge_its_alarm_watches(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.services import jobs, parking

    published: list[tuple[str, float]] = []
    monkeypatch.setattr(parking, "gauge", lambda name, value, **_: published.append((name, value)))
    jobs.run_for_tenant("redrive_parked", OTHER_TENANT, actor="system:redrive_parked")
    assert [name for name, _ in published] == ["ParkedEventsWaiting"]


def test_the_second_tenants_transfer_is_paid_through_its_own_notify_url(stack: Stack, both_open: None) -> None:
    from chalicelib.wechat import get_transfer

    # Given the second tenant's withdrawal sent to WeChat by its own run
    wid = approved_withdrawal(OTHER_TENANT)
    from chalicelib.services import jobs

    jobs.run_for_tenant("payout_run", OTHER_TENANT, actor="system:payout_run")
    stack.drain()
    assert state(OTHER_TENANT, wid) is WithdrawalState.WAIT_USER_CONFIRM
    assert get_transfer(OTHER_TENANT)._config.notify_url.endswith(f"/v1/callbacks/wechatpay/{OTHER_TENANT}/transfer")  # type: ignore[attr-defined]
    # When the user confirms in WeChat: the twin POSTs to that URL (the default tenant is the first one)
    w = get_store().withdrawals.get(OTHER_TENANT, wid)
    assert w is not None
    withdrawals.sandbox_user_confirm(Principal(OTHER_TENANT, w.promoter, Role.USER), wid)
    # Then the withdrawal is paid
    assert state(OTHER_TENANT, wid) is WithdrawalState.PAID

"""Operator tooling creates tenants and admins idempotently; passwords never in arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.auth import check_password
from chalicelib.entities import Role
from chalicelib.store import audit, get_store
from devtools import admin as cli
from tests.stack import OTHER_TENANT, Stack, unique


def test_tenant_and_admin_are_created_once(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    appid = "wx" + unique("cli").replace("-", "")[:14]
    monkeypatch.setenv("ADMIN_PASSWORD", "long-enough-password")
    assert cli.main(["tenant", appid, "--name", "CLI shop"]) == 0
    assert not cli.add_tenant(appid, "again")
    assert cli.add_admin(appid, "boss", Role.OWNER)
    assert not cli.add_admin(appid, "boss", Role.OPS)
    stored = get_store().admins.get(appid, "boss")
    assert stored is not None
    assert stored.role is Role.OWNER
    assert check_password(stored.password_hash, "long-enough-password")


def test_seed_file_and_short_passwords(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    appid = "wx" + unique("seed").replace("-", "")[:14]
    config = {"tenants": [{"appid": appid, "name": "Seeded", "admins": [{"username": "fin", "role": "finance"}]}]}
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("ADMIN_PASSWORD", "long-enough-password")
    assert cli.seed(config) == [f"tenant {appid}", f"admin fin@{appid}"]
    assert cli.main(["seed", str(path)]) == 0
    monkeypatch.setenv("ADMIN_PASSWORD", "short")
    with pytest.raises(SystemExit):
        cli.add_admin(appid, "weak", Role.OPS)
    with pytest.raises(SystemExit):
        cli.add_admin("wxnosuchtenant", "x", Role.OPS)


def test_merchant_credentials_from_the_cli(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    merchant_id = unique("clishop").replace("-", "_")[:30]
    monkeypatch.delenv("MERCHANT_SECRET", raising=False)
    assert cli.main(["merchant", stack.tenant, merchant_id, "--name", "CLI shop"]) == 0
    printed = capsys.readouterr().out
    secret = printed.rsplit(" ", 1)[-1].strip()
    assert printed.startswith("created") and len(secret) >= 32
    stored = get_store().merchants.get(merchant_id)
    assert stored is not None and stored.tenant == stack.tenant and secret not in stored.current

    assert cli.main(["merchant", stack.tenant, merchant_id]) == 0  # twice: nothing changes
    assert "exists already" in capsys.readouterr().out
    monkeypatch.setenv("MERCHANT_SECRET", "given-secret-0123456789abcdef")
    assert cli.main(["merchant", stack.tenant, merchant_id, "--rotate"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("given-secret-0123456789abcdef")
    with pytest.raises(SystemExit, match="merchant_exists"):  # the id belongs to one tenant only
        cli.main(["merchant", OTHER_TENANT, merchant_id])
    with pytest.raises(SystemExit, match="unknown_merchant"):
        cli.main(["merchant", OTHER_TENANT, merchant_id, "--disable"])
    actors = {r.actor for r in audit.for_entity(stack.tenant, f"merchant:{merchant_id}")}
    assert len(actors) == 1 and actors.pop().startswith("cli:")


def test_operator_changes_from_the_cli_are_audited(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    username = unique("clio").replace("-", "")[:20]
    monkeypatch.setenv("ADMIN_PASSWORD", "long-enough-password")
    assert cli.add_admin(stack.tenant, username, Role.OPS)
    assert cli.set_disabled(stack.tenant, username, True)
    assert cli.add_admin(stack.tenant, username, Role.FINANCE, reset=True)
    records = list(audit.for_entity(stack.tenant, f"operator:{username}"))
    assert [r.action for r in records] == [
        "operator.created",
        "operator.disabled",
        "operator.role_changed",
        "operator.password_changed",
    ]
    assert all(r.actor.startswith("cli:") for r in records) and audit.verify_chain(records)
    assert "long-enough-password" not in "".join(r.data for r in records)

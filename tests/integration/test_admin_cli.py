"""Operator tooling creates tenants and admins idempotently; passwords never in arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.auth import check_password
from chalicelib.entities import Role
from chalicelib.store import get_store
from devtools import admin as cli
from tests.stack import Stack, unique


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

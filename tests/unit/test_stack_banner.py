"""`make run`'s banner names the logins and the optional settings in effect, and the app's INFO
logs stay quiet by default so they do not bury it."""

from __future__ import annotations

import pytest

from devtools.stack import StackConfig, banner, stack_env

INFO = {
    "tenant": "wxdemo0000000001",
    "admin_username": "admin",
    "admin_password": "demo-admin-123",
    "demo_users": ["alice", "bob"],
    "merchant": {"id": "shop1", "secret": "shop1-demo-secret-0123456789"},
}


def test_the_banner_names_logins_merchant_schedules_and_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDULE_INTERVAL", raising=False)
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    text = banner(StackConfig(api_port=8000, ddb_port=8001), INFO)
    assert "http://127.0.0.1:8000/admin" in text and "admin / demo-admin-123" in text
    assert "shop1 / shop1-demo-secret-0123456789" in text
    assert "each job at its own rate" in text and "LOG_LEVEL=WARNING" in text
    monkeypatch.setenv("SCHEDULE_INTERVAL", "30")
    assert "every job every 30 s (SCHEDULE_INTERVAL)" in banner(StackConfig(api_port=8000, ddb_port=8001), INFO)


def test_the_apps_logs_are_quiet_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    assert stack_env(StackConfig(api_port=8000, ddb_port=8001))["LOG_LEVEL"] == "WARNING"
    monkeypatch.setenv("LOG_LEVEL", "INFO")
    assert stack_env(StackConfig(api_port=8000, ddb_port=8001))["LOG_LEVEL"] == "INFO"

"""Fixtures of the withdrawal and payout tests: generous withdrawal rules, the transfer twin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.entities import Principal, Role
from chalicelib.services import withdrawals
from tests.stack import OPEN_RULES, Stack


@pytest.fixture
def finance(stack: Stack) -> Principal:
    return stack.principal("finance", Role.FINANCE)


@pytest.fixture
def rules(stack: Stack, finance: Principal) -> Iterator[dict[str, Any]]:
    """Generous rules for the test; restored afterwards (the tenant is shared by the session)."""
    withdrawals.set_rules(finance, OPEN_RULES)
    yield OPEN_RULES
    withdrawals.set_rules(finance, OPEN_RULES)


@pytest.fixture
def sandbox(stack: Stack) -> Iterator[Any]:
    from chalicelib.wechat import get_transfer
    from chalicelib.wechat.transfer.sandbox import SandboxTransfer

    provider = get_transfer(stack.tenant)
    assert isinstance(provider, SandboxTransfer), "the tests run against the sandbox twin"
    provider.clear_faults()
    yield provider
    provider.clear_faults()

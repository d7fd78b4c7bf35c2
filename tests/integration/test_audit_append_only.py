"""Audit records are never overwritten: every write is conditional on the record not existing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent
from chalicelib.store import audit
from tests.stack import Stack, unique

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_write_of_the_same_record_is_refused_and_the_first_is_kept(stack: Stack) -> None:
    entity = f"test:{unique('audit')}"
    when = utcnow()
    first = audit.build(stack.tenant, AuditEvent(entity, "test.done", "test", {"n": 1}), when, None, record_id="x")
    forged = audit.build(stack.tenant, AuditEvent(entity, "test.done", "test", {"n": 2}), when, None, record_id="x")
    assert first.sk == forged.sk and first.hash != forged.hash
    assert audit.put_once(first)
    assert not audit.put_once(forged)
    [kept] = list(audit.for_entity(stack.tenant, entity))
    assert kept.hash == first.hash and kept.data == '{"n":1}'


def test_every_audit_write_in_the_store_is_conditional_on_the_record_not_existing() -> None:
    writes = []
    for path in sorted((ROOT / "chalicelib" / "store").glob("*.py")):
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if re.search(r"\b(tx\.save|\.save)\((record|rec)\b", line) or "record.save(" in line:
                writes.append((path.name, number, line))
    assert writes, "no audit writes found: the pattern is stale"
    for name, number, line in writes:
        assert "AuditModel.pk.does_not_exist()" in line, f"{name}:{number} writes an audit record unconditionally"

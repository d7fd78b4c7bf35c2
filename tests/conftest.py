"""Shared pytest configuration: a marker per test directory, the DynamoDB Local fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.ddb_fixture", "tests.stack"]

_MARKERS = {"unit", "integration", "e2e", "browser"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = set(Path(str(item.fspath)).parts)
        for marker in _MARKERS & parts:
            item.add_marker(getattr(pytest.mark, marker))

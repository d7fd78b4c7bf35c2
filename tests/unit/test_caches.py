"""One cache registry (issue 11 §3): every cache of the environment registers itself, and
`caches.clear_all()` (what tests/stack.py's reset calls) empties them all."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections import OrderedDict
from typing import Any

import pytest

import chalicelib
from chalicelib import caches

# Memoized once per process and never stale: files packaged with the app, pure functions of their
# arguments, clients keyed by their whole configuration.
NOT_ENVIRONMENT = {
    "chalicelib.api.console.console_page",
    "chalicelib.api.console._echarts",
    "chalicelib.api.openapi.document_json",
    "chalicelib.api.openapi._docs_headers",
    "chalicelib.api.openapi._redoc_bundle",
    "chalicelib.auth.dummy_hash",
    "chalicelib.wechat.pay.protocol.rsa_private_key",
    "chalicelib.wechat.pay.protocol.public_pem",
    "chalicelib.store.export_files._files",
}
# Not registered yet: the lead is editing the module (issue 11 §3).
LEFTOVERS: set[str] = set()


def _module_caches() -> dict[str, Any]:
    """Every memoized function and module-level mutable mapping in the package, by dotted name."""
    found: dict[str, Any] = {}
    for info in pkgutil.walk_packages(chalicelib.__path__, "chalicelib."):
        if info.name == "chalicelib.caches":
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            memoized = isinstance(value, functools._lru_cache_wrapper) and value.__module__ == info.name
            mapping = isinstance(value, dict | OrderedDict) and not name.isupper() and not name.startswith("__")
            if memoized or mapping:
                found[f"{info.name}.{name}"] = value
    return found


def test_every_cache_of_the_environment_is_registered_under_its_name() -> None:
    found = _module_caches()  # imports every module first: each registers its caches on import
    registered = caches.registered()
    missing = [
        name
        for name, value in found.items()
        if name not in NOT_ENVIRONMENT | LEFTOVERS and registered.get(name) is not value
    ]
    assert missing == [], "register these with chalicelib.caches (cached / register)"


def test_clear_all_empties_every_registered_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caches, "_functions", dict(caches._functions))  # the test's function goes after
    monkeypatch.setattr(caches, "_mappings", dict(caches._mappings))
    calls: list[int] = []

    @caches.cached(maxsize=4)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    mapping = caches.register("tests.unit.test_caches.mapping", {"k": 1})
    _module_caches()
    for name, cache in caches.registered().items():
        if isinstance(cache, dict):
            cache[("sentinel", name)] = object()
    assert square(3) == square(3) == 9
    assert calls == [3]

    caches.clear_all()

    assert mapping == {}
    assert square(3) == 9
    assert calls == [3, 3]  # computed again: the memo was emptied
    filled = {
        name
        for name, cache in caches.registered().items()
        if (len(cache) if isinstance(cache, dict) else cache.cache_info().currsize)  # type: ignore[attr-defined]
    }
    assert filled == {"tests.unit.test_caches.test_clear_all_empties_every_registered_cache.<locals>.square"}


def test_the_test_stack_resets_every_registered_cache() -> None:
    from tests.stack import reset_caches

    registered = caches.registered()
    for name in ("chalicelib.services.plans._cache", "chalicelib.services.referrals._ancestry_cache"):
        registered[name][("sentinel",)] = object()  # type: ignore[index]

    reset_caches()

    assert registered["chalicelib.services.plans._cache"] == {}
    assert registered["chalicelib.services.referrals._ancestry_cache"] == {}

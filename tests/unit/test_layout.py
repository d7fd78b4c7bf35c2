"""Names and homes (issue 11 §1): pure rules raise domain-named errors, the HTTP names are the same
classes with the same status and code, and services import rule modules without aliases."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from chalicelib import errors

ROOT = Path(__file__).resolve().parents[2]
PURE = ("referral", "commission", "settlement", "withdrawal", "ledger", "orders", "catalog", "counters", "operators")
DOMAIN = {
    "DomainError",
    "InvalidInput",
    "NotAuthenticated",
    "NotAllowed",
    "Missing",
    "StateConflict",
    "Ended",
    "TooLarge",
    "Throttled",
    "NotConfigured",
    "UpstreamError",
}
HTTP_NAMES = {
    "BadRequest": ("InvalidInput", 400, "bad_request"),
    "Unauthorized": ("NotAuthenticated", 401, "unauthorized"),
    "Forbidden": ("NotAllowed", 403, "forbidden"),
    "NotFound": ("Missing", 404, "not_found"),
    "Conflict": ("StateConflict", 409, "conflict"),
    "Gone": ("Ended", 410, "gone"),
    "PayloadTooLarge": ("TooLarge", 413, "body_too_large"),
    "TooManyRequests": ("Throttled", 429, "rate_limited"),
    "Unavailable": ("NotConfigured", 503, "unavailable"),
}


def _imports(path: Path) -> list[ast.ImportFrom]:
    return [n for n in ast.walk(ast.parse(path.read_text("utf-8"))) if isinstance(n, ast.ImportFrom)]


@pytest.mark.parametrize("module", PURE)
def test_pure_rules_raise_domain_named_errors(module: str) -> None:
    named = {
        alias.name
        for node in _imports(ROOT / "chalicelib" / f"{module}.py")
        if node.module == "chalicelib.errors"
        for alias in node.names
    }
    assert named <= DOMAIN, f"chalicelib/{module}.py imports HTTP-named errors {sorted(named - DOMAIN)}"


@pytest.mark.parametrize(("old", "expected"), HTTP_NAMES.items())
def test_http_names_are_the_domain_classes_with_the_same_status_and_code(
    old: str, expected: tuple[str, int, str]
) -> None:
    name, status, code = expected
    cls = getattr(errors, name)
    assert getattr(errors, old) is cls
    assert (cls.status, cls.code) == (status, code)


def test_services_import_rule_modules_without_an_alias() -> None:
    modules = {p.stem for p in (ROOT / "chalicelib").glob("*.py")}
    aliased = [
        f"{path.name}: {node.module}.{alias.name} as {alias.asname}"
        for path in sorted((ROOT / "chalicelib" / "services").glob("*.py"))
        for node in _imports(path)
        if node.module == "chalicelib"
        for alias in node.names
        if alias.name in modules and alias.asname
    ]
    assert aliased == []


# --- one home for retry (issue 11 §3) ------------------------------------------------------------

# Modules whose retry loops are not on chalicelib.retry yet: the lead is editing them (issue 11 §3).
RETRY_LEFTOVERS = {"store/ledger.py"}


def _package_modules() -> list[Path]:
    return sorted((ROOT / "chalicelib").rglob("*.py"))


def _calls(tree: ast.AST, dotted: str) -> list[int]:
    owner, name = dotted.rsplit(".", 1)
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == name
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == owner
    ]


def test_only_the_retry_helper_waits_between_attempts() -> None:
    sleeping = [
        f"{path.relative_to(ROOT / 'chalicelib')}:{line}"
        for path in _package_modules()
        if path.relative_to(ROOT / "chalicelib").as_posix() not in {"retry.py", *RETRY_LEFTOVERS}
        for line in _calls(ast.parse(path.read_text("utf-8")), "time.sleep")
    ]
    assert sleeping == [], "wait through chalicelib.retry (a named Retry policy's pause), not time.sleep"


def test_no_module_keeps_a_private_backoff() -> None:
    private = [
        f"{path.relative_to(ROOT / 'chalicelib')}: {node.name}"
        for path in _package_modules()
        for node in ast.walk(ast.parse(path.read_text("utf-8")))
        if isinstance(node, ast.FunctionDef) and "backoff" in node.name.lower()
    ]
    assert private == []

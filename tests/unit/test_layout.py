"""Names and homes (issue 11 §1): pure rules raise domain-named errors, the HTTP names are the same
classes with the same status and code, and services import rule modules without aliases."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

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
def test_errors_have_domain_names_mapped_to_http_in_one_place(old: str, expected: tuple[str, int, str]) -> None:
    """The HTTP status lives on the domain error (mapped to a response by `api.http.handled` only);
    the HTTP names the code used before are gone, so nothing can raise `BadRequest` again."""
    name, status, code = expected
    cls = getattr(errors, name)
    assert (cls.status, cls.code) == (status, code)
    assert not hasattr(errors, old)


def test_no_module_names_an_error_by_its_http_status() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}"
        for folder in ("chalicelib", "tests", "devtools", "bench", "infra")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for node in _imports(path)
        if node.module == "chalicelib.errors"
        for alias in node.names
        if alias.name in HTTP_NAMES
    ]
    assert found == []


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
RETRY_LEFTOVERS: set[str] = set()


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


# --- every route maps domain errors (issue 11 §3) ------------------------------------------------

# Routes that serve what ships with the app: nothing they call raises a DomainError.
STATIC_ROUTES = {
    ("GET", "/v1/health"),
    ("GET", "/admin"),
    ("GET", "/admin/echarts.min.js"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/redoc.standalone.js"),
}


def _unhandled(chalice_app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route whose view is not wrapped by `@handled` (directly)."""
    from chalicelib.api.http import handled

    wrapper_code = handled(lambda: None).__code__  # every handled view runs this code object
    return {
        (method, path)
        for path, methods in chalice_app.routes.items()
        for method, entry in methods.items()
        if getattr(entry.view_function, "__code__", None) is not wrapper_code
    }


def test_every_route_maps_domain_errors_to_their_response() -> None:
    from app import app

    assert _unhandled(app) == STATIC_ROUTES, "add @handled under @bp.route (or @app.route)"


def test_a_route_without_handled_is_caught() -> None:
    from chalice.app import Blueprint, Chalice

    from chalicelib.api.http import handled

    toy, bp = Chalice(app_name="toy"), Blueprint(__name__)

    @bp.route("/wrapped", methods=["GET"])
    @handled
    def wrapped() -> dict[str, str]:
        return {}

    @bp.route("/bare", methods=["POST"])
    def bare() -> dict[str, str]:
        return {}

    @handled  # in the wrong order: the route holds the bare view
    @bp.route("/upside-down", methods=["GET"])
    def upside_down() -> dict[str, str]:
        return {}

    toy.register_blueprint(bp)
    assert _unhandled(toy) == {("POST", "/bare"), ("GET", "/upside-down")}


# --- function-local imports protect cold start, and say so (issue 11 §2) ---------------------------

# Modules others are editing now; their function-local imports are listed in the note.
LOCAL_IMPORT_LEFTOVERS: set[str] = set()


def _unexplained_local_imports(source: str) -> list[int]:
    """Lines of function-local imports with no `cold start` comment: on the line, on the comment
    lines right above it, or on the import right above it (a group of imports shares one comment)."""
    lines = source.splitlines()
    local: dict[int, int] = {}  # first line -> last line
    for function in ast.walk(ast.parse(source)):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    local[node.lineno] = node.end_lineno or node.lineno
    explained_ends: set[int] = set()
    unexplained: list[int] = []
    for first, last in sorted(local.items()):
        above = first - 1
        comments = []
        while above >= 1 and lines[above - 1].strip().startswith("#"):
            comments.append(lines[above - 1])
            above -= 1
        said = any("cold start" in line for line in [*lines[first - 1 : last], *comments])
        if said or (not comments and first - 1 in explained_ends):
            explained_ends.add(last)
        else:
            unexplained.append(first)
    return unexplained


def test_function_local_imports_say_they_protect_cold_start() -> None:
    unexplained = [
        f"{path.relative_to(ROOT / 'chalicelib')}:{line}"
        for path in _package_modules()
        if path.relative_to(ROOT / "chalicelib").as_posix() not in LOCAL_IMPORT_LEFTOVERS
        for line in _unexplained_local_imports(path.read_text("utf-8"))
    ]
    assert unexplained == [], "import at the top, or say what the import keeps out of the cold start"


def test_an_unexplained_local_import_is_caught() -> None:
    source = """
def explained():
    # function-local: cold start (PynamoDB)
    from chalicelib.store import audit
    from chalicelib.store import stats

    import jwt  # heavy: not at cold start


def dodging_a_cycle():
    from chalicelib.services import tenants


def after_a_statement():
    # function-local: cold start (PynamoDB)
    from chalicelib.store import audit

    x = 1
    from chalicelib.store import stats
"""
    assert _unexplained_local_imports(source) == [11, 19]

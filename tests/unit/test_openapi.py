"""The API contract: every route documented, every error code in the table, the document valid."""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from chalice.test import Client
from schemathesis.core.result import Ok

from app import app
from chalicelib.api import openapi
from chalicelib.api.errorcodes import ERROR_CODES, markdown

ROOT = Path(__file__).resolve().parents[2]

# Codes built at run time, by (file, expression): what each expression can evaluate to. A new
# dynamic code expression fails `test_every_code_raised_is_in_the_table` until it is listed here.
DYNAMIC_CODES = {
    ("http.py", "f'invalid_{name}'"): {"invalid_limit", "invalid_depth", "invalid_version", "invalid_amount_fen"},
    ("orders.py", "f'cannot_{transition}'"): {"cannot_receive", "cannot_cancel"},
    ("payouts.py", "MISMATCH"): {"transfer_mismatch"},
    ("merchant.py", "refusal"): {"not_payable", "cannot_receive", "busy"},
    ("merchant.py", "refusal.code"): {"bad_signature", "stale_request"},
    ("referrals.py", "code"): {"self_binding", "cycle", "same_parent", "tree_too_deep", "rejected"},
    ("errors.py", "code"): set(),  # DomainError passing its own argument on
}
# `code=` keywords that name share codes, not errors.
NOT_ERRORS = {("shares.py", "new_code()"), ("shares.py", "item.code"), ("shares.py", "share.code")}
CLASS_DEFAULTS = re.compile(r'^\s+code(?::\s*str)?\s*=\s*"([a-z_]+)"', re.MULTILINE)


def _raised_codes() -> tuple[set[str], set[tuple[str, str]]]:
    """Every `code="..."` keyword in chalicelib, and the non-literal ones as (file, expression)."""
    literal: set[str] = set()
    dynamic: set[tuple[str, str]] = set()
    for path in (ROOT / "chalicelib").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        literal |= set(CLASS_DEFAULTS.findall(source))
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg != "code":
                    continue
                if isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, str):
                    literal.add(keyword.value.value)
                else:
                    dynamic.add((path.name, ast.unparse(keyword.value)))
    return literal, dynamic


def _app_routes() -> set[tuple[str, str]]:
    return {(method, path) for path, methods in app.routes.items() for method in methods}


def test_every_route_of_the_app_is_documented() -> None:
    documented = set(openapi.routes())
    assert _app_routes() - documented == set(), "routes missing from chalicelib/api/openapi.py ROUTES"
    assert documented - _app_routes() == set(), "ROUTES lists routes the app no longer has"
    paths = openapi.build_document()["paths"]
    assert {(m.upper(), p) for p, ops in paths.items() for m in ops} == _app_routes()


def test_a_route_added_to_the_app_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a route the table does not list
    extra = {**app.routes, "/v1/undocumented": {"GET": object()}}
    monkeypatch.setattr(app, "routes", extra)
    # Then the documentation check sees it
    assert ("GET", "/v1/undocumented") in _app_routes() - set(openapi.routes())


def test_every_code_raised_is_in_the_table() -> None:
    literal, dynamic = _raised_codes()
    unknown = dynamic - NOT_ERRORS - set(DYNAMIC_CODES)
    assert unknown == set(), "a code built at run time: list what it can be in DYNAMIC_CODES"
    expanded = set().union(*DYNAMIC_CODES.values()) - {"rejected"}  # referral's fallback never happens
    missing = sorted((literal | expanded) - set(ERROR_CODES))
    assert missing == [], "add these codes to chalicelib/api/errorcodes.py"


def test_every_code_a_route_lists_is_in_the_table() -> None:
    for (method, path), route in openapi.routes().items():
        unknown = set(openapi.route_errors(route)) - set(ERROR_CODES)
        assert unknown == set(), f"{method} {path} lists unknown codes"


def test_every_code_in_the_table_is_answered_somewhere() -> None:
    listed = {code for route in openapi.routes().values() for code in openapi.route_errors(route)}
    generic = {"bad_request", "unauthorized", "conflict", "gone", "upstream_error"}  # classes' defaults
    not_http = {code for code, entry in ERROR_CODES.items() if entry.source in {"cli", "worker"}}
    unused = sorted(set(ERROR_CODES) - listed - generic - not_http)
    assert unused == [], "codes in the table that no route lists"


def test_the_markdown_table_is_printed_from_the_code() -> None:
    assert (ROOT / "docs" / "error-codes.md").read_text(encoding="utf-8") == markdown(), (
        "run: python -m chalicelib.api.errorcodes > docs/error-codes.md"
    )


def test_request_schemas_are_the_models_the_routes_parse() -> None:
    for (method, path), route in openapi.routes().items():
        entry = app.routes[path][method]
        view = inspect.unwrap(entry.view_function)
        source = inspect.getsource(view)
        parsed = re.findall(r"parse_body\([^,]+,\s*(\w+)\)", source)
        if parsed:
            model = view.__globals__[parsed[0]]
            assert route.body is model, f"{method} {path} parses {model.__name__}"
        elif "parse_object(" in source:
            assert route.body is not None, f"{method} {path} reads a body: document it"


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi.build_document()
    assert document["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(document)
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), [result for result in results if not isinstance(result, Ok)]
    assert len(operations) == len(openapi.routes())
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(document)))
    assert refs <= set(document["components"]["schemas"]), "dangling $ref"


def test_operations_carry_security_and_error_codes() -> None:
    paths = openapi.build_document()["paths"]
    refund = paths["/v1/admin/orders/{order_id}/refunds"]["post"]
    assert refund["security"] == [{"operator": ["owner", "finance"]}]
    assert {"not_refundable", "token_revoked", "forbidden", "invalid_body"} <= set(refund["x-error-codes"])
    assert refund["responses"]["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    merchant = paths["/v1/merchant/order-events"]["post"]
    assert set(merchant["security"][0]) == {"merchantId", "merchantTimestamp", "merchantNonce", "merchantSignature"}
    assert paths["/v1/me"]["get"]["security"] == [{"user": []}]
    assert paths["/v1/health"]["get"]["security"] == []
    assert paths["/v1/me/team"]["get"]["parameters"][0]["name"] == "level"


@pytest.fixture
def _no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")


def _get(path: str) -> Any:
    with Client(app) as client:
        return client.http.get(path)


@pytest.mark.usefixtures("_no_tracing")
def test_the_document_and_the_reference_page_are_served() -> None:
    response = _get("/v1/openapi.json")
    assert response.status_code == 200
    assert json.loads(response.body)["paths"]["/v1/orders"]["post"]["requestBody"]
    page = _get("/docs")
    assert page.status_code == 200
    html = page.body.decode()
    assert '<script src="/docs/redoc.standalone.js">' in html
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    bundle = _get("/docs/redoc.standalone.js")
    assert bundle.status_code == 200
    assert len(bundle.body) > 500_000
    assert bundle.headers["Content-Type"].startswith("application/javascript")


def test_the_document_is_built_on_first_request_not_at_import() -> None:
    code = "import app; from chalicelib.api import openapi; print(openapi.document_json.cache_info().currsize)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"

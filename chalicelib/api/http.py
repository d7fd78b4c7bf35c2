"""HTTP plumbing shared by the blueprints: errors, bodies, principals, pagination."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

from chalice.app import Request, Response
from pydantic import BaseModel, ValidationError

from chalicelib.auth import verify_token
from chalicelib.entities import Principal
from chalicelib.errors import DomainError, InvalidInput, Missing, NotAuthenticated, TooLarge
from chalicelib.observability import logger
from chalicelib.services import tenants
from chalicelib.settings import get_settings
from chalicelib.store import get_store

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

JSON_HEADERS: dict[str, str | list[str]] = {"Content-Type": "application/json"}
MAX_PAGE = 100


def error_response(exc: DomainError) -> Response:
    headers = dict(JSON_HEADERS)
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int):
        headers["Retry-After"] = str(retry_after)
    return Response(body=exc.body(), status_code=exc.status, headers=headers)


def source_ip(request: Request) -> str:
    """The caller's address as API Gateway saw it ('unknown' when it says nothing)."""
    identity = (request.context or {}).get("identity") or {}
    return str(identity.get("sourceIp") or "unknown")


def handled(view: F) -> F:
    """Map domain errors raised by a view to their 4xx response (one place for every route)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except DomainError as exc:
            logger.info("request refused", extra={"code": exc.code, "status": exc.status})
            return error_response(exc)

    return wrapper  # type: ignore[return-value]


MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 20


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (brackets inside strings do not count)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return 0  # cannot be deeper than the limit: skip the scan
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def parse_object(request: Request) -> dict[str, Any]:
    """The request's JSON body as an object: 413 over MAX_BODY_BYTES, 400 when it nests deeper
    than MAX_JSON_DEPTH (checked before parsing, which would exhaust the stack) or is not JSON."""
    body = request.raw_body or b"{}"
    raw = body.encode() if isinstance(body, str) else body
    if len(raw) > MAX_BODY_BYTES:
        raise TooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise InvalidInput(f"the body nests deeper than {MAX_JSON_DEPTH} levels", code="body_too_deep")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput("the body is not valid JSON", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object", code="invalid_body")
    return data


def parse_body(request: Request, model: type[M]) -> M:
    """The request's JSON body validated against `model`, or a 400 saying what is wrong."""
    data = parse_object(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
            for err in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise InvalidInput("the body has invalid fields", code="invalid_body", details=details) from exc


def principal_of(request: Request) -> Principal:
    """The verified caller; their tenant must exist and match the mini-program calling."""
    principal = verify_token(get_settings(), header(request, "authorization"))
    try:
        tenants.get(principal.tenant)
    except Missing as exc:
        raise NotAuthenticated("the token names an unknown mini-program", code="invalid_token") from exc
    claimed = _calling_appid(request)
    if claimed and claimed != principal.tenant:
        raise NotAuthenticated("the token belongs to another mini-program", code="tenant_mismatch")
    if principal.is_admin:
        _check_operator(principal)
    return principal


def _check_operator(principal: Principal) -> None:
    """An operator's token works only while the operator is as it was issued: not disabled, the
    same role, the same token version (read on every request, so a change takes effect at once)."""
    admin = get_store().admins.get(principal.tenant, principal.subject)
    if admin is None or admin.disabled or admin.role is not principal.role or admin.token_version != principal.version:
        raise NotAuthenticated("your access changed; log in again", code="token_revoked")


def header(request: Request, name: str) -> str | None:
    value = request.headers.get(name) if request.headers is not None else None
    return str(value) if value is not None else None


def _calling_appid(request: Request) -> str | None:
    """The appid a request says it comes from: `X-Appid`, or WeChat's servicewechat.com referer."""
    appid = header(request, "x-appid")
    if appid:
        return appid
    referer = header(request, "referer") or ""
    prefix = "https://servicewechat.com/"
    if referer.startswith(prefix):
        return referer[len(prefix) :].split("/", 1)[0] or None
    return None


def query(request: Request) -> dict[str, str]:
    return dict(request.query_params or {})


def int_param(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high], or a 400."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer", code=f"invalid_{name}") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}", code=f"invalid_{name}")
    return value


def page_limit(params: dict[str, str]) -> int:
    return int_param(params, "limit", 20, 1, MAX_PAGE)

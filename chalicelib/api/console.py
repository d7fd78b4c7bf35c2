"""The admin console: one static page (`chalicelib/web/admin.html`) that calls the admin API."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from chalice.app import Blueprint, Response

bp = Blueprint(__name__)

PAGE = Path(__file__).resolve().parent.parent / "web" / "admin.html"
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Page:
    html: str
    headers: dict[str, str | list[str]]


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


@functools.cache
def console_page() -> Page:
    """The page and its headers, read once per process.

    The page is self-contained, so its policy allows exactly its own inline script and style
    (by hash) and requests to this API only: a name a user typed cannot run as script here.
    """
    html = PAGE.read_text(encoding="utf-8")
    blocks = {kind: [_csp_hash(body) for k, body in _INLINE.findall(html) if k == kind] for kind in ("script", "style")}
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(blocks["script"]),
            "style-src " + " ".join(blocks["style"]),
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    headers: dict[str, str | list[str]] = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return Page(html=html, headers=headers)


@bp.route("/admin", methods=["GET"])
def admin_console() -> Response:
    page = console_page()
    return Response(body=page.html, status_code=200, headers=page.headers)

"""The admin console: one static page (`chalicelib/web/admin.html`) that calls the admin API,
and the chart library its dashboard draws with.

The charts are Apache ECharts, vendored from npm (`echarts@6.1.0`, `dist/echarts.min.js`, with its
LICENSE and NOTICE beside it) and served by this app at `/admin/echarts.min.js`: no CDN. The page
loads it with a subresource-integrity hash, so a changed file is refused by the browser; replacing
the version means replacing the file, its hash in the page and `ECHARTS_SHA256` below together.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from chalice.app import Blueprint, Response

bp = Blueprint(__name__)

WEB = Path(__file__).resolve().parent.parent / "web"
PAGE = WEB / "admin.html"
ECHARTS = WEB / "echarts.min.js"
ECHARTS_VERSION = "6.1.0"
ECHARTS_SHA256 = "b66b25aeb4df84e33199dc21694014d336d222cbd9deb0e5a7c14bd6aa0d0fd0"  # the npm release's file
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Page:
    html: str
    headers: dict[str, str | list[str]]


def csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


@functools.cache
def console_page() -> Page:
    """The page and its headers, read once per process.

    The page's policy allows exactly its own inline script and style (by hash), scripts from this
    origin (the vendored chart library, pinned by its integrity hash in the page) and requests to
    this API only: a name a user typed cannot run as script here.
    """
    html = PAGE.read_text(encoding="utf-8")
    blocks = {kind: [csp_hash(body) for k, body in _INLINE.findall(html) if k == kind] for kind in ("script", "style")}
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self' " + " ".join(blocks["script"]),
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


@functools.cache
def _echarts() -> str:
    return ECHARTS.read_text(encoding="utf-8")


def script_response(source: str) -> Response:
    """A vendored script served by the app (no CDN): cached a day, never sniffed as another type."""
    headers: dict[str, str | list[str]] = {
        "Content-Type": "application/javascript; charset=utf-8",
        "Cache-Control": "public, max-age=86400",
        "X-Content-Type-Options": "nosniff",
    }
    return Response(body=source, status_code=200, headers=headers)


@bp.route("/admin/echarts.min.js", methods=["GET"])
def echarts_bundle() -> Response:
    return script_response(_echarts())

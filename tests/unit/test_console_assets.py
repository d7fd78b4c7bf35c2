"""The console's vendored chart library: the pinned npm file, served by the app, allowed by the
page's policy and pinned in the page by its integrity hash (no CDN)."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest
from chalice.test import Client

from app import app
from chalicelib.api import console


@pytest.fixture(autouse=True)
def _no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")


def _get(path: str) -> Any:
    with Client(app) as client:
        return client.http.get(path)


def test_the_vendored_file_is_the_pinned_release() -> None:
    body = console.ECHARTS.read_bytes()
    assert hashlib.sha256(body).hexdigest() == console.ECHARTS_SHA256
    assert f't.version="{console.ECHARTS_VERSION}"' in body.decode()
    assert "Apache License" in (console.WEB / "echarts.LICENSE").read_text()
    assert "Apache ECharts" in (console.WEB / "echarts.NOTICE").read_text()


def test_the_page_loads_it_from_this_app_with_its_integrity_hash() -> None:
    html = console.PAGE.read_text(encoding="utf-8")
    tags = re.findall(r"<script src=\"([^\"]+)\" integrity=\"([^\"]+)\"></script>", html)
    digest = "sha384-" + base64.b64encode(hashlib.sha384(console.ECHARTS.read_bytes()).digest()).decode()
    assert tags == [("admin/echarts.min.js", digest)]  # relative: works under a stage prefix too
    assert "http://" not in html and "https://" not in html  # nothing from a CDN


def test_the_bundle_is_served_and_the_policy_allows_only_this_origins_scripts() -> None:
    bundle = _get("/admin/echarts.min.js")
    assert bundle.status_code == 200
    assert bundle.headers["Content-Type"].startswith("application/javascript")
    assert bundle.headers["X-Content-Type-Options"] == "nosniff"
    assert hashlib.sha256(bundle.body).hexdigest() == console.ECHARTS_SHA256

    policy = dict(part.split(" ", 1) for part in _get("/admin").headers["Content-Security-Policy"].split("; "))
    sources = policy["script-src"].split()
    assert sources[0] == "'self'"
    assert all(s.startswith("'sha256-") for s in sources[1:])  # no 'unsafe-inline', no other hosts
    assert policy["style-src"].split() and "'unsafe-inline'" not in policy["style-src"]

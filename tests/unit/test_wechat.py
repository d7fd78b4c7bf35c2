"""WeChat clients against simulated responses: the live client one setting away from the twin."""

from __future__ import annotations

import json

import pytest
import responses
from responses import matchers

from chalicelib.errors import InvalidInput, NotAllowed, NotAuthenticated, Throttled, UpstreamError
from chalicelib.settings import Settings
from chalicelib.wechat.miniprogram import API_BASE, LiveMiniProgram, SandboxMiniProgram, check_scene

APPID = "wx0123456789abcdef"
PNG = b"\x89PNG\r\n\x1a\nfake"


@pytest.fixture
def live() -> LiveMiniProgram:
    return LiveMiniProgram({APPID: "s3cret"})


@responses.activate
def test_code2session_returns_the_openid(live: LiveMiniProgram) -> None:
    responses.get(
        f"{API_BASE}/sns/jscode2session",
        match=[
            matchers.query_param_matcher(
                {"appid": APPID, "secret": "s3cret", "js_code": "abc", "grant_type": "authorization_code"}
            )
        ],
        json={"openid": "o-1", "session_key": "k", "unionid": "u-1"},
    )
    session = live.code2session(APPID, "abc")
    assert (session.openid, session.unionid) == ("o-1", "u-1")


@pytest.mark.parametrize(
    ("errcode", "error", "status"),
    [(40029, NotAuthenticated, 401), (45011, Throttled, 429), (40226, NotAllowed, 403), (-1, UpstreamError, 502)],
)
@responses.activate
def test_code2session_errors_map_to_client_errors(
    live: LiveMiniProgram, errcode: int, error: type[Exception], status: int
) -> None:
    responses.get(f"{API_BASE}/sns/jscode2session", json={"errcode": errcode, "errmsg": "x"})
    with pytest.raises(error) as raised:
        live.code2session(APPID, "abc")
    assert raised.value.status == status  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "reply",
    [
        {"status": 500, "body": "oops"},
        {"status": 200, "body": "<html>not json</html>"},
        {"status": 200, "body": "[1]"},
        {"status": 200, "body": json.dumps({"session_key": "no openid"})},
    ],
)
@responses.activate
def test_code2session_unusable_answers_are_upstream_errors(live: LiveMiniProgram, reply: dict[str, object]) -> None:
    responses.get(f"{API_BASE}/sns/jscode2session", **reply)
    with pytest.raises(UpstreamError):
        live.code2session(APPID, "abc")


def test_unknown_appid_has_no_secret(live: LiveMiniProgram) -> None:
    with pytest.raises(UpstreamError) as raised:
        live.code2session("wxother", "abc")
    assert raised.value.code == "tenant_not_configured"


@responses.activate
def test_wxacode_fetches_a_token_once_and_returns_the_png(live: LiveMiniProgram) -> None:
    token = responses.post(f"{API_BASE}/cgi-bin/stable_token", json={"access_token": "T", "expires_in": 7200})
    code = responses.post(
        f"{API_BASE}/wxa/getwxacodeunlimit",
        match=[
            matchers.query_param_matcher({"access_token": "T"}),
            matchers.json_params_matcher(
                {"scene": "ABCD2345", "page": "pages/index/index", "check_path": False, "env_version": "release"}
            ),
        ],
        body=PNG,
        content_type="image/png",
    )
    assert live.wxacode(APPID, "ABCD2345", "pages/index/index") == PNG
    assert live.wxacode(APPID, "ABCD2345", "pages/index/index") == PNG
    assert token.call_count == 1
    assert code.call_count == 2


@responses.activate
def test_wxacode_json_error_is_reported(live: LiveMiniProgram) -> None:
    responses.post(f"{API_BASE}/cgi-bin/stable_token", json={"access_token": "T", "expires_in": 7200})
    responses.post(f"{API_BASE}/wxa/getwxacodeunlimit", json={"errcode": 41030, "errmsg": "invalid page"})
    with pytest.raises(InvalidInput) as raised:
        live.wxacode(APPID, "ABCD2345", "pages/nope")
    assert raised.value.code == "invalid_page"


@responses.activate
def test_wxacode_neither_image_nor_error(live: LiveMiniProgram) -> None:
    responses.post(f"{API_BASE}/cgi-bin/stable_token", json={"access_token": "T", "expires_in": 7200})
    responses.post(f"{API_BASE}/wxa/getwxacodeunlimit", json={"hello": "world"})
    with pytest.raises(UpstreamError):
        live.wxacode(APPID, "ABCD2345", "pages/index/index")


@pytest.mark.parametrize("scene", ["", "x" * 33, "中文", "a\nb"])
def test_scene_must_be_1_to_32_visible_ascii(scene: str) -> None:
    with pytest.raises(InvalidInput):
        check_scene(scene)


def test_sandbox_logs_in_dev_names_and_plays_errors() -> None:
    sandbox = SandboxMiniProgram("http://127.0.0.1:8000")
    assert sandbox.code2session(APPID, "dev-alice") == sandbox.code2session(APPID, "dev-alice")
    assert sandbox.code2session(APPID, "dev-alice") != sandbox.code2session(APPID, "dev-bob")
    assert sandbox.code2session(APPID, "dev-alice") != sandbox.code2session("wxother", "dev-alice")
    with pytest.raises(NotAuthenticated):
        sandbox.code2session(APPID, "dev-")
    with pytest.raises(Throttled):
        sandbox.code2session(APPID, "err-45011")
    assert sandbox.wxacode(APPID, "ABCD2345", "pages/index/index").startswith(b"\x89PNG")


def test_one_setting_switches_to_the_live_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib import wechat
    from chalicelib.settings import get_settings

    base = {"TABLE_PREFIX": "unit", "JWT_SECRET": "x" * 32, "WECHAT_MODE": "sandbox"}
    for mode, kind in (("sandbox", SandboxMiniProgram), ("live", LiveMiniProgram)):
        monkeypatch.setattr("os.environ", {**base, "WECHAT_MODE": mode, "WECHAT_APP_SECRETS": json.dumps({APPID: "s"})})
        get_settings.cache_clear()
        wechat.get_miniprogram.cache_clear()
        assert isinstance(wechat.get_miniprogram(), kind)
    get_settings.cache_clear()
    wechat.get_miniprogram.cache_clear()


def test_settings_fail_loudly_without_required_values() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Settings.from_env({})
    required = {"TABLE_PREFIX": "abc", "JWT_SECRET": "y" * 32, "AWS_DEFAULT_REGION": "cn-north-1"}
    # WECHAT_MODE has no default: a stage without it must not silently run the sandbox twins
    with pytest.raises(ValidationError, match="wechat_mode"):
        Settings.from_env(required)
    with pytest.raises(ValidationError):
        Settings.from_env({**required, "WECHAT_MODE": "sandbox-ish"})
    settings = Settings.from_env({**required, "WECHAT_MODE": "sandbox"})
    assert settings.aws_region == "cn-north-1"
    assert settings.sandbox
    assert not Settings.from_env({**required, "WECHAT_MODE": "live"}).sandbox

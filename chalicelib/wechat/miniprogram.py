"""Mini-program server APIs: code2Session and getwxacodeunlimit, live and sandbox twins.

The live clients speak WeChat's HTTPS API with `requests`; the sandbox twins play WeChat
locally and in tests. `settings.wechat_mode` picks one (`get_miniprogram()`).
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.errors import DomainError, InvalidInput, NotAllowed, NotAuthenticated, Throttled, UpstreamError

API_BASE = "https://api.weixin.qq.com"
SCENE_MAX = 32
HTTP_TIMEOUT = (3.05, 10)


@dataclass(frozen=True, slots=True)
class Session:
    openid: str
    unionid: str | None = None


class MiniProgram(Protocol):
    """What the app needs from WeChat's mini-program server API."""

    def code2session(self, appid: str, code: str) -> Session: ...

    def wxacode(self, appid: str, scene: str, page: str) -> bytes: ...


def wechat_error(errcode: int, errmsg: str) -> DomainError:
    """A WeChat errcode as the domain error a client sees."""
    mapping: dict[int, DomainError] = {
        40029: NotAuthenticated("the login code is invalid or expired", code="invalid_code"),
        40163: NotAuthenticated("the login code was already used", code="invalid_code"),
        45011: Throttled("too many login attempts, try again in a minute", code="rate_limited", retry_after=60),
        40226: NotAllowed("WeChat flagged this account as risky", code="risky_user"),
        41030: InvalidInput("the mini-program page does not exist", code="invalid_page"),
    }
    return mapping.get(errcode, UpstreamError(f"WeChat error {errcode}: {errmsg}", code="wechat_error"))


def check_scene(scene: str) -> None:
    if not scene or len(scene) > SCENE_MAX or not scene.isascii() or not scene.isprintable():
        raise InvalidInput("scene must be 1-32 visible ASCII characters", code="invalid_scene")


class LiveMiniProgram:
    """The real WeChat API (needs each tenant's app secret)."""

    def __init__(
        self, secrets: dict[str, str], http: Any = None, base_url: str = API_BASE, env_version: str = "release"
    ) -> None:
        if http is None:
            import requests  # function-local: requests stays out of the Lambda's cold start

            http = requests.Session()
        self._secrets = secrets
        self._http = http
        self._base = base_url
        self._env_version = env_version
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _secret(self, appid: str) -> str:
        try:
            return self._secrets[appid]
        except KeyError:
            raise UpstreamError(f"no app secret configured for {appid}", code="tenant_not_configured") from None

    def _json(self, response: Any) -> dict[str, Any]:
        if response.status_code >= 500:
            raise UpstreamError(f"WeChat answered HTTP {response.status_code}", code="wechat_unavailable")
        try:
            data = response.json()
        except ValueError as exc:
            raise UpstreamError("WeChat answered with something that is not JSON", code="wechat_error") from exc
        if not isinstance(data, dict):
            raise UpstreamError("WeChat answered with something unexpected", code="wechat_error")
        if data.get("errcode"):
            raise wechat_error(int(data["errcode"]), str(data.get("errmsg", "")))
        return data

    def code2session(self, appid: str, code: str) -> Session:
        params = {
            "appid": appid,
            "secret": self._secret(appid),
            "js_code": code,
            "grant_type": "authorization_code",
        }
        data = self._json(self._http.get(f"{self._base}/sns/jscode2session", params=params, timeout=HTTP_TIMEOUT))
        openid = data.get("openid")
        if not isinstance(openid, str) or not openid:
            raise UpstreamError("WeChat returned no openid", code="wechat_error")
        return Session(openid=openid, unionid=data.get("unionid"))

    def access_token(self, appid: str) -> str:
        """A stable access token, cached until five minutes before it expires."""
        with self._lock:
            cached = self._tokens.get(appid)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            body = {"grant_type": "client_credential", "appid": appid, "secret": self._secret(appid)}
            data = self._json(self._http.post(f"{self._base}/cgi-bin/stable_token", json=body, timeout=HTTP_TIMEOUT))
            token = str(data["access_token"])
            self._tokens[appid] = (token, time.monotonic() + max(int(data.get("expires_in", 7200)) - 300, 60))
            return token

    def wxacode(self, appid: str, scene: str, page: str) -> bytes:
        check_scene(scene)
        body = {"scene": scene, "page": page, "check_path": False, "env_version": self._env_version}
        response = self._http.post(
            f"{self._base}/wxa/getwxacodeunlimit",
            params={"access_token": self.access_token(appid)},
            json=body,
            timeout=HTTP_TIMEOUT,
        )
        if response.headers.get("Content-Type", "").startswith("image/"):
            return bytes(response.content)
        self._json(response)
        raise UpstreamError("WeChat returned neither an image nor an error", code="wechat_error")


class SandboxMiniProgram:
    """A local twin of WeChat: `dev-<name>` logs in user `<name>`; `err-<errcode>` fails like WeChat."""

    def __init__(self, public_base_url: str) -> None:
        self._base = public_base_url.rstrip("/")

    def code2session(self, appid: str, code: str) -> Session:
        if code.startswith("err-") and code[4:].isdigit():
            raise wechat_error(int(code[4:]), "sandbox error")
        if not code.startswith("dev-") or len(code) <= 4:
            raise wechat_error(40029, "invalid code (sandbox codes look like dev-<name>)")
        name = code[4:]
        digest = hashlib.sha256(f"{appid}:{name}".encode()).hexdigest()[:24]
        return Session(openid=f"sbx-{digest}")

    def wxacode(self, appid: str, scene: str, page: str) -> bytes:
        import segno  # function-local: only the sandbox draws codes; kept out of the Lambda's cold start

        check_scene(scene)
        qr = segno.make(f"{self._base}/mp/{page}?scene={scene}", error="m")
        out = io.BytesIO()
        qr.save(out, kind="png", scale=8, border=2)
        return out.getvalue()

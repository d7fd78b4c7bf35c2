"""WeChat clients: the real ones and their sandbox twins, picked by `settings.wechat_mode`."""

from __future__ import annotations

from functools import lru_cache

from chalicelib.settings import get_settings
from chalicelib.wechat.miniprogram import LiveMiniProgram, MiniProgram, SandboxMiniProgram


@lru_cache(maxsize=1)
def get_miniprogram() -> MiniProgram:
    settings = get_settings()
    if settings.sandbox:
        return SandboxMiniProgram(settings.public_base_url)
    secrets = {appid: secret.get_secret_value() for appid, secret in settings.wechat_app_secrets.items()}
    return LiveMiniProgram(secrets)

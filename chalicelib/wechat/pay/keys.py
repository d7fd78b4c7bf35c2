"""The sandbox's merchant: key pairs and an APIv3 key of its own, made on first use and kept on
disk (`load_or_create_sandbox_keys`), and the merchant configuration built from them
(`sandbox_config`). The WeChat-side private key, which only the sandbox has, signs its notifications.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chalicelib.wechat.pay.protocol import PayConfig, public_pem

SANDBOX_MCHID = "1900000109"
_MERCHANT_KEY_FILE = "apiclient_key.pem"  # the name WeChat's certificate tool gives it
_WECHAT_KEY_FILE = "wechatpay_private_key.pem"  # only the sandbox has this half
_WECHAT_PUBLIC_FILE = "pub_key.pem"  # the name of the public key WeChat Pay lets merchants download
_APIV3_FILE = "apiv3_key"


@dataclass(frozen=True, slots=True)
class SandboxKeys:
    """The sandbox's secrets: a merchant key pair, a WeChat-side key pair and an APIv3 key."""

    merchant_private_key_pem: str
    wechat_private_key_pem: str
    apiv3_key: str

    def __repr__(self) -> str:
        return f"SandboxKeys(cert_serial_no={self.cert_serial_no!r}, public_key_id={self.public_key_id!r})"

    @property
    def merchant_public_key_pem(self) -> str:
        return public_pem(self.merchant_private_key_pem)

    @property
    def wechat_public_key_pem(self) -> str:
        return public_pem(self.wechat_private_key_pem)

    @property
    def cert_serial_no(self) -> str:
        """40 hex digits derived from the merchant key, shaped like a real certificate serial."""
        return hashlib.sha1(self.merchant_public_key_pem.encode(), usedforsecurity=False).hexdigest().upper()

    @property
    def public_key_id(self) -> str:
        """`PUB_KEY_ID_` and digits derived from the WeChat-side key, shaped like a real one."""
        digits = str(int(hashlib.sha256(self.wechat_public_key_pem.encode()).hexdigest(), 16))[:30]
        return f"PUB_KEY_ID_01{digits}"

    def config(self, *, notify_url: str, appid: str, mchid: str = SANDBOX_MCHID) -> PayConfig:
        return PayConfig(
            mchid=mchid,
            appid=appid,
            apiv3_key=self.apiv3_key,
            private_key_pem=self.merchant_private_key_pem,
            cert_serial_no=self.cert_serial_no,
            public_key_pem=self.wechat_public_key_pem,
            public_key_id=self.public_key_id,
            notify_url=notify_url,
        )


def generate_sandbox_keys() -> SandboxKeys:
    """Fresh RSA-2048 key pairs and a 32-character APIv3 key (takes a fraction of a second)."""
    # heavy: cryptography is loaded on first use, not at the Lambda's cold start
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    def pem() -> str:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode("ascii")

    alphabet = string.ascii_letters + string.digits
    apiv3_key = "".join(secrets.choice(alphabet) for _ in range(32))
    return SandboxKeys(merchant_private_key_pem=pem(), wechat_private_key_pem=pem(), apiv3_key=apiv3_key)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on the directory, so two local processes starting together agree on one set of keys."""

    with (directory / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(text)


def load_or_create_sandbox_keys(directory: Path) -> SandboxKeys:
    """The sandbox keys stored under `directory` (e.g. `.local/wechatpay/`), created on first use."""
    directory.mkdir(parents=True, exist_ok=True)
    merchant, wechat, apiv3 = (directory / n for n in (_MERCHANT_KEY_FILE, _WECHAT_KEY_FILE, _APIV3_FILE))
    with _locked(directory):
        if merchant.is_file() and wechat.is_file() and apiv3.is_file():
            keys = SandboxKeys(
                merchant_private_key_pem=merchant.read_text("ascii"),
                wechat_private_key_pem=wechat.read_text("ascii"),
                apiv3_key=apiv3.read_text("ascii").strip(),
            )
        else:
            keys = generate_sandbox_keys()
            _write_private(merchant, keys.merchant_private_key_pem)
            _write_private(wechat, keys.wechat_private_key_pem)
            _write_private(apiv3, keys.apiv3_key + "\n")
            (directory / _WECHAT_PUBLIC_FILE).write_text(keys.wechat_public_key_pem, "ascii")
    return keys


def sandbox_config(
    notify_url: str, appid: str, directory: Path | None = None, *, mchid: str = SANDBOX_MCHID
) -> tuple[PayConfig, str]:
    """A sandbox merchant config and the WeChat-side private key that signs its notifications.

    With `directory` the keys persist there (restarts keep them); without, they are fresh.
    """
    keys = generate_sandbox_keys() if directory is None else load_or_create_sandbox_keys(directory)
    return keys.config(notify_url=notify_url, appid=appid, mchid=mchid), keys.wechat_private_key_pem

"""Make sure Debian's Chromium is installed for the browser tests (``python -m devtools.ensure_browser``).

The tests drive ``/usr/bin/chromium`` with the Python ``playwright`` package and never run
``playwright install`` (browser downloads are not reachable here). When the binary is missing
this installs the ``chromium`` package with apt-get, which needs root; otherwise it says what
to run and exits non-zero, so ``make test`` stops with a clear message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
INSTALL = "apt-get update && apt-get install -y chromium"


def chromium_path() -> Path | None:
    """The Chromium binary the browser tests use, if it is installed."""
    return CHROMIUM if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK) else None


def _apt_install() -> int:
    """Install Debian's chromium package; returns apt-get's exit code."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium", "fonts-wqy-microhei"]):
        code = subprocess.run(cmd, env=env, check=False).returncode
        if code != 0:
            return code
    return 0


def ensure() -> Path:
    """The Chromium binary, installed with apt-get first if needed; SystemExit when impossible."""
    found = chromium_path()
    if found is not None:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SystemExit(f"ensure_browser: {CHROMIUM} is missing; install Debian's chromium as root: {INSTALL}")
    print(f"ensure_browser: {CHROMIUM} is missing, installing Debian's chromium package", file=sys.stderr)
    code = _apt_install()
    found = chromium_path()
    if code != 0 or found is None:
        raise SystemExit(f"ensure_browser: installing chromium failed (apt-get exit code {code}); try: {INSTALL}")
    return found


def main() -> int:
    path = ensure()
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"ensure_browser: {version or path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

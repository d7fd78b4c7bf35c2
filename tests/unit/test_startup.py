"""Lambda start-up stays light: importing the app loads no AWS SDK, PynamoDB or X-Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# (Powertools imports the bare botocore package for its user agent: that costs a millisecond.)
HEAVY = ("boto3", "botocore.session", "pynamodb", "aws_xray_sdk", "cryptography", "wechatpayv3", "requests")


def test_importing_the_app_loads_nothing_heavy() -> None:
    code = f"import sys, app; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""

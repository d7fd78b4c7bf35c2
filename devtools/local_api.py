"""`chalice local` as `make run` and the tests start it, answering unknown routes as production does.

    python -m devtools.local_api --port 8000 [--host 127.0.0.1] [--stage local]

Chalice's local gateway imitates API Gateway's answer to a path no route matches: 403
`Missing Authentication Token`, or, when the request carries an `Authorization` header, a message
that quotes the header (the caller's bearer token) back. Production replaces both with our error
shape through gateway responses (infra/merge-prod.json `GatewayResponseUnknownRoute`,
`GatewayResponseDefault4xx`); this does the same locally: 404 `{"error": {"code": "not_found", ...}}`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

NOT_FOUND = {"error": {"code": "not_found", "message": "no such route"}}


def install() -> None:
    """Answer unmatched routes with our 404 instead of API Gateway's 403 (never echoing a token)."""
    from chalice import local

    original = local.LocalGateway.handle_request

    def handle_request(self: Any, method: str, path: str, headers: Any, body: Any) -> Any:
        try:
            return original(self, method, path, headers, body)
        except local.ForbiddenError:  # no authorizers here: raised only for a path no route matches
            return {
                "statusCode": 404,
                "headers": {"Content-Type": "application/json"},
                "multiValueHeaders": {},
                "body": json.dumps(NOT_FOUND),
            }

    local.LocalGateway.handle_request = handle_request  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stage", default="local")
    args = parser.parse_args()
    install()
    from chalice.cli import main as chalice_main

    # No autoreload: DynamoDB Local's data files live under the project and would restart it.
    sys.argv = ["chalice", "local", "--host", args.host, "--port", str(args.port), "--stage", args.stage]
    sys.argv.append("--no-autoreload")
    chalice_main()


if __name__ == "__main__":
    main()

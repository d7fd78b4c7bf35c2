"""`chalice local` with a meter: ``python -m bench.serve --port P --stage local --meter-out FILE``.

The same server `make run` starts (`chalice local --no-autoreload`, in this process), with
`bench.meter.Meter` installed first: every route invocation is timed around the Chalice app (what
Lambda would bill), its DynamoDB units, queue messages and stdout bytes counted. SIGUSR1 writes
the counts to ``--meter-out`` (the load driver asks once the load is over); SIGTERM stops.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stage", default="local")
    parser.add_argument("--meter-out", type=Path, required=True)
    args = parser.parse_args()

    from bench.meter import API_FUNCTION, Meter

    meter = Meter()
    sys.stdout = meter.count_stdout(sys.stdout)  # before the app's loggers bind to it
    meter.install()

    from chalice.app import Chalice

    original = Chalice.__call__

    def timed(app: Chalice, event: Any, context: Any) -> Any:
        request = event.get("requestContext") or {}
        route = f"{request.get('httpMethod')} {request.get('resourcePath')}"
        with meter.invocation(API_FUNCTION, route):
            return original(app, event, context)

    Chalice.__call__ = timed  # type: ignore[method-assign,assignment]

    def write_snapshot(signum: int, frame: FrameType | None) -> None:
        temporary = args.meter_out.with_suffix(".tmp")
        temporary.write_text(json.dumps(meter.snapshot()))
        os.replace(temporary, args.meter_out)

    signal.signal(signal.SIGUSR1, write_snapshot)

    from devtools.local_api import install

    install()  # unknown routes answer as `make run`'s server does
    from chalice.cli import main as chalice_main

    sys.argv = ["chalice", "local", "--host", args.host, "--port", str(args.port), "--stage", args.stage]
    sys.argv.append("--no-autoreload")
    chalice_main()


if __name__ == "__main__":
    main()

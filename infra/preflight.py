"""Before `make deploy` uploads anything: do the secrets the stage's functions read exist?

    python infra/preflight.py infra/merge-prod.json --region cn-north-1

Every function's `SECRETS_ID` in the merge template names its secret sources (Secrets Manager
names, or `ssm:<name>` SecureString parameters; chalicelib/secrets.py). A function whose secret
is missing refuses to start, and a deploy would only show that as failing requests afterwards,
so this asks the aws CLI for each source (`describe-secret` / `get-parameter` without
decryption: it reads no secret value) and fails with the list of what is missing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SSM_PREFIX = "ssm:"


def secret_sources(template: dict[str, Any]) -> list[str]:
    """Every source named by a SECRETS_ID in the template's functions, sorted, once each."""
    sources: set[str] = set()
    for resource in template.get("Resources", {}).values():
        variables = resource.get("Properties", {}).get("Environment", {}).get("Variables", {})
        value = variables.get("SECRETS_ID")
        if isinstance(value, str):
            sources.update(part.strip() for part in value.split(",") if part.strip())
    return sorted(sources)


def describe(source: str, region: str) -> list[str]:
    """The aws CLI command that succeeds only when `source` exists (and reads no value)."""
    if source.startswith(SSM_PREFIX) or (source.startswith("arn:") and source.split(":")[2:3] == ["ssm"]):
        name = source.removeprefix(SSM_PREFIX)
        return ["aws", "ssm", "get-parameter", "--region", region, "--name", name, "--query", "Parameter.Name"]
    return ["aws", "secretsmanager", "describe-secret", "--region", region, "--secret-id", source, "--query", "Name"]


def missing_sources(sources: list[str], region: str) -> list[str]:
    missing = []
    for source in sources:
        run = subprocess.run(describe(source, region), capture_output=True, text=True, check=False)  # noqa: S603
        if run.returncode != 0:
            missing.append(f"{source} ({run.stderr.strip().splitlines()[-1] if run.stderr.strip() else 'not found'})")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path)
    parser.add_argument("--region", required=True)
    args = parser.parse_args(argv)
    sources = secret_sources(json.loads(args.template.read_text()))
    if not sources:
        print(f"{args.template}: no function names a SECRETS_ID", file=sys.stderr)
        return 1
    missing = missing_sources(sources, args.region)
    if missing:
        print(
            f"make deploy: secrets missing in {args.region}: " + "; ".join(missing) + "\n"
            "Create them first (infra/README.md, 'Before the first deploy').",
            file=sys.stderr,
        )
        return 1
    print(f"secrets present in {args.region}: {', '.join(sources)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

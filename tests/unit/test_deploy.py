"""Locked dependencies, the Lambda package built from them, and `make deploy`.

requirements.txt and requirements-dev.txt are the human-edited inputs; requirements.lock and
requirements-dev.lock pin every transitive dependency with hashes (`make lock`, uv). The venv
installs the dev lock; `infra/package.sh` vendors the runtime lock into the Lambda zip. These
tests fail when a lock no longer matches its inputs, when the package could ship anything but
the lock, and when `make deploy` would run without what it needs or pass the template
parameters it does not declare (the aws CLI silently drops unknown overrides).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "run `make lock` and commit requirements.lock, requirements-local.lock and requirements-dev.lock"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;\\]+)")


def canonical(name: str) -> str:
    """PEP 503 name: `Typing_Extensions` and `typing-extensions` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def input_pins(path: Path) -> dict[str, str]:
    """name -> version of a human-edited requirements file, following `-r` includes."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            pins |= input_pins(path.parent / line[3:].strip())
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: {raw!r} is not pinned with ==: pin it, then {REGENERATE}"
        pins[canonical(match["name"])] = match["version"]
    return pins


@dataclass
class Locked:
    versions: set[str] = field(default_factory=set)
    hashes: int = 0
    via: set[str] = field(default_factory=set)


def parse_lock(text: str) -> dict[str, Locked]:
    """name -> what a uv/pip-tools lock says of it (a universal lock may hold two versions)."""
    entries: dict[str, Locked] = {}
    current: Locked | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if match := PIN.match(line):
            current = entries.setdefault(canonical(match["name"]), Locked())
            current.versions.add(match["version"])
        elif current and stripped.startswith("--hash="):
            current.hashes += 1
        elif current and stripped.startswith("#"):
            source = stripped.lstrip("#").strip().removeprefix("via").strip()
            if source.startswith("-r "):
                current.via.add(source[3:].strip())
    return entries


def lock_drift(pins: dict[str, str], inputs: set[str], lock_text: str) -> list[str]:
    """How a lock disagrees with its inputs' pins (empty when it is current)."""
    lock = parse_lock(lock_text)
    problems = [
        f"{name}=={version} is pinned but the lock has {sorted(lock[name].versions) if name in lock else 'nothing'}"
        for name, version in sorted(pins.items())
        if name not in lock or version not in lock[name].versions
    ]
    problems += [
        f"{name} is locked as a direct requirement but no longer pinned"
        for name, entry in sorted(lock.items())
        if entry.via & inputs and name not in pins
    ]
    problems += [f"{name} has no --hash" for name, entry in sorted(lock.items()) if entry.hashes == 0]
    return problems


LOCKS = {
    "requirements.lock": ("requirements.txt",),
    "requirements-local.lock": ("requirements-local.txt", "requirements.txt"),
    "requirements-dev.lock": ("requirements-dev.txt", "requirements-local.txt", "requirements.txt"),
}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_matches_its_inputs(lock: str) -> None:
    inputs = LOCKS[lock]
    text = (ROOT / lock).read_text()
    problems = lock_drift(input_pins(ROOT / inputs[0]), set(inputs), text)
    assert not problems, f"{lock} is stale: {'; '.join(problems)}. {REGENERATE}."
    assert "make lock" in text.splitlines()[1], f"{lock} was not written by `make lock`: {REGENERATE}"


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-local.lock"])
def test_runtime_and_local_locks_have_the_versions_the_tests_run(lock: str) -> None:
    narrow = parse_lock((ROOT / lock).read_text())
    dev = parse_lock((ROOT / "requirements-dev.lock").read_text())
    differ = {n: (e.versions, dev[n].versions if n in dev else None) for n, e in narrow.items()}
    differ = {n: v for n, v in differ.items() if v[1] is None or not v[0] <= v[1]}
    assert not differ, f"{lock} would run other versions than the tests: {differ}. {REGENERATE}."


def test_make_run_installs_only_the_local_lock_and_no_test_tools() -> None:
    out = make("-n", "-W", "requirements-local.lock", "run").stdout
    installs = [line for line in out.splitlines() if "pip install" in line]
    assert installs and all("--require-hashes -r requirements-local.lock" in line for line in installs), out
    local = parse_lock((ROOT / "requirements-local.lock").read_text())
    assert {"chalice", "boto3", "pynamodb"} <= set(local)
    assert not {"pytest", "playwright", "schemathesis", "ruff", "mypy", "moto"} & set(local)


LOCK_TEXT = """\
# This file was autogenerated by uv via the following command:
#    make lock
pyjwt==2.15.1 \\
    --hash=sha256:aa
    # via -r requirements.txt
segno==1.6.6 \\
    --hash=sha256:bb
    # via -r requirements.txt
typing-extensions==4.16.0 \\
    --hash=sha256:cc \\
    --hash=sha256:dd
    # via
    #   -r requirements.txt
    #   pydantic
"""


def test_lock_drift_names_changed_added_removed_and_unhashed_pins() -> None:
    # Given inputs that moved on from the lock above
    pins = {"pyjwt": "2.16.0", "typing-extensions": "4.16.0", "argon2-cffi": "25.1.0"}
    # When
    problems = lock_drift(pins, {"requirements.txt"}, LOCK_TEXT.replace("--hash=sha256:bb", ""))
    # Then
    assert problems == [
        "argon2-cffi==25.1.0 is pinned but the lock has nothing",
        "pyjwt==2.16.0 is pinned but the lock has ['2.15.1']",
        "segno is locked as a direct requirement but no longer pinned",
        "segno has no --hash",
    ]
    assert not lock_drift(
        {"pyjwt": "2.15.1", "segno": "1.6.6", "typing-extensions": "4.16.0"}, {"requirements.txt"}, LOCK_TEXT
    )


def test_input_pins_follow_includes_and_refuse_loose_requirements(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("PyJWT==2.15.1  # tokens\n")
    (tmp_path / "dev.txt").write_text("# tools\n-r requirements.txt\nmoto[sqs]==5.2.5\n")
    assert input_pins(tmp_path / "dev.txt") == {"pyjwt": "2.15.1", "moto": "5.2.5"}
    (tmp_path / "dev.txt").write_text("ruff>=0.17\n")
    with pytest.raises(AssertionError, match="not pinned"):
        input_pins(tmp_path / "dev.txt")


# ---------------------------------------------------------------------------------------------
# make: the venv installs the dev lock; `make deploy` checks, packages, uploads, deploys.


def make(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    for name in ("REGION", "BUCKET", "PUBLIC_BASE_URL", "STACK", "STAGE", "ALARM_EMAIL"):
        env.pop(name, None)
    if path is not None:
        env["PATH"] = path
    make_bin = shutil.which("make")
    assert make_bin
    return subprocess.run(
        [make_bin, "--no-print-directory", "-C", str(ROOT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_venv_installs_the_dev_lock_with_hashes() -> None:
    # -W: as if the lock had just changed, so make prints the install step
    out = make("-n", "-W", "requirements-dev.lock", "venv").stdout
    installs = [line for line in out.splitlines() if "pip install" in line]
    assert installs, out
    assert all("--require-hashes -r requirements-dev.lock" in line for line in installs), installs


GOOD = {
    "STAGE": "prod",
    "REGION": "cn-north-1",
    "BUCKET": "fenxiao-artifacts",
    "PUBLIC_BASE_URL": "https://api.example.com",
}


def deploy_dry_run(**overrides: str) -> subprocess.CompletedProcess[str]:
    values = {k: v for k, v in (GOOD | overrides).items() if v}
    return make("-n", "deploy", *(f"{k}={v}" for k, v in values.items()))


def commands(out: str) -> list[list[str]]:
    """The dry run's shell commands, continuation lines joined, split like the shell would."""
    return [shlex.split(line) for line in out.replace("\\\n", " ").splitlines() if line.strip()]


def find(cmds: list[list[str]], *prefix: str) -> tuple[int, list[str]]:
    """The first command starting with `prefix`, wherever its `--region X` stands."""
    for i, cmd in enumerate(cmds):
        if "--region" in cmd:
            at = cmd.index("--region")
            bare = cmd[:at] + cmd[at + 2 :]
        else:
            bare = cmd
        if bare[: len(prefix)] == list(prefix):
            return i, cmd
    raise AssertionError(f"no command {' '.join(prefix)} in the dry run:\n" + "\n".join(map(shlex.join, cmds)))


def option(cmd: list[str], name: str) -> list[str]:
    """The values after `--name`, up to the next option."""
    start = cmd.index(name) + 1
    end = next((i for i in range(start, len(cmd)) if cmd[i].startswith("--")), len(cmd))
    return cmd[start:end]


MERGE = json.loads((ROOT / "infra" / "merge-prod.json").read_text())


def test_deploy_checks_packages_uploads_and_deploys_in_that_order() -> None:
    run = deploy_dry_run()
    assert run.returncode == 0, run.stderr
    cmds = commands(run.stdout)
    check, _ = find(cmds, "command", "-v", "aws")
    whoami, sts = find(cmds, "aws", "sts", "get-caller-identity")
    pkg, _ = find(cmds, "STAGE=prod", "bash", "infra/package.sh")
    upload, cfn_package = find(cmds, "aws", "cloudformation", "package")
    deploy, cfn_deploy = find(cmds, "aws", "cloudformation", "deploy")
    assert check < whoami < pkg < upload < deploy
    for cmd in (sts, cfn_package, cfn_deploy):
        assert cmd[cmd.index("--region") + 1] == "cn-north-1", cmd
    assert option(cfn_package, "--template-file") == ["build/package/sam.json"]
    assert option(cfn_package, "--s3-bucket") == ["fenxiao-artifacts"]
    packaged = option(cfn_package, "--output-template-file")
    assert option(cfn_deploy, "--template-file") == packaged
    assert option(cfn_deploy, "--stack-name") == ["fenxiao-prod"]
    # The packaged template is ~200 KB; CloudFormation takes at most 51,200 bytes inline.
    assert option(cfn_deploy, "--s3-bucket") == ["fenxiao-artifacts"]
    assert "CAPABILITY_IAM" in option(cfn_deploy, "--capabilities")


def test_the_stage_reaches_the_package_step() -> None:
    lines = deploy_dry_run().stdout.splitlines()
    assert any(line.startswith("STAGE=prod bash infra/package.sh") for line in lines), lines


def test_deploy_passes_every_required_template_parameter_and_no_unknown_one() -> None:
    _, cfn_deploy = find(commands(deploy_dry_run().stdout), "aws", "cloudformation", "deploy")
    passed = dict(pair.split("=", 1) for pair in option(cfn_deploy, "--parameter-overrides"))
    declared = MERGE.get("Parameters", {})
    required = {name for name, spec in declared.items() if "Default" not in spec}
    assert required <= passed.keys(), f"make deploy does not pass {sorted(required - passed.keys())}"
    assert passed.keys() <= declared.keys(), f"the template does not declare {sorted(passed.keys() - declared.keys())}"
    for name, value in passed.items():
        pattern = declared[name].get("AllowedPattern")
        assert pattern is None or re.fullmatch(pattern, value), (name, value)
    assert passed["PublicBaseUrl"] == "https://api.example.com"


NAMED_IAM = {"RoleName", "ManagedPolicyName", "UserName", "GroupName", "InstanceProfileName"}


def test_deploy_acknowledges_named_iam_when_the_template_names_iam_resources() -> None:
    _, cfn_deploy = find(commands(deploy_dry_run().stdout), "aws", "cloudformation", "deploy")
    named = [
        name
        for name, resource in MERGE["Resources"].items()
        if resource.get("Type", "").startswith("AWS::IAM::") and NAMED_IAM & resource.get("Properties", {}).keys()
    ]
    if named:
        assert "CAPABILITY_NAMED_IAM" in option(cfn_deploy, "--capabilities"), named


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ({"REGION": ""}, "REGION is required"),
        ({"BUCKET": ""}, "BUCKET is required"),
        ({"PUBLIC_BASE_URL": ""}, "PUBLIC_BASE_URL is required"),
        ({"REGION": "ap-shanghai"}, "not an AWS region"),
        ({"PUBLIC_BASE_URL": "http://api.example.com"}, "must start with https://"),
        ({"STAGE": "staging"}, "no infra/merge-staging.json"),
    ],
)
def test_deploy_refuses_before_running_anything(missing: dict[str, str], message: str) -> None:
    run = deploy_dry_run(**missing)
    assert run.returncode != 0
    assert message in run.stderr, run.stderr
    assert run.stdout == "", "a command ran (or would run) before the check"


def test_deploy_without_the_aws_cli_stops_before_packaging(tmp_path: Path) -> None:
    # Given a PATH without any `aws`
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "aws").exists())
    marker = ROOT / "build" / "package" / "sam.json"
    before = marker.stat().st_mtime_ns if marker.exists() else None
    # When
    run = make("deploy", *(f"{k}={v}" for k, v in GOOD.items()), path=path)
    # Then
    assert run.returncode != 0
    assert "the aws CLI is not on PATH" in run.stderr, run.stderr
    assert "package.sh" not in run.stdout
    assert (marker.stat().st_mtime_ns if marker.exists() else None) == before


# ---------------------------------------------------------------------------------------------
# infra/package.sh ships the runtime lock and nothing chalice resolves itself.

FAKE_PYTHON = """#!/usr/bin/env bash
if [[ "$1 $2" == "-m pip" ]]; then
  printf '%s\\n' "$@" > "$LOG/pip.$(date +%s%N)"
  target=$(printf '%s\\n' "$@" | grep -A1 -x -- --target | tail -1)
  mkdir -p "$target/locked-1.0.dist-info"
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""
FAKE_CHALICE = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$LOG/chalice"
src=$(printf '%s\\n' "$@" | grep -A1 -x -- --project-dir | tail -1)
{ grep -v '^#' "$src/requirements.txt" || true; } > "$LOG/requirements-seen-by-chalice"
ls "$src" "$src/vendor" "$src/.chalice" > "$LOG/tree-seen-by-chalice"
out="${@: -1}"; mkdir -p "$out" && echo '{}' > "$out/sam.json"
"""


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"python": FAKE_PYTHON, "chalice": FAKE_CHALICE, "cfn-lint": "#!/bin/sh\nexit 0\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "log").mkdir()
    return bin_dir


def package(tmp_path: Path, bin_dir: Path) -> None:
    env = os.environ | {
        "BIN": str(bin_dir),
        "REAL_PYTHON": sys.executable,
        "LOG": str(tmp_path / "log"),
        "SRC": str(tmp_path / "src"),
        "OUT": str(tmp_path / "out"),
        "STAGE": "prod",
    }
    run = subprocess.run(
        ["bash", str(ROOT / "infra" / "package.sh")], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_package_vendors_the_runtime_lock_with_hashes_for_lambda(tmp_path: Path, fake_bin: Path) -> None:
    # When
    package(tmp_path, fake_bin)
    # Then pip installed the runtime lock, hash-checked, as Lambda wheels, into the staged vendor/
    (pip_log,) = (tmp_path / "log").glob("pip.*")
    pip = pip_log.read_text().splitlines()
    assert pip[:3] == ["-m", "pip", "install"]
    assert pip[pip.index("-r") + 1] == "requirements.lock"
    assert "--require-hashes" in pip
    assert "--only-binary=:all:" in pip
    assert pip[pip.index("--target") + 1] == str(tmp_path / "src" / "vendor")
    assert "manylinux2014_x86_64" in pip
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert pip[pip.index("--python-version") + 1] == version
    assert pip[pip.index("--abi") + 1] == f"cp{version.replace('.', '')}"
    # and chalice packaged the staged copy, whose requirements.txt asks for nothing
    chalice = (tmp_path / "log" / "chalice").read_text().splitlines()
    assert chalice[:3] == ["--project-dir", str(tmp_path / "src"), "package"]
    assert chalice[chalice.index("--merge-template") + 1] == str(ROOT / "infra" / "merge-prod.json")
    assert (tmp_path / "log" / "requirements-seen-by-chalice").read_text().strip() == ""
    tree = (tmp_path / "log" / "tree-seen-by-chalice").read_text().split()
    assert {"app.py", "chalicelib", "vendor", "locked-1.0.dist-info", "config.json"} <= set(tree)


def test_package_reinstalls_vendor_only_when_the_lock_changes(tmp_path: Path, fake_bin: Path) -> None:
    package(tmp_path, fake_bin)
    package(tmp_path, fake_bin)
    assert len(list((tmp_path / "log").glob("pip.*"))) == 1
    # a different lock (or Python) invalidates the stamp
    stamp = tmp_path / "src" / "vendor.stamp"
    stamp.write_text("python 3.11 0000\n")
    package(tmp_path, fake_bin)
    assert len(list((tmp_path / "log").glob("pip.*"))) == 2


def test_deploy_checks_the_secrets_before_packaging() -> None:
    cmds = commands(deploy_dry_run().stdout)
    whoami, _ = find(cmds, "aws", "sts", "get-caller-identity")
    check, preflight = find(cmds, "python3", "infra/preflight.py")
    pkg, _ = find(cmds, "STAGE=prod", "bash", "infra/package.sh")
    assert whoami < check < pkg
    assert preflight[2:] == ["infra/merge-prod.json", "--region", "cn-north-1"]


def test_deploy_subscribes_the_alarm_email_to_the_stacks_topic() -> None:
    without = deploy_dry_run().stdout
    assert "sns subscribe" not in without
    cmds = commands(deploy_dry_run(ALARM_EMAIL="ops@example.com").stdout)
    deploy, _ = find(cmds, "aws", "cloudformation", "deploy")
    subscribe, sns = find(cmds, "aws", "sns", "subscribe")
    assert deploy < subscribe
    assert sns[sns.index("--notification-endpoint") + 1] == "ops@example.com"
    assert "describe-stacks --stack-name fenxiao-prod" in sns[sns.index("--topic-arn") + 1]
    assert "Outputs[?OutputKey=='AlarmTopicArn'].OutputValue" in deploy_dry_run(ALARM_EMAIL="ops@example.com").stdout
    assert "AlarmTopicArn" in MERGE["Outputs"]
    refused = deploy_dry_run(ALARM_EMAIL="ops.example.com")
    assert refused.returncode != 0
    assert "not an email address" in refused.stderr


FAKE_AWS = """#!/usr/bin/env bash
# exists: fenxiao/prod/app only
echo "$@" >> "$LOG"
if [[ "$*" == *"--secret-id fenxiao/prod/app "* ]]; then echo '"fenxiao/prod/app"'; exit 0; fi
echo "An error occurred (ResourceNotFoundException) when calling the DescribeSecret operation" >&2
exit 254
"""


def test_preflight_names_every_missing_secret_of_the_template(tmp_path: Path) -> None:
    # Given an aws CLI that knows only fenxiao/prod/app, and a template naming three sources
    (tmp_path / "aws").write_text(FAKE_AWS)
    (tmp_path / "aws").chmod(0o755)
    template = {
        "Resources": {
            "A": {
                "Properties": {"Environment": {"Variables": {"SECRETS_ID": "fenxiao/prod/app,fenxiao/prod/wechatpay"}}}
            },
            "B": {
                "Properties": {"Environment": {"Variables": {"SECRETS_ID": "fenxiao/prod/app, ssm:/fenxiao/prod/x"}}}
            },
            "C": {"Type": "AWS::SQS::Queue"},
        }
    }
    (tmp_path / "merge.json").write_text(json.dumps(template))
    env = os.environ | {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "LOG": str(tmp_path / "calls")}
    # When
    run = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "preflight.py"), str(tmp_path / "merge.json"), "--region", "cn-north-1"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    # Then
    assert run.returncode == 1
    assert "fenxiao/prod/wechatpay (An error occurred (ResourceNotFoundException)" in run.stderr
    assert "/fenxiao/prod/x" in run.stderr
    assert "fenxiao/prod/app " not in run.stderr.replace("fenxiao/prod/app,", "")
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 3  # each source once
    assert "ssm get-parameter --region cn-north-1 --name /fenxiao/prod/x --query Parameter.Name" in calls
    assert not any("--with-decryption" in call or "get-secret-value" in call for call in calls)


def test_preflight_reads_the_sources_the_prod_template_names() -> None:
    from infra import preflight

    sources = preflight.secret_sources(MERGE)
    named = {
        part.strip()
        for resource in MERGE["Resources"].values()
        for part in resource.get("Properties", {})
        .get("Environment", {})
        .get("Variables", {})
        .get("SECRETS_ID", "")
        .split(",")
        if part.strip()
    }
    assert sources == sorted(named)
    assert sources, "no function of the prod template names a SECRETS_ID"


README = (ROOT / "infra" / "README.md").read_text()


def test_infra_readme_documents_every_secret_key_and_secret() -> None:
    from chalicelib.settings import SECRET_FIELDS, Settings
    from infra import preflight

    # every secret setting, and the merchant account's identifiers stored beside them
    keys = set(SECRET_FIELDS) | {
        name for name in Settings.model_fields if name.startswith("wechatpay_") and "transfer" not in name
    }
    rows = set(re.findall(r"^\| `[^`]+` \| `([a-z0-9_]+)` \|", README, flags=re.MULTILINE))
    assert keys <= rows, f"infra/README.md's secrets table lacks {sorted(keys - rows)}"
    missing = [s for s in preflight.secret_sources(MERGE) if f"`{s}`" not in README]
    assert not missing, f"infra/README.md does not say what goes into {missing}"

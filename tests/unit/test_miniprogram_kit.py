"""The mini-program kit (clients/miniprogram) agrees with the app.

- `src/schema.d.ts` is what openapi-typescript makes of today's /v1/openapi.json, with the flags
  of the kit's own `npm run generate`: a route or a model changed without `make client` fails here.
- `src/errors.ts` is what `generate.py` prints from today's error table.
- `tsc --noEmit` passes on the sample mini-program and on `checks/refused.ts`, whose deliberately
  wrong calls must each be refused by the types (`@ts-expect-error`).

Node and npm are prerequisites of `make test` (README): without them this fails, it does not skip.
node_modules is installed once with `npm ci` (from the pinned package-lock.json) and reused.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "clients" / "miniprogram"
REGENERATE = "run `make client` and commit clients/miniprogram/src"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: the mini-program kit needs Node.js and npm (see README, prerequisites)")
    return path


def _run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def _installed_matches_lock() -> bool:
    """npm keeps what it installed in node_modules/.package-lock.json; equal packages = up to date."""
    hidden = KIT / "node_modules" / ".package-lock.json"
    if not hidden.exists():
        return False
    wanted = {k: v for k, v in json.loads((KIT / "package-lock.json").read_text())["packages"].items() if k}
    have = json.loads(hidden.read_text())["packages"]
    return all(have.get(name, {}).get("version") == entry.get("version") for name, entry in wanted.items())


@pytest.fixture(scope="module")
def node_modules() -> Path:
    npm = _tool("npm")
    _tool("node")
    if not _installed_matches_lock():
        done = _run([npm, "ci", "--no-audit", "--no-fund"], KIT, timeout=600)
        assert done.returncode == 0, f"npm ci failed in clients/miniprogram:\n{done.stdout}\n{done.stderr}"
    return KIT / "node_modules"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kit_generate", KIT / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _generate_command(document: Path, output: Path) -> list[str]:
    """`npm run generate` as package.json has it, reading `document` and writing `output`."""
    args = shlex.split(json.loads((KIT / "package.json").read_text())["scripts"]["generate"])
    assert args[0] == "openapi-typescript", "the generate script runs openapi-typescript"
    out = next(i for i, a in enumerate(args) if a in ("--output", "-o"))
    args[out + 1] = str(output)
    return [args[0], str(document), *args[2:]]


def test_schema_types_are_generated_from_the_current_document(node_modules: Path, tmp_path: Path) -> None:
    # Given today's document, printed as GET /v1/openapi.json serves it
    generator = _generator()
    document, errors = tmp_path / "openapi.json", tmp_path / "errors.ts"
    generator.main(document, errors)
    # When the kit's generator runs on it
    command = _generate_command(document, tmp_path / "schema.d.ts")
    done = _run([str(node_modules / ".bin" / command[0]), *command[1:]], KIT)
    assert done.returncode == 0, done.stderr
    # Then the committed types are exactly its output
    committed = (KIT / "src" / "schema.d.ts").read_text(encoding="utf-8")
    assert (tmp_path / "schema.d.ts").read_text(encoding="utf-8") == committed, f"schema.d.ts is stale: {REGENERATE}"


def test_error_texts_are_printed_from_the_error_table(tmp_path: Path) -> None:
    generator = _generator()
    generator.main(tmp_path / "openapi.json", tmp_path / "errors.ts")
    committed = (KIT / "src" / "errors.ts").read_text(encoding="utf-8")
    assert (tmp_path / "errors.ts").read_text(encoding="utf-8") == committed, f"errors.ts is stale: {REGENERATE}"
    assert '"token_expired": "登录已失效，请重新登录"' in committed


def test_the_generated_module_follows_the_table() -> None:
    # Given a document whose table has a code to show and one not to
    generator = _generator()
    document = {
        "x-error-codes": {
            "zz_new": {"show": "新的提示", "status": [400], "meaning": "", "source": "app"},
            "zz_quiet": {"show": "", "status": [400], "meaning": "", "source": "app"},
        }
    }
    # Then the printed module carries it, in the union and in the texts
    printed = generator.errors_ts(json.dumps(document))
    assert '  | "zz_new"\n' in printed
    assert '  "zz_new": "新的提示",' in printed
    assert '  | "zz_quiet";' in printed and '"zz_quiet":' not in printed  # shown as GENERIC_ERROR_TEXT


def test_the_sample_and_the_refused_calls_type_check(node_modules: Path) -> None:
    # --incremental keeps tsc's state in node_modules/.cache (git-ignored): unchanged files are not re-checked.
    cache = node_modules / ".cache" / "checks.tsbuildinfo"
    tsc = [str(node_modules / ".bin" / "tsc"), "--noEmit", "--pretty", "false", "-p", "checks/tsconfig.json"]
    done = _run([*tsc, "--incremental", "--tsBuildInfoFile", str(cache)], KIT)
    assert done.returncode == 0, f"tsc --noEmit failed on the sample or checks/refused.ts:\n{done.stdout}{done.stderr}"

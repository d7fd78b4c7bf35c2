"""The README is executed: its shell and Python walk-throughs run, in order, in one bash session
against the live test stack, and what their comments promise is checked.

Every ```bash and ```python block runs unless its first line is in `NOT_RUN` (each with the
reason). The README's `http://127.0.0.1:8000` becomes the live server's URL, the demo tenant a
tenant of this module's own (seeded with `devtools.seed.seed_demo`), and the demo merchant one
of its own (merchant ids are unique across tenants, and other tests use `shop1`).

What a command promises is written after `# ->`, on its line or on the comment lines right
below it:
- `# -> {"status": "bound"}`: the output is this JSON. An object or list holding `...` may
  have more members than shown; without it, it has exactly these. In a string, `<name>` stands
  for any text (the same text wherever the same name appears in one comment) and `...` for any
  text. A leading status (`# -> 201 {...}`) is the HTTP status of the command's last curl call.
- `# -> 3.1.0 <n> paths`: the output is this line (with the same placeholders).
Prose after the JSON (`: ...`) or a comment without `->` is not checked. Every curl call of
every command must answer 2xx unless its comment names another status.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import LiveApi
from tests.stack import reset_caches

README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://127.0.0.1:8000"
README_TENANT = "wxdemo0000000001"
README_MERCHANT = "shop1"

# Blocks that are not walk-throughs against a running stack (their first line, and why).
NOT_RUN = {
    "make run": "starts the stack the test already runs",
    ".venv/bin/python -m devtools.admin tenant": "creates tenants and operators in a stage",
    "python -m devtools.admin merchant": "creates merchants in a stage (tests/integration covers the CLI)",
    "make deploy": "deploys to AWS",
}
# A command that only reads (no -X, no body) may be repeated while the event runner catches up.
RETRY_SECONDS = 15.0
STEP_SECONDS = 60.0
MARK = "__README_STEP_DONE__"
SLEEP = re.compile(r"^sleep \d+; *")
HTTP_MARK = "README_HTTP"


@dataclass
class Step:
    line: int  # in README.md, 1-based
    command: str
    promise: str | None = None  # the text after `# ->`, continuation lines joined

    @property
    def reads_only(self) -> bool:
        return "curl" in self.command and not re.search(r"\s(-X|-d|--data)\b", self.command)


@dataclass
class Block:
    lang: str
    line: int  # of the opening fence
    code: str
    steps: list[Step] = field(default_factory=list)


# --- reading the README ---------------------------------------------------------------------


def fenced_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lang: str | None = None
    start, body = 0, list[str]()
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), number, []
            else:
                blocks.append(Block(lang, start, "\n".join(body) + "\n"))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"README.md:{start}: a code block is never closed"
    return blocks


def comment_start(line: str) -> int | None:
    """Where a shell comment starts on `line` (a `#` at the start or after a blank, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
            elif char == "\\" and quote == '"':
                continue
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return i
    return None


def _depths(text: str) -> Iterator[tuple[int, int, bool]]:
    """(index, bracket depth after it, whether it closed a bracket) for each character of `text`,
    brackets inside JSON strings not counted."""
    depth, in_string, escaped = 0, False, False
    for i, char in enumerate(text):
        closed = False
        if in_string:
            escaped = not escaped and char == "\\"
            if char == '"' and not escaped:
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            closed = True
        yield i, depth, closed


def balanced(text: str) -> bool:
    """True when every bracket opened in `text` outside JSON strings is closed."""
    return all(depth <= 0 for _, depth, _ in list(_depths(text))[-1:])


def shell_steps(block: Block) -> list[Step]:
    """One step per command (backslash continuations joined), with the promise its comments make."""
    steps: list[Step] = []
    pending: list[str] = []
    open_promise: Step | None = None
    for offset, raw in enumerate(block.code.splitlines(), 1):
        number = block.line + offset
        stripped = raw.strip()
        if not pending and stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if text.startswith("->") and steps:
                steps[-1].promise = text[2:].strip()
                open_promise = steps[-1]
            elif open_promise is not None and open_promise.promise and not balanced(open_promise.promise):
                open_promise.promise += " " + text
            else:
                open_promise = None
            continue
        if not stripped and not pending:
            open_promise = None
            continue
        cut = comment_start(raw)
        code, comment = (raw[:cut], raw[cut + 1 :].strip()) if cut is not None else (raw, "")
        if code.rstrip().endswith("\\"):
            pending.append(code.rstrip())
            continue
        pending.append(code)
        step = Step(number - len(pending) + 1, "\n".join(pending).strip())
        pending = []
        if comment.startswith("->"):
            step.promise = comment[2:].strip()
        steps.append(step)
        open_promise = step
    assert not pending, f"README.md:{block.line}: a command ends with a backslash"
    return steps


def python_step(block: Block) -> Step:
    """A Python block runs as one step; its promise is the last `# ->` comment in it."""
    promise = None
    for raw in block.code.splitlines():
        cut = raw.find("# ->")
        if cut >= 0:
            promise = raw[cut + 4 :].strip()
    return Step(block.line + 1, f"python3 - <<'README_PY'\n{block.code}README_PY", promise)


def walkthroughs(text: str) -> list[Block]:
    """The blocks that run, in README order, each with its steps."""
    runnable = []
    for block in fenced_blocks(text):
        if block.lang not in {"bash", "python"}:
            continue
        first = block.code.strip().splitlines()[0]
        if any(first.startswith(prefix) for prefix in NOT_RUN):
            continue
        block.steps = shell_steps(block) if block.lang == "bash" else [python_step(block)]
        runnable.append(block)
    return runnable


# --- promises -------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"<([a-z_]+)>|\.\.\.")
_MORE = "__and_more__"


def parse_promise(promise: str) -> tuple[int | None, Any]:
    """`[status] {json} [prose]` or `[status] text`: the status and the JSON value or the text."""
    status = None
    head = re.match(r"(\d{3})(\s|$)", promise)
    if head:
        status, promise = int(head.group(1)), promise[head.end() :].strip()
    if not promise.startswith(("{", "[")):
        return status, promise
    end = _json_end(promise)
    return status, json.loads(_mark_ellipses(promise[:end]))


def _json_end(text: str) -> int:
    for i, depth, closed in _depths(text):
        if closed and depth == 0:
            return i + 1
    raise AssertionError(f"unbalanced JSON in promise {text!r}")


def _mark_ellipses(text: str) -> str:
    """A bare `...` member becomes a marker the matcher reads as "and more"."""
    out, stack, in_string, escaped, i = [], [], False, False, 0
    while i < len(text):
        char = text[i]
        if in_string:
            escaped = not escaped and char == "\\"
            in_string = not (char == '"' and not escaped)
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]":
            stack.pop()
        elif text.startswith("...", i):
            out.append(f'"{_MORE}": null' if stack[-1] == "{" else f'"{_MORE}"')
            i += 3
            continue
        out.append(char)
        i += 1
    return "".join(out)


def match(expected: Any, actual: Any, bound: dict[str, str], where: str = "") -> list[str]:
    """What differs between a promise and the output (empty when the promise holds)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where or 'output'}: expected an object, got {actual!r}"]
        more = _MORE in expected
        members = {key: value for key, value in expected.items() if key != _MORE}
        problems = [f"{where}.{key}: missing" for key in members if key not in actual]
        if not more:
            problems += [f"{where}.{key}: not promised" for key in actual if key not in members]
        for key, value in members.items():
            if key in actual:
                problems += match(value, actual[key], bound, f"{where}.{key}")
        return problems
    if isinstance(expected, list):
        more = bool(expected) and expected[-1] == _MORE
        items = expected[:-1] if more else expected
        if not isinstance(actual, list) or len(actual) < len(items) or (not more and len(actual) != len(items)):
            return [f"{where}: expected {len(items)}{'+' if more else ''} items, got {actual!r}"]
        return [p for i, item in enumerate(items) for p in match(item, actual[i], bound, f"{where}[{i}]")]
    if isinstance(expected, str) and _PLACEHOLDER.search(expected):
        return [] if text_matches(expected, str(actual), bound) else [f"{where}: {actual!r} is not {expected!r}"]
    if expected != actual or type(expected) is not type(actual):
        return [f"{where}: expected {expected!r}, got {actual!r}"]
    return []


def text_matches(pattern: str, text: str, bound: dict[str, str]) -> bool:
    """`pattern` with `<name>` (the same text for the same name) and `...` (any text) matches all of `text`."""
    parts, names, pos = [], [], 0
    for found in _PLACEHOLDER.finditer(pattern):
        parts.append(re.escape(pattern[pos : found.start()]))
        name = found.group(1)
        if name is None:
            parts.append(".*")
        elif name in bound:
            parts.append(re.escape(bound[name]))
        elif name in names:
            parts.append(f"(?P={name})")
        else:
            parts.append(f"(?P<{name}>.+?)")
            names.append(name)
        pos = found.end()
    parts.append(re.escape(pattern[pos:]))
    result = re.fullmatch("".join(parts), text, re.DOTALL)
    if result is None:
        return False
    bound.update(result.groupdict())
    return True


def check(step: Step, output: str, statuses: list[int]) -> list[str]:
    """What is wrong with one step's result: a failed call, or a promise not kept."""
    status, promised = parse_promise(step.promise) if step.promise else (None, None)
    calls = statuses[:-1] if status is not None else statuses
    problems = [f"HTTP {code}" for code in calls if not 200 <= code < 300]
    if status is not None and (not statuses or statuses[-1] != status):
        problems.append(f"HTTP {statuses[-1] if statuses else None}, promised {status}")
    if promised is None:
        return problems
    if isinstance(promised, str):
        if not text_matches(promised, output.strip(), {}):
            problems.append(f"output {output.strip()!r} is not {promised!r}")
        return problems
    try:
        actual = json.loads(output)
    except ValueError:
        return [*problems, f"output is not JSON: {output!r}"]
    return problems + match(promised, actual, {})


# --- running --------------------------------------------------------------------------------


class Shell:
    """One bash session the steps run in, so variables and functions carry over as for a reader."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
            text=True,
        )
        # Each curl call reports its HTTP status on stderr after whatever the command prints.
        self.send(f"curl() {{ command curl -w '%{{stderr}}{HTTP_MARK} %{{http_code}}\\n' \"$@\"; }}\n")

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def run(self, command: str) -> tuple[int, str, str]:
        out, err = self.workdir / "out", self.workdir / "err"
        self.send(f"{{\n{command}\n}} </dev/null >{shlex.quote(str(out))} 2>{shlex.quote(str(err))}; echo {MARK} $?\n")
        assert self.proc.stdout is not None
        deadline = time.monotonic() + STEP_SECONDS
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no answer in {STEP_SECONDS} s"
            line = self.proc.stdout.readline()
            assert line, "bash ended"
            if line.startswith(MARK):
                return int(line.split()[1]), out.read_text(), err.read_text()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def statuses_of(err: str) -> tuple[list[int], str]:
    codes = [int(code) for code in re.findall(rf"^{HTTP_MARK} (\d{{3}})$", err, re.MULTILINE)]
    rest = re.sub(rf"^{HTTP_MARK} \d{{3}}\n?", "", err, flags=re.MULTILINE)
    return codes, rest


@pytest.fixture(scope="module")
def demo(live_api: LiveApi) -> tuple[str, str]:
    """The README's demo tenant and merchant, seeded in a tenant and merchant of this module's own."""
    from chalicelib.store import get_store
    from devtools.seed import DEMO_MERCHANT, seed_demo

    tenant, merchant = f"wxrd{uuid.uuid4().hex[:12]}", f"rd{uuid.uuid4().hex[:8]}"
    reset_caches()  # settings as the session's stack set them, whatever a module before changed
    seed_demo(tenant, merchant=(merchant, DEMO_MERCHANT[1]))
    assert get_store().merchants.get(merchant) is not None, "no MERCHANT_KEY: the demo merchant was not seeded"
    return tenant, merchant


def localized(text: str, api: LiveApi, tenant: str, merchant: str) -> str:
    text = text.replace(README_URL, api.url).replace(README_TENANT, tenant)
    return re.sub(rf"\b{README_MERCHANT}\b(?!-demo-secret)", merchant, text)


def test_readme_walkthroughs_run_as_written(live_api: LiveApi, demo: tuple[str, str], tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    firsts = [b.code.strip().splitlines()[0] for b in fenced_blocks(text) if b.lang in {"bash", "python"}]
    for prefix in NOT_RUN:  # a skipped block that no longer exists is a stale exemption
        assert any(first.startswith(prefix) for first in firsts), f"no README block starts with {prefix!r}"
    blocks = walkthroughs(localized(text, live_api, *demo))
    promised = sum(1 for block in blocks for step in block.steps if step.promise)
    assert len(blocks) >= 5 and promised >= 25, "the README's walk-throughs were not found"

    shell = Shell(tmp_path)
    try:
        for block in blocks:
            for step in block.steps:
                started = time.monotonic()
                command = step.command
                if SLEEP.match(command):  # the README waits for the event runner: make sure it caught up
                    live_api.stack.runner.drain(timeout=30.0)
                    command = SLEEP.sub("", command, count=1)
                deadline = started + RETRY_SECONDS
                while True:
                    code, output, err = shell.run(command)
                    statuses, err = statuses_of(err)
                    problems = [f"exit status {code}"] if code else []
                    problems += check(step, output, statuses)
                    if not problems or not step.reads_only or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                print(f"README.md:{step.line} ({time.monotonic() - started:.1f} s): {step.command}\n  {output.strip()}")
                assert not problems, (
                    f"README.md:{step.line}: {step.command}\n"
                    f"promised: {step.promise}\noutput: {output}\nstderr: {err}\nproblems: {problems}"
                )
    finally:
        shell.close()


# --- the checker itself: a promise that is not kept must fail ------------------------------


@pytest.mark.parametrize(
    ("promise", "output"),
    [
        ('{"status": "bound"}', '{"status": "bound"}'),
        ('{"pending_fen": 1200, ...}', '{"pending_fen": 1200, "paid_fen": 0}'),
        ('{"code": "<c>", "path": "x?scene=<c>", ...}', '{"code": "AB12", "path": "x?scene=AB12", "n": 1}'),
        (
            '{"items": [{"name": "ben", ...}], "next_cursor": null}',
            '{"items": [{"name": "ben", "id": "u1"}], "next_cursor": null}',
        ),
        ('{"items": [{"a": 1}, ...], ...}', '{"items": [{"a": 1}, {"a": 2}], "next_cursor": "c"}'),
        ('201 {"id": "<o>R01", "order_id": "<o>"}: prose', '{"id": "o9R01", "order_id": "o9"}'),
        ('{"package": "prepay_id=...", "rules": {...}}', '{"package": "prepay_id=abc", "rules": {"min_fen": 1}}'),
        ("3.1.0 <n> paths", "3.1.0 65 paths\n"),
    ],
)
def test_kept_promises_pass(promise: str, output: str) -> None:
    status = 201 if promise.startswith("201") else 200
    assert check(Step(1, "curl", promise), output, [status]) == []


@pytest.mark.parametrize(
    ("promise", "output", "statuses"),
    [
        ('{"status": "bound"}', '{"status": "already_bound"}', [200]),
        ('{"status": "bound"}', '{"status": "bound", "reason": "x"}', [200]),  # no `...`: exactly these
        ('{"pending_fen": 1200, ...}', '{"pending_fen": 1201}', [200]),
        ('{"pending_fen": 1200, ...}', '{"paid_fen": 0}', [200]),
        ('{"pending_fen": 0, ...}', '{"pending_fen": false}', [200]),
        ('{"code": "<c>", "scene": "<c>"}', '{"code": "AB12", "scene": "XY34"}', [200]),
        ('{"items": [{"name": "ben", ...}], ...}', '{"items": []}', [200]),
        ('{"items": [{"name": "ben", ...}], ...}', '{"items": [{"name": "ben"}, {"name": "eve"}]}', [200]),
        ('201 {"state": "requested", ...}', '{"state": "requested"}', [200]),
        ('{"state": "requested", ...}', '{"error": {"code": "x"}, "state": "requested"}', [404]),
        ('{"ok": true}', "not json", [200]),
        ("3.1.0 <n> paths", "3.0.3 65 paths", [200]),
    ],
)
def test_broken_promises_fail(promise: str, output: str, statuses: list[int]) -> None:
    assert check(Step(1, "curl", promise), output, statuses) != []


def test_a_failed_call_fails_without_a_promise() -> None:
    assert check(Step(1, "curl -s -o share.png x"), "", [404]) == ["HTTP 404"]


def test_steps_join_continuations_and_read_promises_below_or_beside() -> None:
    block = Block(
        "bash",
        10,
        "X=1; f() { echo '# not a comment'; }\n"
        "# prose about the next command\n"
        "curl -s a \\\n"
        '     -d "{\\"k\\": 1}"   # -> {"status": "bound"}\n'
        "curl -s b   # what it shows\n"
        '# -> {"a": 1,\n'
        '#     "b": 2}: prose\n'
        "#    more prose\n",
    )
    steps = shell_steps(block)
    assert [(s.line, s.promise) for s in steps] == [
        (11, None),
        (13, '{"status": "bound"}'),
        (15, '{"a": 1, "b": 2}: prose'),
    ]
    assert steps[0].command == "X=1; f() { echo '# not a comment'; }"
    assert steps[1].command == 'curl -s a \\\n     -d "{\\"k\\": 1}"'

"""The real local stack for end-to-end tests: `chalice local` on a free port, the event
runner in a background thread, both on the session's DynamoDB Local and tables."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from devtools.ddb_local import free_port
from devtools.stack import StackConfig, start_chalice, stop_group, wait_for_api
from tests.envutil import environ
from tests.stack import TEST_TENANT, Stack


@dataclass(frozen=True)
class LiveApi:
    url: str
    stack: Stack
    tenant: str = TEST_TENANT

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        headers.setdefault("X-Appid", self.tenant)  # production has no default tenant
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def login(self, name: str) -> tuple[str, str]:
        response = self.call("POST", "/v1/auth/login", json={"code": f"dev-{name}", "appid": self.tenant})
        assert response.status_code == 200, response.text
        body = response.json()
        return body["token"], body["user"]["id"]

    def admin(self, username: str = "owner") -> str:
        response = self.call(
            "POST",
            "/v1/admin/auth/login",
            json={"username": username, "password": f"pw-{username}", "appid": self.tenant},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["token"])


def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for the background runner to deliver what `check` looks for."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def live_api(stack: Stack) -> Iterator[LiveApi]:
    """`chalice local` with production's shape of settings: no default tenant, and the public URL
    WeChat's twins POST their notifications to is the server's own (the event runner delivers
    retries to it over real HTTP: see `tests.stack.chalice_transport`)."""
    config = StackConfig(api_port=free_port(), ddb_port=int(stack.endpoint.rsplit(":", 1)[1]))
    with environ({"PUBLIC_BASE_URL": config.api_url, "DEFAULT_TENANT": ""}):
        proc = start_chalice(config)
    try:
        wait_for_api(config, proc)
        yield LiveApi(url=config.api_url, stack=stack)
    finally:
        stop_group(proc)


@pytest.fixture(scope="module", autouse=True)
def live_runner(live_api: LiveApi) -> Iterator[None]:
    """The event runner in a background thread while a module of live tests runs, and stopped
    after it: the integration tests that share this worker process next drive the runner
    themselves, and a thread still draining streams and queues would race them."""
    stop = threading.Event()
    runner = threading.Thread(target=live_api.stack.runner.run_forever, args=(stop, 0.2), daemon=True)
    runner.start()
    try:
        yield
    finally:
        stop.set()
        runner.join(timeout=30)

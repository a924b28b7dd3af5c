"""Fixtures for the API document suite (tests/api-schema).

The server is started exactly as tests/sdk starts it (that suite's conftest is loaded
here under another module name): a free loopback port, a SQLite file in a temporary
directory or HOOKLINE_SDK_DATABASE_URL, the admin token in HOOKLINE_ADMIN_TOKEN.

`seeded` then creates resources of each kind through the HTTP API, so that path
parameters can name real ones: schemathesis alone would only ever reach the 404s.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional

import pytest


def _load_sdk_conftest():
    path = Path(__file__).resolve().parents[1] / "sdk" / "conftest.py"
    spec = importlib.util.spec_from_file_location("hookline_sdk_conftest", path)
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up in sys.modules while the file runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


sdk = _load_sdk_conftest()

# Pytest collects fixtures and hooks from this module's namespace, wherever they were
# defined: the server, the webhook receiver, and its stderr shown under a failing test.
receiver = sdk.receiver
hookline_tmpdir = sdk.hookline_tmpdir
hookline_server = sdk.hookline_server
pytest_runtest_makereport = sdk.pytest_runtest_makereport


class Api:
    """Plain JSON over urllib with the admin token; any status but 2xx is an error."""

    def __init__(self, server) -> None:
        self.server = server

    def call(self, method: str, path: str, body: Optional[Any] = None) -> Any:
        url = path if path.startswith("http") else self.server.url + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.server.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=sdk.WAIT_TIMEOUT) as response:
                text = response.read()
        except urllib.error.HTTPError as err:
            raise AssertionError(
                f"seeding: {method} {path} answered {err.code}: {err.read()[:500]!r}"
            ) from None
        return json.loads(text) if text else None

    def post(self, path: str, body: Any) -> Any:
        return self.call("POST", path, body)

    def first_of(self, path: str) -> Dict[str, Any]:
        """The first item of a list page, polled for until there is one."""
        deadline = time.monotonic() + sdk.WAIT_TIMEOUT
        while True:
            data = self.call("GET", path)["data"]
            if data:
                return data[0]
            if time.monotonic() >= deadline:
                raise AssertionError(f"seeding: {path} stayed empty for {sdk.WAIT_TIMEOUT:.0f}s")
            time.sleep(0.1)


def seed(api: Api, receiver, label: str) -> Dict[str, str]:
    """One resource of each kind, with a delivered message and a logged ingest request.

    Keyed by the kind a path parameter names (see test_api_schema.KIND_AFTER).
    """
    event_type = f"schema.{label}"
    api.post("/api/v1/event-type", {"name": event_type, "description": f"seeded ({label})"})
    app = api.post("/api/v1/app", {"name": f"api-schema {label}"})["id"]
    hook = receiver.new_path(label)
    endpoint = api.post(f"/api/v1/app/{app}/endpoint", {"url": receiver.url(hook)})["id"]
    msg = api.post(
        f"/api/v1/app/{app}/msg", {"eventType": event_type, "payload": {"seeded": label}}
    )["id"]
    attempt = api.first_of(f"/api/v1/app/{app}/attempt/msg/{msg}")["id"]

    source = api.post(
        "/ingest/api/v1/source", {"name": f"api-schema {label}", "type": "generic-webhook"}
    )
    ingest_endpoint = api.post(
        f"/ingest/api/v1/source/{source['id']}/endpoint",
        {"url": receiver.url(receiver.new_path(f"{label}-ingest"))},
    )["id"]
    request = api.post(source["ingestUrl"], {"seeded": label})["id"]

    # A custom job needs no provider credential.
    job = api.post("/api/v1/job", {"provider": "custom", "appId": app})["id"]
    app_token = api.post(f"/api/v1/auth/app-portal-access/{app}", {})["token"]
    return {
        "app": app,
        "endpoint": endpoint,
        "msg": msg,
        "attempt": attempt,
        "event_type": event_type,
        "source": source["id"],
        "ingest_endpoint": ingest_endpoint,
        "request": request,
        "token": source["ingestUrl"].rsplit("/in/", 1)[1],
        "job": job,
        "app_token": app_token,
    }


class Seeded:
    """Sets of seeded resources by label, each created on first use: `main` for most
    operations, and one of its own for each operation that ends what it names (a delete,
    a cancel), so that none of them takes a resource from under another."""

    def __init__(self, api: Api, receiver, prefix: str = "") -> None:
        self.api = api
        self.receiver = receiver
        self.prefix = prefix
        self.sets: Dict[str, Dict[str, str]] = {}

    def __getitem__(self, label: str) -> Dict[str, str]:
        if label not in self.sets:
            # Operation labels hold characters that names (of event types) may not.
            name = f"{self.prefix}set{len(self.sets)}"
            self.sets[label] = seed(self.api, self.receiver, name)
        return self.sets[label]

    def fresh(self) -> "Seeded":
        """Sets of their own, for a second run over the same server: the first one logged
        out its app token and ended what its deletes and cancels named."""
        return Seeded(self.api, self.receiver, prefix=f"{self.prefix}again")


@pytest.fixture(scope="session")
def seeded(hookline_server, receiver) -> Seeded:
    return Seeded(Api(hookline_server), receiver)

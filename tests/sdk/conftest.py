"""Fixtures for the Svix SDK acceptance suite (tests/sdk).

One `hookline serve` process is started per test session on a free loopback port, with
its SQLite database in a temporary directory, and stopped with SIGTERM at the end. The
official `svix` Python SDK talks to it. A small HTTP receiver, also on loopback, plays
the customer's webhook endpoints: it records every request it gets and answers with a
status chosen per path.

The binary comes from $HOOKLINE_BIN (default target/debug/hookline, relative to the
repository root). A missing binary is a failure, not a skip.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from svix.api import ApplicationIn, ApplicationOut, Svix, SvixOptions

REPO_ROOT = Path(__file__).resolve().parents[2]

# Every wait in the suite is bounded by this (seconds).
WAIT_TIMEOUT = 15.0
HEALTH_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

# The retry schedule the server runs with: three retries, one second apart (the server
# adds +/-20 % jitter). A delivery that keeps failing therefore makes 1 + 3 attempts.
RETRY_SCHEDULE = (1, 1, 1)


def hookline_bin() -> Path:
    raw = os.environ.get("HOOKLINE_BIN", "target/debug/hookline")
    path = Path(raw)
    return path if path.is_absolute() else REPO_ROOT / path


def pick_free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- #
# The webhook receiver
# --------------------------------------------------------------------------- #


@dataclass
class ReceivedRequest:
    """One request as it reached the receiver."""

    method: str
    path: str
    query: str
    headers: List[Tuple[str, str]]
    body: bytes
    received_at: float

    def header(self, name: str) -> Optional[str]:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def header_map(self) -> Dict[str, str]:
        """Headers with lower-cased names (the last one wins on repeats)."""
        return {key.lower(): value for key, value in self.headers}

    @property
    def message_id(self) -> Optional[str]:
        return self.header("webhook-id") or self.header("svix-id")

    @property
    def signature(self) -> Optional[str]:
        return self.header("webhook-signature") or self.header("svix-signature")

    @property
    def timestamp(self) -> Optional[str]:
        return self.header("webhook-timestamp") or self.header("svix-timestamp")

    def json(self):
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: Dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (after recording)


class Receiver:
    """A loopback HTTP server that records requests and answers as scripted per path.

    Paths are matched exactly (query string excluded). Unscripted paths answer 200.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: List[ReceivedRequest] = []
        self._replies: Dict[str, Reply] = {}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _read_body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while True:
                        size_line = self.rfile.readline().strip()
                        size = int(size_line.split(b";")[0], 16)
                        if size == 0:
                            # Trailers, up to the empty line.
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._read_body()
                path, _, query = self.path.partition("?")
                request = ReceivedRequest(
                    method=self.command,
                    path=path,
                    query=query,
                    headers=list(self.headers.items()),
                    body=body,
                    received_at=time.monotonic(),
                )
                reply = receiver._record(request)
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

            def log_message(self, format, *args):  # noqa: A002 - silence stderr logging
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )
        self._thread.start()

    def _record(self, request: ReceivedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            return self._replies.get(request.path, Reply())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- scripting ---------------------------------------------------------- #

    def new_path(self, label: str = "hook") -> str:
        """A fresh path no other test uses."""
        return f"/{label}/{uuid.uuid4().hex[:12]}"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def respond(
        self,
        path: str,
        status: int,
        body: bytes = b"ok",
        headers: Optional[Dict[str, str]] = None,
        delay: float = 0.0,
    ) -> None:
        """Answer every later request to `path` with `status` (and body/headers)."""
        with self._lock:
            self._replies[path] = Reply(
                status=status, body=body, headers=dict(headers or {}), delay=delay
            )

    # -- inspection --------------------------------------------------------- #

    def requests(self, path: Optional[str] = None) -> List[ReceivedRequest]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def wait_for(
        self, path: str, count: int = 1, timeout: float = WAIT_TIMEOUT
    ) -> List[ReceivedRequest]:
        """Poll until `path` got at least `count` requests; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.requests(path)
            if len(got) >= count:
                return got
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"receiver path {path} got {len(got)} request(s) within {timeout:.0f}s, "
                    f"expected at least {count}"
                )
            time.sleep(0.05)

    def assert_stays(self, path: str, count: int, quiet: float = 1.0) -> List[ReceivedRequest]:
        """Check that `path` holds exactly `count` requests and gets no more for `quiet` s.

        This is the one place the suite waits without a condition: proving that
        something does *not* arrive needs a window of time.
        """
        deadline = time.monotonic() + quiet
        while True:
            got = self.requests(path)
            assert len(got) == count, (
                f"receiver path {path} got {len(got)} request(s), expected exactly {count}"
            )
            if time.monotonic() >= deadline:
                return got
            time.sleep(0.05)


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    try:
        yield rec
    finally:
        rec.close()


# --------------------------------------------------------------------------- #
# The server process
# --------------------------------------------------------------------------- #


@dataclass
class HooklineServer:
    url: str
    port: int
    token: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen
    retry_schedule: Tuple[int, ...] = RETRY_SCHEDULE

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as err:
            return f"(cannot read {self.log_path}: {err})"
        return "\n".join(text.splitlines()[-lines:])


# Set once the server is up, so failing tests can show its stderr.
_RUNNING_SERVER: Optional[HooklineServer] = None


def _health_ok(url: str) -> bool:
    # Plain urllib rather than the SDK: this runs before the server is known to be up,
    # and the SDK would retry and raise on connection errors instead of answering yes/no.
    try:
        with urllib.request.urlopen(f"{url}/api/v1/health", timeout=1) as response:
            return response.status == 204
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def _start_server(
    data_dir: Path, token: str, port: int, attempt: int
) -> Tuple[HooklineServer, str]:
    """Start `hookline serve`; return it and '' once healthy, or a reason it did not come up."""
    binary = hookline_bin()
    log_path = data_dir / f"hookline-stderr-{attempt}.log"
    env = {
        key: value
        for key, value in os.environ.items()
        # Keep the caller's logging preferences, nothing else that could change behaviour.
        if not key.startswith("HOOKLINE_") or key in ("HOOKLINE_LOG_LEVEL", "HOOKLINE_LOG_FORMAT")
    }
    env.update(
        {
            "HOOKLINE_LISTEN": f"127.0.0.1:{port}",
            # HOOKLINE_SDK_DATABASE_URL runs the suite on another backend (PostgreSQL).
            "HOOKLINE_DATABASE_URL": os.environ.get("HOOKLINE_SDK_DATABASE_URL")
            or f"sqlite://{data_dir / 'hookline.db'}",
            "HOOKLINE_ADMIN_TOKEN": token,
            "HOOKLINE_ALLOWED_SUBNETS": "127.0.0.0/8",
            "HOOKLINE_RETRY_SCHEDULE": ",".join(str(s) for s in RETRY_SCHEDULE),
            "HOOKLINE_ATTEMPT_TIMEOUT": "5",
        }
    )
    env.setdefault("HOOKLINE_LOG_FORMAT", "text")
    log_file = open(log_path, "wb")
    try:
        process = subprocess.Popen(
            [str(binary), "serve"],
            cwd=data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    finally:
        log_file.close()
    url = f"http://127.0.0.1:{port}"
    server = HooklineServer(url, port, token, data_dir, log_path, process)
    deadline = time.monotonic() + HEALTH_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return server, f"exited with status {process.returncode} before becoming healthy"
        if _health_ok(url):
            return server, ""
        time.sleep(0.1)
    return server, f"GET /api/v1/health did not answer 204 within {HEALTH_TIMEOUT:.0f}s"


def _stop_server(server: HooklineServer) -> None:
    process = server.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture(scope="session")
def hookline_tmpdir(tmp_path_factory) -> Path:
    """The server's working directory: its SQLite database and its stderr log live here."""
    return tmp_path_factory.mktemp("hookline")


@pytest.fixture(scope="session")
def hookline_server(hookline_tmpdir: Path) -> Iterator[HooklineServer]:
    global _RUNNING_SERVER
    binary = hookline_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"hookline binary not found or not executable at {binary}. "
            "Build it (cargo build -p hookline) or point HOOKLINE_BIN at it.",
            pytrace=False,
        )
    # At least 16 characters (the server's rule), and no `.xx` suffix that the SDK
    # would read as a Svix cloud region.
    token = "hookline-sdk-suite-" + secrets.token_hex(16)
    failures = []
    # The free port is only free when we look; another process could take it before the
    # server binds. Try a few ports before giving up.
    for attempt in range(3):
        server, problem = _start_server(hookline_tmpdir, token, pick_free_port(), attempt)
        if not problem:
            break
        exited = server.process.poll() is not None
        _stop_server(server)
        failures.append(
            f"attempt {attempt + 1} on port {server.port}: {problem}\n{server.log_tail()}"
        )
        if not exited:
            # Running but never healthy: another port will not help.
            pytest.fail("hookline serve did not start:\n\n" + "\n\n".join(failures), pytrace=False)
    else:
        pytest.fail(
            "hookline serve did not start:\n\n" + "\n\n".join(failures), pytrace=False
        )
    _RUNNING_SERVER = server
    try:
        yield server
    finally:
        _RUNNING_SERVER = None
        _stop_server(server)


@pytest.fixture
def free_port() -> int:
    return pick_free_port()


# --------------------------------------------------------------------------- #
# SDK clients and per-test data
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="session")
def svix_for(hookline_server: HooklineServer):
    """Build an SDK client for any token, pointed at the test server."""

    def build(token: str) -> Svix:
        return Svix(token, SvixOptions(server_url=hookline_server.url))

    return build


@pytest.fixture(scope="session")
def svix(hookline_server: HooklineServer, svix_for) -> Svix:
    """The SDK client with the admin token."""
    return svix_for(hookline_server.token)


@pytest.fixture
def app(svix: Svix, request) -> ApplicationOut:
    """A fresh application for one test, so tests never see each other's data."""
    name = f"sdk-{request.node.name}"[:200]
    return svix.application.create(ApplicationIn(name=name))


# --------------------------------------------------------------------------- #
# Show the server's stderr under every failing test
# --------------------------------------------------------------------------- #


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _RUNNING_SERVER is not None:
        report.sections.append(
            ("hookline serve stderr (last 80 lines)", _RUNNING_SERVER.log_tail())
        )

"""Cross-language interop checks: Hookline's signatures against the real libraries.

Every test here drives the `hookline` binary (sign / verify) and checks the result
with, or against, the reference Python implementations: svix, standardwebhooks,
openai and stripe. Bodies are non-ASCII JSON and always travel through
`--body-file`, so a re-encoding or newline bug shows up as a mismatch.

Run with:  .venv/bin/python -m pytest tests/interop -q
The binary comes from $HOOKLINE_BIN (default target/debug/hookline, relative to
the repository root). A missing binary is a failure, not a skip.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

import openai
import standardwebhooks.webhooks as stdwh
import stripe
import svix.webhooks as svixwh

# --------------------------------------------------------------------------- #
# Locating the binary
# --------------------------------------------------------------------------- #

REPO_ROOT = Path(__file__).resolve().parents[2]


def _hookline_path() -> Path:
    raw = os.environ.get("HOOKLINE_BIN", "target/debug/hookline")
    path = Path(raw)
    return path if path.is_absolute() else REPO_ROOT / path


HOOKLINE = _hookline_path()

if not (HOOKLINE.is_file() and os.access(HOOKLINE, os.X_OK)):
    pytest.fail(
        f"hookline binary not found or not executable at {HOOKLINE}. "
        "Build it (cargo build -p hookline) or point HOOKLINE_BIN at it.",
        pytrace=False,
    )

# --------------------------------------------------------------------------- #
# Fixtures: secrets, ids, bodies
# --------------------------------------------------------------------------- #


def _whsec(label: str, size: int = 32) -> str:
    """A deterministic `whsec_` secret: padded standard base64 of `size` bytes."""
    raw = hashlib.sha256(label.encode()).digest()[:size]
    return "whsec_" + base64.b64encode(raw).decode()


# Svix issues 24-byte secrets (32 base64 chars, no padding); use that shape too.
SECRET_A = _whsec("hookline-interop-a", 24)
SECRET_B = _whsec("hookline-interop-b", 32)
SECRET_C = _whsec("hookline-interop-c", 32)  # never used to sign: the "wrong" key

# Stripe secrets look like whsec_ but are used as raw UTF-8 key bytes.
# The first two are deliberately also valid base64, so a verifier that wrongly
# base64-decodes them still produces a key and fails on the signature itself.
STRIPE_A = "whsec_StripeInteropAlpha0123456789abcdefgh"
STRIPE_B = "whsec_StripeInteropBravo0123456789abcdefgh"
STRIPE_C = "whsec_StripeInteropCharlie012345678abcdefgh"

# OpenAI also accepts a secret without the prefix, used as raw UTF-8 bytes.
OPENAI_RAW = "hookline-openai-raw-secret-0123456789abcdef"

MSG_ID = "msg_2bF9XhQvYk0Zr1aTnUcW7pLd"
FIXED_TS = 1_700_000_000


def _event_body(pretty: bool = False) -> bytes:
    event = {
        "id": "evt_hookline_interop_1",
        "object": "event",
        "type": "response.completed",
        "created_at": FIXED_TS,
        "data": {
            "id": "resp_abc123",
            "note": "héllo ✓",
            "hook": "🪝 naïve café – “quoted” ",
            "escaped": "tab\there, slash \\ and \"quotes\"",
        },
    }
    if pretty:
        # Indentation, CRLF-free newlines and a trailing newline: any trimming
        # or whitespace normalisation on either side breaks the signature.
        return (json.dumps(event, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


BODY = _event_body()
BODY_PRETTY = _event_body(pretty=True)
BODIES = pytest.mark.parametrize("body", [BODY, BODY_PRETTY], ids=["compact", "pretty"])


def _tamper(body: bytes) -> bytes:
    """Flip exactly one ASCII byte (keeps the body valid UTF-8 and valid JSON)."""
    pos = body.index(b"resp_abc123") + len("resp_")
    assert body[pos : pos + 1] == b"a"
    return body[:pos] + b"b" + body[pos + 1 :]


def test_fixture_bodies_are_what_we_think():
    # The bodies must really exercise multi-byte UTF-8 (2, 3 and 4 byte sequences).
    text = BODY.decode("utf-8")
    assert "é" in text and "✓" in text and "🪝" in text
    assert len(BODY) > len(text)
    assert BODY_PRETTY.endswith(b"\n")
    assert _tamper(BODY) != BODY and len(_tamper(BODY)) == len(BODY)


# --------------------------------------------------------------------------- #
# Driving the binary
# --------------------------------------------------------------------------- #


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stdout + "\n" + self.stderr).strip()

    @property
    def is_valid(self) -> bool:
        return self.code == 0 and self.stdout.strip() == "valid"

    def describe(self) -> str:
        return f"exit {self.code}\nstdout: {self.stdout!r}\nstderr: {self.stderr!r}"


class Hookline:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self._n = 0

    def _body_file(self, body: bytes) -> Path:
        self._n += 1
        path = self.workdir / f"body-{self._n}.bin"
        path.write_bytes(body)
        return path

    def run(self, args: list[str], body: bytes) -> Result:
        cmd = [str(HOOKLINE), *args, "--body-file", str(self._body_file(body))]
        proc = subprocess.run(cmd, capture_output=True, timeout=15, stdin=subprocess.DEVNULL)
        return Result(
            proc.returncode,
            proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"),
        )

    @staticmethod
    def _secret_args(secrets: list[str] | str) -> list[str]:
        if isinstance(secrets, str):
            secrets = [secrets]
        args: list[str] = []
        for s in secrets:
            args += ["--secret", s]
        return args

    def sign(
        self,
        scheme: str,
        secrets: list[str] | str,
        body: bytes,
        *,
        msg_id: str | None = MSG_ID,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        args = ["sign", "--scheme", scheme, *self._secret_args(secrets)]
        if msg_id is not None:
            args += ["--id", msg_id]
        if timestamp is not None:
            args += ["--timestamp", str(timestamp)]
        res = self.run(args, body)
        assert res.code == 0, f"hookline sign failed\n{res.describe()}"
        return parse_headers(res.stdout)

    def verify(
        self,
        scheme: str,
        secrets: list[str] | str,
        headers: dict[str, str],
        body: bytes,
        *,
        now: int | None = None,
        tolerance: int | None = None,
    ) -> Result:
        args = ["verify", "--scheme", scheme, *self._secret_args(secrets)]
        for name, value in headers.items():
            args += ["-H", f"{name}: {value}"]
        if now is not None:
            args += ["--now", str(now)]
        if tolerance is not None:
            args += ["--tolerance", str(tolerance)]
        return self.run(args, body)


def parse_headers(text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(": ")
        assert sep, f"hookline sign printed a line that is not `name: value`: {line!r}"
        assert name == name.lower(), f"header name is not lowercase: {name!r}"
        assert name not in headers, f"header {name!r} printed twice"
        headers[name] = value
    return headers


@pytest.fixture
def hl(tmp_path: Path) -> Hookline:
    return Hookline(tmp_path)


def assert_valid(res: Result) -> None:
    assert res.is_valid, f"expected hookline verify to print `valid` and exit 0\n{res.describe()}"


def assert_rejected(res: Result, *needles: str) -> None:
    assert res.code == 1, f"expected exit 1 (verification failure)\n{res.describe()}"
    assert res.stdout.strip() != "valid"
    text = res.output.lower()
    for needle in needles:
        assert needle.lower() in text, f"expected {needle!r} in the reason\n{res.describe()}"


def now_ts() -> int:
    return int(time.time())


def utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


# --------------------------------------------------------------------------- #
# Reference computations written from the libraries' algorithms
# --------------------------------------------------------------------------- #


def _b64_hmac(key: bytes, data: bytes) -> str:
    return base64.b64encode(hmac.new(key, data, hashlib.sha256).digest()).decode()


def standard_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def openai_signature(secret: str, msg_id: str, ts: int, body: bytes) -> str:
    """What openai.lib._webhooks computes: whsec_ -> base64 key, else raw UTF-8 key."""
    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    return "v1," + _b64_hmac(key, f"{msg_id}.{ts}.".encode() + body)


# --------------------------------------------------------------------------- #
# Pinning the library clocks (for tolerance cross-checks)
# --------------------------------------------------------------------------- #


def freeze_standardwebhooks(monkeypatch: pytest.MonkeyPatch, now: int) -> None:
    """standardwebhooks (and svix, which wraps it) read datetime.now(); pin it."""
    real = stdwh.datetime

    class FrozenDatetime(real):  # type: ignore[misc, valid-type]
        @classmethod
        def now(cls, tz=None):
            return real.fromtimestamp(now, tz=tz)

    monkeypatch.setattr(stdwh, "datetime", FrozenDatetime)


def freeze_module_time(monkeypatch: pytest.MonkeyPatch, module_name: str, now: int) -> None:
    """openai and stripe call time.time() through their module's `time` global."""
    module = importlib.import_module(module_name)
    assert hasattr(module, "time"), f"{module_name} no longer imports `time`; update the test"
    monkeypatch.setattr(module, "time", SimpleNamespace(time=lambda: float(now)))


STRIPE_WEBHOOK_MODULE = stripe.WebhookSignature.__module__
OPENAI_WEBHOOK_MODULE = "openai.lib._webhooks"


def stripe_sign(body: bytes, secret: str, ts: int) -> str:
    """Stripe's own test-header helper (renamed across stripe-python versions)."""
    ws = stripe.WebhookSignature
    if hasattr(ws, "generate_signature_header"):  # stripe-python >= ~13
        return ws.generate_signature_header(body.decode("utf-8"), secret, timestamp=ts)
    if hasattr(stripe.Webhook, "generate_test_header_string"):  # pragma: no cover
        return stripe.Webhook.generate_test_header_string(
            payload=body.decode("utf-8"), secret=secret, timestamp=ts
        )
    raise AssertionError("installed stripe offers no signature-header helper")  # pragma: no cover


def stripe_v1(header: str) -> list[str]:
    return [part[3:] for part in header.split(",") if part.startswith("v1=")]


def openai_client(secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-interop-not-used", webhook_secret=secret)


# =========================================================================== #
# 0. Output shape of `hookline sign`
# =========================================================================== #


def test_standard_sign_output_shape_and_known_answer(hl: Hookline):
    headers = hl.sign("standard", SECRET_B, BODY, timestamp=FIXED_TS)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == MSG_ID
    assert headers["webhook-timestamp"] == str(FIXED_TS)
    expected = "v1," + _b64_hmac(standard_key(SECRET_B), f"{MSG_ID}.{FIXED_TS}.".encode() + BODY)
    assert headers["webhook-signature"] == expected


def test_svix_sign_uses_svix_header_names(hl: Hookline):
    headers = hl.sign("svix", SECRET_A, BODY, timestamp=FIXED_TS)
    assert set(headers) == {"svix-id", "svix-timestamp", "svix-signature"}
    assert headers["svix-signature"].startswith("v1,")


def test_stripe_sign_output_shape(hl: Hookline):
    headers = hl.sign("stripe", STRIPE_A, BODY, timestamp=FIXED_TS)
    assert re.fullmatch(rf"t={FIXED_TS},v1=[0-9a-f]{{64}}", headers["stripe-signature"]), headers


# =========================================================================== #
# 1. Hookline signs, the libraries verify
# =========================================================================== #


@BODIES
def test_standard_signed_verifies_with_standardwebhooks(hl: Hookline, body: bytes):
    headers = hl.sign("standard", SECRET_B, body, timestamp=now_ts())
    wh = stdwh.Webhook(SECRET_B)
    assert wh.verify(body, headers) == json.loads(body)  # bytes payload
    assert wh.verify(body.decode("utf-8"), headers) == json.loads(body)  # str payload
    with pytest.raises(stdwh.WebhookVerificationError):
        wh.verify(_tamper(body), headers)


@BODIES
def test_svix_signed_verifies_with_svix(hl: Hookline, body: bytes):
    headers = hl.sign("svix", SECRET_A, body, timestamp=now_ts())
    assert set(headers) == {"svix-id", "svix-timestamp", "svix-signature"}
    wh = svixwh.Webhook(SECRET_A)
    assert wh.verify(body, headers) is None  # raises on failure
    with pytest.raises(svixwh.WebhookVerificationError):
        wh.verify(_tamper(body), headers)
    with pytest.raises(svixwh.WebhookVerificationError):
        svixwh.Webhook(SECRET_C).verify(body, headers)


def test_standard_headers_verify_with_svix(hl: Hookline):
    # svix.Webhook.verify falls back to webhook-* when svix-* are absent.
    headers = hl.sign("standard", SECRET_A, BODY, timestamp=now_ts())
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    svixwh.Webhook(SECRET_A).verify(BODY, headers)
    with pytest.raises(svixwh.WebhookVerificationError):
        svixwh.Webhook(SECRET_A).verify(_tamper(BODY), headers)


@pytest.mark.parametrize("secret", [SECRET_B, OPENAI_RAW], ids=["whsec", "raw"])
@BODIES
def test_openai_signed_unwraps_with_openai_sdk(hl: Hookline, body: bytes, secret: str):
    headers = hl.sign("openai", secret, body, timestamp=now_ts())
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    client = openai_client(secret)
    event = client.webhooks.unwrap(body, headers)
    assert event.type == "response.completed"
    assert event.id == "evt_hookline_interop_1"
    client.webhooks.verify_signature(body.decode("utf-8"), headers)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(_tamper(body), headers)


def test_openai_raw_secret_is_not_base64_decoded(hl: Hookline):
    # The raw secret must be used as UTF-8 bytes: the signature must equal that
    # computation and must NOT verify under the SDK when given a different raw key.
    ts = now_ts()
    headers = hl.sign("openai", OPENAI_RAW, BODY, timestamp=ts)
    assert headers["webhook-signature"] == openai_signature(OPENAI_RAW, MSG_ID, ts, BODY)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        openai_client(OPENAI_RAW + "x").webhooks.unwrap(BODY, headers)


@BODIES
def test_stripe_signed_constructs_event_with_stripe(hl: Hookline, body: bytes):
    headers = hl.sign("stripe", STRIPE_A, body, timestamp=now_ts())
    sig = headers["stripe-signature"]
    event = stripe.Webhook.construct_event(body, sig, STRIPE_A)
    assert event.id == "evt_hookline_interop_1"
    assert event["data"]["note"] == "héllo ✓"
    assert stripe.WebhookSignature.verify_header(body, sig, STRIPE_A, 300) is True
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(_tamper(body), sig, STRIPE_A)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, sig, STRIPE_C)


# =========================================================================== #
# 2. The libraries sign, Hookline verifies
# =========================================================================== #


@BODIES
def test_svix_library_signature_verifies_in_hookline(hl: Hookline, body: bytes):
    ts = FIXED_TS
    sig = svixwh.Webhook(SECRET_A).sign(MSG_ID, utc(ts), body.decode("utf-8"))
    svix_headers = {"svix-id": MSG_ID, "svix-timestamp": str(ts), "svix-signature": sig}
    assert_valid(hl.verify("svix", SECRET_A, svix_headers, body, now=ts))
    # The same signature under Standard Webhooks names is valid for scheme standard.
    std_headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(ts), "webhook-signature": sig}
    assert_valid(hl.verify("standard", SECRET_A, std_headers, body, now=ts))
    assert_rejected(hl.verify("svix", SECRET_A, svix_headers, _tamper(body), now=ts), "no signature matched")


@BODIES
def test_standardwebhooks_library_signature_verifies_in_hookline(hl: Hookline, body: bytes):
    ts = FIXED_TS
    sig = stdwh.Webhook(SECRET_B).sign(MSG_ID, utc(ts), body.decode("utf-8"))
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(ts), "webhook-signature": sig}
    assert_valid(hl.verify("standard", SECRET_B, headers, body, now=ts))
    # OpenAI uses the same algorithm for whsec_ secrets.
    assert_valid(hl.verify("openai", SECRET_B, headers, body, now=ts))
    # Replicate too, and it skips the timestamp check by default.
    assert_valid(hl.verify("replicate", SECRET_B, headers, body, now=ts + 86_400))
    assert_rejected(hl.verify("standard", SECRET_C, headers, body, now=ts), "no signature matched")


def test_replicate_tolerance_applies_only_when_asked(hl: Hookline):
    ts = FIXED_TS
    sig = stdwh.Webhook(SECRET_B).sign(MSG_ID, utc(ts), BODY.decode("utf-8"))
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(ts), "webhook-signature": sig}
    assert_valid(hl.verify("replicate", SECRET_B, headers, BODY, now=ts + 86_400))
    assert_rejected(
        hl.verify("replicate", SECRET_B, headers, BODY, now=ts + 86_400, tolerance=300), "too old"
    )


@BODIES
def test_stripe_library_signature_verifies_in_hookline(hl: Hookline, body: bytes):
    ts = FIXED_TS
    sig = stripe_sign(body, STRIPE_A, ts)
    assert re.fullmatch(rf"t={ts},v1=[0-9a-f]{{64}}", sig)
    headers = {"stripe-signature": sig}
    assert_valid(hl.verify("stripe", STRIPE_A, headers, body, now=ts))
    assert_rejected(hl.verify("stripe", STRIPE_A, headers, _tamper(body), now=ts), "no signature matched")
    assert_rejected(hl.verify("stripe", STRIPE_C, headers, body, now=ts), "no signature matched")


@pytest.mark.parametrize("secret", [SECRET_B, OPENAI_RAW], ids=["whsec", "raw"])
def test_openai_style_signature_verifies_in_hookline(hl: Hookline, monkeypatch, secret: str):
    # The openai SDK has no signer; compute the signature by its algorithm, and
    # first prove the SDK itself accepts that computation.
    ts = FIXED_TS
    headers = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(ts),
        "webhook-signature": openai_signature(secret, MSG_ID, ts, BODY),
    }
    freeze_module_time(monkeypatch, OPENAI_WEBHOOK_MODULE, ts)
    assert openai_client(secret).webhooks.unwrap(BODY, headers).id == "evt_hookline_interop_1"

    assert_valid(hl.verify("openai", secret, headers, BODY, now=ts))
    assert_rejected(hl.verify("openai", secret, headers, _tamper(BODY), now=ts), "no signature matched")


# =========================================================================== #
# 3. Key rotation
# =========================================================================== #


def test_rotation_hookline_signs_with_two_keys(hl: Hookline):
    headers = hl.sign("standard", [SECRET_A, SECRET_B], BODY, timestamp=now_ts())
    parts = headers["webhook-signature"].split(" ")
    assert len(parts) == 2 and all(p.startswith("v1,") for p in parts), headers

    for secret in (SECRET_A, SECRET_B):
        assert stdwh.Webhook(secret).verify(BODY, headers) == json.loads(BODY)
        svixwh.Webhook(secret).verify(BODY, headers)
        openai_client(secret).webhooks.unwrap(BODY, headers)
    with pytest.raises(stdwh.WebhookVerificationError):
        stdwh.Webhook(SECRET_C).verify(BODY, headers)


def test_rotation_hookline_svix_scheme_two_keys(hl: Hookline):
    headers = hl.sign("svix", [SECRET_A, SECRET_B], BODY, timestamp=now_ts())
    assert len(headers["svix-signature"].split(" ")) == 2
    for secret in (SECRET_A, SECRET_B):
        svixwh.Webhook(secret).verify(BODY, headers)
    with pytest.raises(svixwh.WebhookVerificationError):
        svixwh.Webhook(SECRET_C).verify(BODY, headers)


def test_rotation_hookline_stripe_two_keys(hl: Hookline):
    ts = now_ts()
    sig = hl.sign("stripe", [STRIPE_A, STRIPE_B], BODY, timestamp=ts)["stripe-signature"]
    assert sig.startswith(f"t={ts},")
    assert len(stripe_v1(sig)) == 2, sig
    for secret in (STRIPE_A, STRIPE_B):
        assert stripe.WebhookSignature.verify_header(BODY, sig, secret, 300) is True
        assert stripe.Webhook.construct_event(BODY, sig, secret).id == "evt_hookline_interop_1"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(BODY, sig, STRIPE_C, 300)


@pytest.mark.parametrize("order", ["ab", "ba"])
def test_rotation_library_header_with_two_signatures(hl: Hookline, order: str):
    ts = FIXED_TS
    body_str = BODY.decode("utf-8")
    sig_a = svixwh.Webhook(SECRET_A).sign(MSG_ID, utc(ts), body_str)
    sig_b = stdwh.Webhook(SECRET_B).sign(MSG_ID, utc(ts), body_str)
    joined = f"{sig_a} {sig_b}" if order == "ab" else f"{sig_b} {sig_a}"

    std = {"webhook-id": MSG_ID, "webhook-timestamp": str(ts), "webhook-signature": joined}
    svx = {"svix-id": MSG_ID, "svix-timestamp": str(ts), "svix-signature": joined}
    for secret in (SECRET_A, SECRET_B):
        assert_valid(hl.verify("standard", secret, std, BODY, now=ts))
        assert_valid(hl.verify("svix", secret, svx, BODY, now=ts))
        assert_valid(hl.verify("openai", secret, std, BODY, now=ts))
    assert_rejected(hl.verify("standard", SECRET_C, std, BODY, now=ts), "no signature matched")


def test_rotation_library_stripe_header_with_two_signatures(hl: Hookline):
    ts = FIXED_TS
    v1_a = stripe_v1(stripe_sign(BODY, STRIPE_A, ts))
    v1_b = stripe_v1(stripe_sign(BODY, STRIPE_B, ts))
    header = f"t={ts},v1={v1_a[0]},v1={v1_b[0]}"
    # stripe itself accepts this combined header with either key.
    for secret in (STRIPE_A, STRIPE_B):
        assert stripe.WebhookSignature.verify_header(BODY, header, secret, None) is True
        assert_valid(hl.verify("stripe", secret, {"stripe-signature": header}, BODY, now=ts))
    assert_rejected(
        hl.verify("stripe", STRIPE_C, {"stripe-signature": header}, BODY, now=ts), "no signature matched"
    )


def test_rotation_verify_side_accepts_any_configured_key(hl: Hookline):
    ts = FIXED_TS
    sig = stdwh.Webhook(SECRET_B).sign(MSG_ID, utc(ts), BODY.decode("utf-8"))
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(ts), "webhook-signature": sig}
    assert_valid(hl.verify("standard", [SECRET_C, SECRET_B], headers, BODY, now=ts))
    assert_rejected(hl.verify("standard", [SECRET_C, SECRET_A], headers, BODY, now=ts), "no signature matched")


# =========================================================================== #
# 4. Tolerance edges, cross-checked with the libraries' own clocks pinned
# =========================================================================== #

# age = now - timestamp, in seconds; the default window is 300 s both ways.
STANDARD_EDGES = [
    (300, None),
    (301, "too old"),
    (-300, None),
    (-301, "too new"),
]


@pytest.mark.parametrize("age,reason", STANDARD_EDGES, ids=[f"age{a:+d}" for a, _ in STANDARD_EDGES])
def test_standard_tolerance_edges_match_libraries(hl: Hookline, monkeypatch, age: int, reason):
    ts = FIXED_TS
    now = ts + age
    sig = stdwh.Webhook(SECRET_B).sign(MSG_ID, utc(ts), BODY.decode("utf-8"))
    std = {"webhook-id": MSG_ID, "webhook-timestamp": str(ts), "webhook-signature": sig}
    svx = {"svix-id": MSG_ID, "svix-timestamp": str(ts), "svix-signature": sig}

    # The libraries, with their clocks pinned to `now`.
    freeze_standardwebhooks(monkeypatch, now)
    freeze_module_time(monkeypatch, OPENAI_WEBHOOK_MODULE, now)
    library_checks = {
        "standardwebhooks": lambda: stdwh.Webhook(SECRET_B).verify(BODY, std),
        "svix": lambda: svixwh.Webhook(SECRET_B).verify(BODY, svx),
        "openai": lambda: openai_client(SECRET_B).webhooks.verify_signature(BODY, std),
    }
    for name, check in library_checks.items():
        try:
            check()
            outcome = None
        except (stdwh.WebhookVerificationError, openai.InvalidWebhookSignatureError) as exc:
            outcome = str(exc)
        if reason is None:
            assert outcome is None, f"{name} rejected age {age}: {outcome}"
        else:
            assert outcome is not None, f"{name} accepted age {age}"
            assert reason in outcome.lower(), f"{name}: {outcome}"

    # Hookline must draw the line in the same place, for every Standard Webhooks scheme.
    for scheme, headers in (("standard", std), ("svix", svx), ("openai", std)):
        res = hl.verify(scheme, SECRET_B, headers, BODY, now=now)
        if reason is None:
            assert_valid(res)
        else:
            assert_rejected(res, reason)


STRIPE_EDGES = [
    (300, None),
    (301, "too old"),
    (-10_000, None),  # stripe never rejects timestamps from the future
]


@pytest.mark.parametrize("age,reason", STRIPE_EDGES, ids=[f"age{a:+d}" for a, _ in STRIPE_EDGES])
def test_stripe_tolerance_edges_match_library(hl: Hookline, monkeypatch, age: int, reason):
    ts = FIXED_TS
    now = ts + age
    sig = stripe_sign(BODY, STRIPE_A, ts)

    freeze_module_time(monkeypatch, STRIPE_WEBHOOK_MODULE, now)
    if reason is None:
        assert stripe.WebhookSignature.verify_header(BODY, sig, STRIPE_A, tolerance=300) is True
        assert stripe.Webhook.construct_event(BODY, sig, STRIPE_A, tolerance=300).id
    else:
        with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
            stripe.WebhookSignature.verify_header(BODY, sig, STRIPE_A, tolerance=300)

    res = hl.verify("stripe", STRIPE_A, {"stripe-signature": sig}, BODY, now=now)
    if reason is None:
        assert_valid(res)
    else:
        assert_rejected(res, reason)


def test_custom_tolerance_flag(hl: Hookline):
    ts = FIXED_TS
    sig = stdwh.Webhook(SECRET_B).sign(MSG_ID, utc(ts), BODY.decode("utf-8"))
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(ts), "webhook-signature": sig}
    assert_rejected(hl.verify("standard", SECRET_B, headers, BODY, now=ts + 3000), "too old")
    assert_valid(hl.verify("standard", SECRET_B, headers, BODY, now=ts + 3000, tolerance=3600))
    assert_rejected(hl.verify("standard", SECRET_B, headers, BODY, now=ts + 61, tolerance=60), "too old")


# =========================================================================== #
# 5. Negative cases: each failure names its own reason
# =========================================================================== #


@pytest.fixture
def standard_request() -> tuple[dict[str, str], int]:
    ts = FIXED_TS
    sig = stdwh.Webhook(SECRET_B).sign(MSG_ID, utc(ts), BODY.decode("utf-8"))
    return {"webhook-id": MSG_ID, "webhook-timestamp": str(ts), "webhook-signature": sig}, ts


def test_negative_reasons_are_distinct(hl: Hookline, standard_request):
    headers, ts = standard_request
    assert_valid(hl.verify("standard", SECRET_B, headers, BODY, now=ts))  # control

    tampered = hl.verify("standard", SECRET_B, headers, _tamper(BODY), now=ts)
    wrong_key = hl.verify("standard", SECRET_C, headers, BODY, now=ts)
    missing = hl.verify(
        "standard", SECRET_B, {k: v for k, v in headers.items() if k != "webhook-signature"}, BODY, now=ts
    )
    stale = hl.verify("standard", SECRET_B, headers, BODY, now=ts + 3600)

    assert_rejected(tampered, "no signature matched")
    assert_rejected(wrong_key, "no signature matched")
    assert_rejected(missing, "missing header webhook-signature")
    assert_rejected(stale, "too old")
    # A wrong key and a changed body cannot be told apart with HMAC, but each of
    # the three failure kinds must be reported differently.
    assert "no signature matched" not in missing.output.lower()
    assert "missing header" not in tampered.output.lower()
    assert "too old" not in wrong_key.output.lower()


@pytest.mark.parametrize("dropped", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_missing_standard_header_is_named(hl: Hookline, standard_request, dropped: str):
    headers, ts = standard_request
    partial = {k: v for k, v in headers.items() if k != dropped}
    assert_rejected(hl.verify("standard", SECRET_B, partial, BODY, now=ts), f"missing header {dropped}")


def test_missing_stripe_header_is_named(hl: Hookline):
    assert_rejected(hl.verify("stripe", STRIPE_A, {}, BODY, now=FIXED_TS), "missing header stripe-signature")


def test_stripe_tampered_body_rejected(hl: Hookline):
    sig = stripe_sign(BODY, STRIPE_A, FIXED_TS)
    assert_rejected(
        hl.verify("stripe", STRIPE_A, {"stripe-signature": sig}, _tamper(BODY), now=FIXED_TS),
        "no signature matched",
    )


def test_malformed_secret_is_reported(hl: Hookline, standard_request):
    headers, ts = standard_request
    res = hl.verify("standard", "whsec_!!!", headers, BODY, now=ts)
    assert res.code in (1, 2), res.describe()
    assert res.stdout.strip() != "valid"
    assert "secret" in res.output.lower(), res.describe()

    signed = hl.run(["sign", "--scheme", "standard", "--secret", "whsec_!!!", "--id", MSG_ID], BODY)
    assert signed.code in (1, 2), signed.describe()
    assert "secret" in signed.output.lower(), signed.describe()
    assert "webhook-signature" not in signed.stdout


def test_body_from_stdin_matches_body_file(tmp_path: Path):
    # Contract: with no --body-file the body is read from stdin, byte for byte.
    proc = subprocess.run(
        [str(HOOKLINE), "sign", "--scheme", "standard", "--secret", SECRET_B, "--id", MSG_ID,
         "--timestamp", str(FIXED_TS)],
        input=BODY_PRETTY, capture_output=True, timeout=15,
    )
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    headers = parse_headers(proc.stdout.decode("utf-8"))
    expected = stdwh.Webhook(SECRET_B).sign(MSG_ID, utc(FIXED_TS), BODY_PRETTY.decode("utf-8"))
    assert headers["webhook-signature"] == expected


# =========================================================================== #
# Schemes with no library in this suite: checked against the published algorithms
# =========================================================================== #

GITHUB_SECRET = "github-interop-secret-0123456789abcdef"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SHOPIFY_SECRET = "shpss_interop0123456789abcdef0123456789"
HF_SECRET = "hf-interop-secret-0123456789abcdef"


def test_github_signature_known_answer(hl: Hookline):
    expected = "sha256=" + hmac.new(GITHUB_SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    headers = hl.sign("github", GITHUB_SECRET, BODY, msg_id="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert headers["x-hub-signature-256"] == expected
    assert headers.get("x-github-delivery") == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    request = {"x-hub-signature-256": expected, "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    assert_valid(hl.verify("github", GITHUB_SECRET, request, BODY))
    assert_rejected(hl.verify("github", GITHUB_SECRET, request, _tamper(BODY)), "no signature matched")


def test_slack_signature_known_answer(hl: Hookline):
    ts = FIXED_TS
    expected = "v0=" + hmac.new(
        SLACK_SECRET.encode(), f"v0:{ts}:".encode() + BODY, hashlib.sha256
    ).hexdigest()
    headers = hl.sign("slack", SLACK_SECRET, BODY, msg_id=None, timestamp=ts)
    assert headers["x-slack-signature"] == expected
    assert headers["x-slack-request-timestamp"] == str(ts)
    request = {"x-slack-signature": expected, "x-slack-request-timestamp": str(ts)}
    assert_valid(hl.verify("slack", SLACK_SECRET, request, BODY, now=ts + 300))
    assert_rejected(hl.verify("slack", SLACK_SECRET, request, BODY, now=ts + 301), "too old")
    assert_rejected(hl.verify("slack", SLACK_SECRET, request, _tamper(BODY), now=ts), "no signature matched")


def test_shopify_signature_known_answer(hl: Hookline):
    expected = base64.b64encode(hmac.new(SHOPIFY_SECRET.encode(), BODY, hashlib.sha256).digest()).decode()
    headers = hl.sign("shopify", SHOPIFY_SECRET, BODY, msg_id=None)
    assert headers["x-shopify-hmac-sha256"] == expected
    request = {"x-shopify-hmac-sha256": expected}
    assert_valid(hl.verify("shopify", SHOPIFY_SECRET, request, BODY))
    assert_rejected(hl.verify("shopify", SHOPIFY_SECRET, request, _tamper(BODY)), "no signature matched")


def test_huggingface_shared_secret(hl: Hookline):
    headers = hl.sign("huggingface", HF_SECRET, BODY, msg_id=None)
    assert headers["x-webhook-secret"] == HF_SECRET
    assert_valid(hl.verify("huggingface", HF_SECRET, {"x-webhook-secret": HF_SECRET}, BODY))
    res = hl.verify("huggingface", HF_SECRET, {"x-webhook-secret": HF_SECRET + "x"}, BODY)
    assert res.code == 1 and not res.is_valid, res.describe()

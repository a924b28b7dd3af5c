"""Acceptance suite: Hookline's receiving side, through the official Svix SDK's `ingest`
client and real provider libraries.

Sources and their forwarding endpoints are managed with `svix.ingest` exactly as a Svix
user would. Providers are played by the real signing libraries: Python `svix` and
`standardwebhooks`, Node `stripe` (generateTestHeaderString) and `@octokit/webhooks-methods`
(sign) through tests/interop/sign.mjs; Slack, Shopify, Hugging Face and the generic schemes
are built from their documented formats. Forwarded requests land on the loopback receiver
of conftest.py and are verified there with the real libraries.

Hookline's own source types (`standard-webhooks`, `hugging-face`, `hmac`, `basic-auth`,
`bearer`) are not in the SDK's models, so those sources are created over plain HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import httpx
import pytest
import standardwebhooks

from svix.api import (
    IngestEndpointHeadersIn,
    IngestEndpointIn,
    IngestEndpointSecretIn,
    IngestEndpointTransformationPatch,
    IngestEndpointUpsertIn,
    IngestSourceConsumerPortalAccessIn,
    IngestSourceIn,
    MessageListOptions,
    Svix,
)
from svix.exceptions import HttpError
from svix.models import GithubConfig, ShopifyConfig, SlackConfig, StripeConfig, SvixConfig
from svix.webhooks import Webhook

if TYPE_CHECKING:
    from conftest import HooklineServer, ReceivedRequest, Receiver

REPO_ROOT = Path(__file__).resolve().parents[2]
SIGN_MJS = REPO_ROOT / "tests" / "interop" / "sign.mjs"
WAIT_TIMEOUT = 15.0


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def node_sign(kind: str, secret: str, body: bytes, timestamp: Optional[int] = None) -> str:
    args = ["node", str(SIGN_MJS), kind, secret]
    if timestamp is not None:
        args.append(str(timestamp))
    done = subprocess.run(args, input=body, capture_output=True, check=True, timeout=30)
    return done.stdout.decode()


def http(server: "HooklineServer") -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=10.0,
    )


def create_source_raw(server: "HooklineServer", source_type: str, config: dict) -> dict:
    with http(server) as client:
        answer = client.post(
            "/ingest/api/v1/source",
            json={"name": unique(source_type), "type": source_type, "config": config},
        )
    assert answer.status_code == 201, answer.text
    return answer.json()


def post_in(
    ingest_url: str, body: bytes, headers: Dict[str, str], suffix: str = ""
) -> httpx.Response:
    return httpx.post(ingest_url + suffix, content=body, headers=headers, timeout=10.0)


def log_of(server: "HooklineServer", source_id: str) -> List[dict]:
    with http(server) as client:
        answer = client.get(f"/ingest/api/v1/source/{source_id}/log", params={"limit": 250})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def add_endpoint(svix: Svix, source_id: str, receiver: "Receiver") -> Tuple[str, str, str]:
    """A forwarding endpoint on a fresh receiver path: (endpoint id, path, secret)."""
    path = receiver.new_path("fwd")
    endpoint = svix.ingest.endpoint.create(source_id, IngestEndpointIn(url=receiver.url(path)))
    secret = svix.ingest.endpoint.get_secret(source_id, endpoint.id).key
    return endpoint.id, path, secret


def standard_headers(secret: str, body: bytes, msg_id: Optional[str] = None, at: Optional[datetime] = None) -> Dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(timezone.utc)
    signature = standardwebhooks.Webhook(secret).sign(msg_id, at, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def hex_hmac(secret: str, content: bytes, algorithm=hashlib.sha256) -> str:
    return hmac.new(secret.encode(), content, algorithm).hexdigest()


def assert_refused(answer: httpx.Response, code: str) -> None:
    assert answer.status_code == 401, answer.text
    body = answer.json()
    assert body["code"] == code, body
    assert body["detail"], body


# --------------------------------------------------------------------------- #
# Providers: how each signs a request, and how to break it
# --------------------------------------------------------------------------- #


class Provider:
    """Makes signed requests the way one provider does."""

    source_type: str
    has_timestamp: bool = True
    missing_header: str

    def config(self) -> dict:
        raise NotImplementedError

    def sign(self, body: bytes, at: Optional[datetime] = None) -> Dict[str, str]:
        raise NotImplementedError

    def body(self) -> bytes:
        return json.dumps({"type": "test.event", "id": f"evt_{uuid.uuid4().hex}", "data": {"n": 1}}).encode()


class StandardProvider(Provider):
    """Standard Webhooks, signed by the `standardwebhooks` library (OpenAI, Replicate,
    Anthropic, Gemini all send this)."""

    missing_header = "webhook-signature"

    def __init__(self, source_type: str) -> None:
        self.source_type = source_type
        self.secret = whsec()

    def config(self) -> dict:
        return {"secret": self.secret}

    def sign(self, body, at=None):
        return standard_headers(self.secret, body, at=at)


class SvixProvider(Provider):
    source_type = "svix"
    missing_header = "svix-signature"

    def __init__(self) -> None:
        self.secret = whsec()

    def config(self) -> dict:
        return {"secret": self.secret}

    def sign(self, body, at=None):
        at = at or datetime.now(timezone.utc)
        msg_id = f"msg_{uuid.uuid4().hex}"
        return {
            "svix-id": msg_id,
            "svix-timestamp": str(int(at.timestamp())),
            "svix-signature": Webhook(self.secret).sign(msg_id, at, body.decode()),
            "content-type": "application/json",
        }


class StripeProvider(Provider):
    source_type = "stripe"
    missing_header = "stripe-signature"

    def __init__(self) -> None:
        self.secret = "whsec_" + secrets.token_hex(16)

    def config(self) -> dict:
        return {"secret": self.secret}

    def sign(self, body, at=None):
        at = at or datetime.now(timezone.utc)
        header = node_sign("stripe", self.secret, body, int(at.timestamp()))
        return {"stripe-signature": header, "content-type": "application/json"}


class GithubProvider(Provider):
    source_type = "github"
    has_timestamp = False
    missing_header = "x-hub-signature-256"

    def __init__(self) -> None:
        self.secret = secrets.token_hex(20)

    def config(self) -> dict:
        return {"secret": self.secret}

    def body(self) -> bytes:
        return json.dumps({"action": "opened", "issue": {"number": 7}}).encode()

    def sign(self, body, at=None):
        return {
            "x-hub-signature-256": node_sign("github", self.secret, body),
            "x-github-delivery": str(uuid.uuid4()),
            "x-github-event": "issues",
            "content-type": "application/json",
        }


class SlackProvider(Provider):
    """Slack's documented scheme: `v0=` hex HMAC-SHA256 of `v0:{ts}:{body}`."""

    source_type = "slack"
    missing_header = "x-slack-signature"

    def __init__(self) -> None:
        self.secret = secrets.token_hex(16)

    def config(self) -> dict:
        return {"secret": self.secret}

    def body(self) -> bytes:
        return json.dumps(
            {"type": "event_callback", "event_id": f"Ev{uuid.uuid4().hex[:10]}", "event": {"type": "app_mention"}}
        ).encode()

    def sign(self, body, at=None):
        ts = str(int((at or datetime.now(timezone.utc)).timestamp()))
        signature = "v0=" + hex_hmac(self.secret, b"v0:" + ts.encode() + b":" + body)
        return {
            "x-slack-request-timestamp": ts,
            "x-slack-signature": signature,
            "content-type": "application/json",
        }


class ShopifyProvider(Provider):
    """Shopify's documented scheme: base64 HMAC-SHA256 of the body."""

    source_type = "shopify"
    has_timestamp = False
    missing_header = "x-shopify-hmac-sha256"

    def __init__(self) -> None:
        self.secret = secrets.token_hex(16)

    def config(self) -> dict:
        return {"secret": self.secret}

    def sign(self, body, at=None):
        digest = hmac.new(self.secret.encode(), body, hashlib.sha256).digest()
        return {
            "x-shopify-hmac-sha256": base64.b64encode(digest).decode(),
            "x-shopify-webhook-id": str(uuid.uuid4()),
            "x-shopify-topic": "orders/create",
            "content-type": "application/json",
        }


class HuggingFaceProvider(Provider):
    """Hugging Face echoes the plain secret in `X-Webhook-Secret`."""

    source_type = "hugging-face"
    has_timestamp = False
    missing_header = "x-webhook-secret"

    def __init__(self) -> None:
        self.secret = secrets.token_hex(12)

    def config(self) -> dict:
        return {"secret": self.secret}

    def body(self) -> bytes:
        return json.dumps({"event": {"action": "update", "scope": "repo.content"}, "nonce": uuid.uuid4().hex}).encode()

    def sign(self, body, at=None):
        return {"x-webhook-secret": self.secret, "content-type": "application/json"}


class HmacProvider(Provider):
    """Hookline's configurable HMAC: here SHA-512, hex, with a prefix."""

    source_type = "hmac"
    has_timestamp = False
    missing_header = "x-signature"

    def __init__(self) -> None:
        self.secret = secrets.token_hex(16)

    def config(self) -> dict:
        return {
            "secret": self.secret,
            "header": "X-Signature",
            "algorithm": "sha512",
            "encoding": "hex",
            "prefix": "sha512=",
        }

    def sign(self, body, at=None):
        return {"x-signature": "sha512=" + hex_hmac(self.secret, body, hashlib.sha512)}


class BearerProvider(Provider):
    source_type = "bearer"
    has_timestamp = False
    missing_header = "authorization"

    def __init__(self) -> None:
        self.token = secrets.token_hex(16)

    def config(self) -> dict:
        return {"token": self.token}

    def sign(self, body, at=None):
        return {"authorization": f"Bearer {self.token}"}


class BasicAuthProvider(Provider):
    source_type = "basic-auth"
    has_timestamp = False
    missing_header = "authorization"

    def __init__(self) -> None:
        self.password = secrets.token_hex(8)

    def config(self) -> dict:
        return {"username": "hooks", "password": self.password}

    def sign(self, body, at=None):
        raw = base64.b64encode(f"hooks:{self.password}".encode()).decode()
        return {"authorization": f"Basic {raw}"}


PROVIDERS = {
    "open-ai": lambda: StandardProvider("open-ai"),
    "replicate": lambda: StandardProvider("replicate"),
    "standard-webhooks": lambda: StandardProvider("standard-webhooks"),
    "svix": SvixProvider,
    "stripe": StripeProvider,
    "github": GithubProvider,
    "slack": SlackProvider,
    "shopify": ShopifyProvider,
    "hugging-face": HuggingFaceProvider,
    "hmac": HmacProvider,
    "bearer": BearerProvider,
    "basic-auth": BasicAuthProvider,
}


def wrong_credentials(provider: Provider) -> Provider:
    """The same kind of provider with another secret."""
    return PROVIDERS[provider.source_type]()


# --------------------------------------------------------------------------- #
# Sources through the SDK
# --------------------------------------------------------------------------- #


def test_source_lifecycle_through_the_sdk(svix: Svix, hookline_server) -> None:
    uid = unique("openai")
    created = svix.ingest.source.create(
        IngestSourceIn(name="OpenAI prod", uid=uid, type="open-ai", config=SvixConfig(secret=whsec()))
    )
    assert created.id.startswith("src_")
    assert created.type == "open-ai"
    assert created.ingest_url.startswith(f"{hookline_server.url}/in/")
    assert "whsec_" not in json.dumps(created.config if isinstance(created.config, dict) else created.config.model_dump())

    by_uid = svix.ingest.source.get(uid)
    assert by_uid.id == created.id
    assert svix.ingest.source.get(created.id).name == "OpenAI prod"

    renamed = svix.ingest.source.upsert(
        created.id,
        IngestSourceIn(name="OpenAI renamed", uid=uid, type="open-ai", config=SvixConfig(secret=whsec())),
    )
    assert renamed.id == created.id and renamed.name == "OpenAI renamed"
    assert renamed.ingest_url == created.ingest_url

    listed = svix.ingest.source.list()
    assert created.id in [source.id for source in listed.data]

    svix.ingest.source.delete(created.id)
    with pytest.raises(HttpError) as missing:
        svix.ingest.source.get(created.id)
    assert missing.value.status_code == 404


def walk(client: httpx.Client, path: str, limit: int) -> List[dict]:
    """Every item of a list, page by page through its iterators."""
    items: List[dict] = []
    iterator = None
    for _ in range(1000):
        params = {"limit": limit, **({"iterator": iterator} if iterator else {})}
        answer = client.get(path, params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["data"]) <= limit
        items.extend(page["data"])
        if page["done"]:
            return items
        iterator = page["iterator"]
    raise AssertionError(f"{path} never reached done")


def test_sources_patch_upsert_conflict_idempotency_and_pages(hookline_server) -> None:
    with http(hookline_server) as client:
        uid = unique("src")
        body = {"name": "first", "uid": uid, "type": "generic-webhook", "config": {}}
        created = client.post("/ingest/api/v1/source", json=body)
        assert created.status_code == 201, created.text
        source = created.json()

        # uid is unique.
        again = client.post("/ingest/api/v1/source", json={**body, "name": "second"})
        assert again.status_code == 409 and again.json()["code"], again.text

        # PATCH changes only what it names.
        patched = client.patch(f"/ingest/api/v1/source/{uid}", json={"name": "renamed"})
        assert patched.status_code == 200, patched.text
        assert patched.json()["name"] == "renamed"
        assert (patched.json()["id"], patched.json()["type"]) == (source["id"], "generic-webhook")
        assert patched.json()["ingestUrl"] == source["ingestUrl"]

        # PUT on an unknown uid creates the source.
        new_uid = unique("put")
        put = client.put(
            f"/ingest/api/v1/source/{new_uid}",
            json={"name": "made by put", "uid": new_uid, "type": "generic-webhook", "config": {}},
        )
        assert put.status_code == 201, put.text
        assert client.get(f"/ingest/api/v1/source/{new_uid}").json()["id"] == put.json()["id"]

        # An idempotency key replays the first answer instead of creating twice.
        key = uuid.uuid4().hex
        idem = {"name": "once", "type": "generic-webhook", "config": {}}
        one = client.post("/ingest/api/v1/source", json=idem, headers={"idempotency-key": key})
        two = client.post("/ingest/api/v1/source", json=idem, headers={"idempotency-key": key})
        assert one.status_code == two.status_code == 201, (one.text, two.text)
        assert one.json() == two.json()

        # Pages of two: every source once, in ascending id order.
        listed = [item["id"] for item in walk(client, "/ingest/api/v1/source", 2)]
        assert len(listed) == len(set(listed))
        assert listed == sorted(listed)
        assert {source["id"], put.json()["id"], one.json()["id"]} <= set(listed)


def test_the_request_log_pages_newest_first(hookline_server) -> None:
    source = create_source_raw(hookline_server, "generic-webhook", {})
    bodies = [json.dumps({"n": n}).encode() for n in range(5)]
    for body in bodies:
        assert post_in(source["ingestUrl"], body, {"content-type": "application/json"}).status_code == 200
    with http(hookline_server) as client:
        log = walk(client, f"/ingest/api/v1/source/{source['id']}/log", 2)
    assert [base64.b64decode(entry["payloadBase64"]) for entry in log] == bodies[::-1]


@pytest.mark.parametrize(
    "algorithm, encoding, prefix",
    [("sha256", "hex", ""), ("sha1", "base64", ""), ("sha512", "base64", "v1="), ("sha256", "hex", "sha256=")],
)
def test_hmac_sources_take_their_algorithm_encoding_and_prefix(
    hookline_server, algorithm: str, encoding: str, prefix: str
) -> None:
    secret = secrets.token_hex(16)
    config = {"secret": secret, "header": "X-Sig", "algorithm": algorithm, "encoding": encoding}
    if prefix:
        config["prefix"] = prefix
    source = create_source_raw(hookline_server, "hmac", config)
    body = json.dumps({"type": "x", "id": uuid.uuid4().hex}).encode()
    digest = hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).digest()
    text = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    accepted = post_in(source["ingestUrl"], body, {"x-sig": prefix + text})
    assert accepted.status_code == 200, accepted.text
    encode = (lambda raw: raw.hex()) if encoding == "hex" else (lambda raw: base64.b64encode(raw).decode())
    wrong_key = encode(hmac.new(b"another secret", body, getattr(hashlib, algorithm)).digest())
    assert_refused(post_in(source["ingestUrl"], body, {"x-sig": prefix + wrong_key}), "no_signature_matched")
    # A digest of another algorithm has the wrong length, and is named as malformed.
    md5 = encode(hmac.new(secret.encode(), body, hashlib.md5).digest())
    assert_refused(post_in(source["ingestUrl"], body, {"x-sig": prefix + md5}), "malformed_header")
    if prefix:
        refused = post_in(source["ingestUrl"], body, {"x-sig": text})
        assert refused.status_code == 401, refused.text


def test_source_types_from_the_contract_are_accepted(svix: Svix) -> None:
    configs = {
        "github": GithubConfig(secret="gh-secret"),
        "stripe": StripeConfig(secret="whsec_" + secrets.token_hex(8)),
        "slack": SlackConfig(secret=secrets.token_hex(8)),
        "shopify": ShopifyConfig(secret=secrets.token_hex(8)),
        "svix": SvixConfig(secret=whsec()),
        "replicate": SvixConfig(secret=whsec()),
    }
    for source_type, config in configs.items():
        source = svix.ingest.source.create(IngestSourceIn(name=unique(source_type), type=source_type, config=config))
        assert source.type == source_type
    generic = svix.ingest.source.create(IngestSourceIn(name=unique("generic"), type="generic-webhook"))
    assert generic.type == "generic-webhook"


def test_invalid_source_configs_are_422_with_the_field(hookline_server) -> None:
    with http(hookline_server) as client:
        bad_secret = client.post(
            "/ingest/api/v1/source",
            json={"name": "bad", "type": "open-ai", "config": {"secret": "whsec_***"}},
        )
        missing = client.post("/ingest/api/v1/source", json={"name": "bad", "type": "stripe", "config": {}})
        unsupported = client.post("/ingest/api/v1/source", json={"name": "bad", "type": "cron", "config": {}})
        malformed = client.post(
            "/ingest/api/v1/source",
            content=b'{"name": "bad", "type": ',
            headers={"content-type": "application/json"},
        )
        wrong_type = client.post("/ingest/api/v1/source", json={"name": 5, "type": "generic-webhook"})
        unknown_endpoint = client.get("/ingest/api/v1/source/src_missing/endpoint")
        unauthenticated = httpx.post(f"{hookline_server.url}/ingest/api/v1/source", json={"name": "x", "type": "generic-webhook"})
    for answer in (malformed, wrong_type):
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"], answer.text
    assert unknown_endpoint.status_code == 404 and unknown_endpoint.json()["code"] == "not_found"
    for answer in (bad_secret, missing, unsupported):
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"][0] == "body"
    assert "config" in bad_secret.json()["detail"][0]["loc"]
    assert unsupported.json()["detail"][0]["loc"] == ["body", "type"]
    assert unauthenticated.status_code == 401


def test_rotated_token_keeps_working_for_the_grace_period(svix: Svix) -> None:
    source = svix.ingest.source.create(IngestSourceIn(name=unique("rot"), type="generic-webhook"))
    rotated = svix.ingest.source.rotate_token(source.id)
    assert rotated.ingest_url != source.ingest_url
    assert svix.ingest.source.get(source.id).ingest_url == rotated.ingest_url
    for url in (source.ingest_url, rotated.ingest_url):
        answer = post_in(url, b'{"hello":"world"}', {"content-type": "application/json"})
        assert answer.status_code == 200, answer.text
    unknown = post_in(source.ingest_url[:-4] + "zzzz", b"{}", {})
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "source_not_found"


def test_dashboard_token_reads_its_own_source_only(svix: Svix, svix_for) -> None:
    mine = svix.ingest.source.create(IngestSourceIn(name=unique("dash"), type="generic-webhook"))
    other = svix.ingest.source.create(IngestSourceIn(name=unique("other"), type="generic-webhook"))
    access = svix.ingest.authentication.consumer_portal_access(mine.id, IngestSourceConsumerPortalAccessIn())
    scoped = svix_for(access.token)
    assert scoped.ingest.source.get(mine.id).id == mine.id
    with pytest.raises(HttpError) as refused:
        scoped.ingest.source.get(other.id)
    assert refused.value.status_code == 403


# --------------------------------------------------------------------------- #
# Forwarding endpoints through the SDK
# --------------------------------------------------------------------------- #


def test_endpoint_lifecycle_secret_and_headers(svix: Svix, receiver: "Receiver") -> None:
    source = svix.ingest.source.create(IngestSourceIn(name=unique("eps"), type="generic-webhook"))
    uid = unique("ep")
    endpoint = svix.ingest.endpoint.create(
        source.id,
        IngestEndpointIn(url=receiver.url("/eps"), uid=uid, description="first", metadata={"team": "ai"}),
    )
    assert endpoint.id.startswith("ep_")
    assert svix.ingest.endpoint.get(source.id, uid).id == endpoint.id
    assert [e.id for e in svix.ingest.endpoint.list(source.id).data] == [endpoint.id]

    updated = svix.ingest.endpoint.upsert(
        source.id, endpoint.id, IngestEndpointUpsertIn(url=receiver.url("/eps2"), description="second")
    )
    assert updated.url == receiver.url("/eps2") and updated.description == "second"

    old = svix.ingest.endpoint.get_secret(source.id, endpoint.id).key
    new = whsec()
    svix.ingest.endpoint.rotate_secret(source.id, endpoint.id, IngestEndpointSecretIn(key=new))
    assert svix.ingest.endpoint.get_secret(source.id, endpoint.id).key == new != old

    svix.ingest.endpoint.set_headers(source.id, endpoint.id, IngestEndpointHeadersIn(headers={"X-Team": "ai"}))
    assert svix.ingest.endpoint.get_headers(source.id, endpoint.id).headers == {"X-Team": "ai"}

    transformation = svix.ingest.endpoint.transformation.get(source.id, endpoint.id)
    assert transformation.enabled is False
    with pytest.raises(HttpError) as refused:
        svix.ingest.endpoint.transformation.patch(
            source.id, endpoint.id, IngestEndpointTransformationPatch(enabled=True, code="function handler(w) { return w }")
        )
    assert refused.value.status_code == 400

    svix.ingest.endpoint.delete(source.id, endpoint.id)
    with pytest.raises(HttpError) as missing:
        svix.ingest.endpoint.get(source.id, endpoint.id)
    assert missing.value.status_code == 404


def test_source_endpoints_are_not_sending_apps(svix: Svix) -> None:
    source = svix.ingest.source.create(IngestSourceIn(name=unique("hidden"), type="generic-webhook"))
    apps = []
    iterator = None
    while True:
        from svix.api import ApplicationListOptions

        page = svix.application.list(ApplicationListOptions(limit=250, iterator=iterator))
        apps.extend(page.data)
        if page.done:
            break
        iterator = page.iterator
    assert all(not app.name.startswith(f"source {source.name}") for app in apps)


# --------------------------------------------------------------------------- #
# Verification: every type, with the real libraries
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("source_type", sorted(PROVIDERS))
def test_signed_requests_are_accepted_and_broken_ones_refused(hookline_server, source_type: str) -> None:
    provider = PROVIDERS[source_type]()
    source = create_source_raw(hookline_server, source_type, provider.config())
    url = source["ingestUrl"]

    body = provider.body()
    accepted = post_in(url, body, provider.sign(body))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["verdict"] == "accepted"

    tampered = post_in(url, body.replace(b"}", b" }", 1), provider.sign(body))
    wrong = post_in(url, body, wrong_credentials(provider).sign(body))
    headers = provider.sign(body)
    del headers[provider.missing_header]
    missing = post_in(url, body, headers)
    if source_type in ("bearer", "basic-auth", "hugging-face"):
        # The credential does not depend on the body: a changed body still carries it.
        assert tampered.status_code == 200
        assert_refused(wrong, "no_signature_matched" if source_type == "hugging-face" else "invalid_credentials")
    else:
        assert_refused(tampered, "no_signature_matched")
        assert wrong.status_code == 401 and wrong.json()["code"] in ("no_signature_matched",)
    assert missing.status_code == 401 and missing.json()["code"] == "missing_header", missing.text

    if provider.has_timestamp:
        stale_at = datetime.fromtimestamp(time.time() - 3600, timezone.utc)
        stale = post_in(url, body, provider.sign(body, at=stale_at))
        if source_type == "replicate":
            # Replicate's libraries check no timestamp; neither does its preset by default.
            assert stale.status_code == 200, stale.text
        else:
            assert_refused(stale, "timestamp_too_old")

    log = log_of(hookline_server, source["id"])
    rejected = [entry for entry in log if entry["verdict"] == "rejected"]
    assert rejected, log
    assert all(entry["status_code"] == 401 and entry["error_text"] for entry in rejected)
    assert any(entry["verdict"] == "accepted" and entry["msgId"] for entry in log)


def test_wrong_secret_shows_the_reason_in_the_log(hookline_server) -> None:
    provider = StandardProvider("open-ai")
    source = create_source_raw(hookline_server, "open-ai", provider.config())
    body = provider.body()
    answer = post_in(source["ingestUrl"] + "/hooks/openai", body, standard_headers(whsec(), body))
    assert_refused(answer, "no_signature_matched")
    entry = log_of(hookline_server, source["id"])[0]
    assert entry["verdict"] == "rejected"
    assert entry["reasonCode"] == "no_signature_matched"
    assert "no signature matched" in entry["error_text"]
    assert entry["path"] == "/hooks/openai"
    assert base64.b64decode(entry["payloadBase64"]) == body
    assert entry["headers"]["webhook-id"]


def test_openai_raw_secret_and_rotation_list(hookline_server) -> None:
    """OpenAI treats a secret without `whsec_` as raw key bytes; several secrets verify."""
    raw_secret = "sk-raw-" + secrets.token_hex(12)
    new_secret = whsec()
    source = create_source_raw(hookline_server, "open-ai", {"secrets": [new_secret, raw_secret]})
    body = b'{"type":"response.completed","data":{"id":"resp_1"}}'

    msg_id = f"wh_{uuid.uuid4().hex}"
    ts = str(int(time.time()))
    signed = f"{msg_id}.{ts}.".encode() + body
    raw_signature = base64.b64encode(hmac.new(raw_secret.encode(), signed, hashlib.sha256).digest()).decode()
    by_raw = {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": f"v1,{raw_signature}"}
    assert post_in(source["ingestUrl"], body, by_raw).status_code == 200

    by_new = standard_headers(new_secret, body)
    assert post_in(source["ingestUrl"], body, by_new).status_code == 200


def test_slack_url_verification_is_answered(hookline_server) -> None:
    provider = SlackProvider()
    source = create_source_raw(hookline_server, "slack", provider.config())
    body = json.dumps({"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "token": "x"}).encode()
    answer = post_in(source["ingestUrl"], body, provider.sign(body))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


def test_body_over_the_source_limit_is_413_and_logged(hookline_server) -> None:
    source = create_source_raw(hookline_server, "generic-webhook", {"maxBodyBytes": 1024})
    answer = post_in(source["ingestUrl"], b"x" * 2048, {"content-type": "text/plain"})
    assert answer.status_code == 413
    assert answer.json()["code"] == "payload_too_large"
    assert "1024" in answer.json()["detail"]
    entry = log_of(hookline_server, source["id"])[0]
    assert entry["verdict"] == "rejected" and entry["status_code"] == 413


# --------------------------------------------------------------------------- #
# Dedupe and forwarding
# --------------------------------------------------------------------------- #


def test_forwarded_body_is_exact_and_signed_with_the_endpoint_secret(
    svix: Svix, hookline_server, receiver: "Receiver"
) -> None:
    provider = StandardProvider("open-ai")
    source = create_source_raw(hookline_server, "open-ai", {**provider.config(), "forwardHeaders": ["x-request-id"]})
    _, path, endpoint_secret = add_endpoint(svix, source["id"], receiver)
    # Odd spacing and key order: any re-serialisation would change these bytes.
    body = b'{ "type":"response.completed",  "data": {"id":"resp_abc"} ,"z":1}'
    headers = provider.sign(body)
    headers["x-request-id"] = "req_123"
    answer = post_in(source["ingestUrl"], body, headers)
    assert answer.status_code == 200, answer.text

    got = receiver.wait_for(path)[0]
    assert got.body == body
    assert got.header("content-type") == "application/json"
    assert got.header("x-request-id") == "req_123"
    # Signed with the endpoint's own secret, verified by both real libraries.
    Webhook(endpoint_secret).verify(got.body, got.header_map)
    standardwebhooks.Webhook(endpoint_secret).verify(got.body, got.header_map)
    assert got.header("webhook-id") != headers["webhook-id"]


def test_the_same_event_twice_is_forwarded_once(svix: Svix, hookline_server, receiver: "Receiver") -> None:
    provider = StripeProvider()
    source = create_source_raw(hookline_server, "stripe", provider.config())
    _, path, _ = add_endpoint(svix, source["id"], receiver)
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "invoice.paid"}).encode()
    first = post_in(source["ingestUrl"], body, provider.sign(body))
    # Stripe retries with a fresh signature and timestamp: the event id is the key.
    second = post_in(source["ingestUrl"], body, provider.sign(body))
    assert first.json()["verdict"] == "accepted"
    assert second.status_code == 200 and second.json()["verdict"] == "duplicate"
    receiver.wait_for(path)
    receiver.assert_stays(path, 1)
    verdicts = sorted(entry["verdict"] for entry in log_of(hookline_server, source["id"]))
    assert verdicts == ["accepted", "duplicate"]


@pytest.mark.parametrize("source_type", sorted(PROVIDERS))
def test_a_provider_retry_is_forwarded_once(
    svix: Svix, hookline_server, receiver: "Receiver", source_type: str
) -> None:
    """Each type's dedupe key: the same request again is a duplicate; another event is not
    (for GitHub the body is the same, only X-GitHub-Delivery differs)."""
    provider = PROVIDERS[source_type]()
    source = create_source_raw(hookline_server, source_type, provider.config())
    _, path, _ = add_endpoint(svix, source["id"], receiver)
    body = provider.body()
    headers = provider.sign(body)
    first = post_in(source["ingestUrl"], body, headers)
    retry = post_in(source["ingestUrl"], body, headers)
    assert first.status_code == 200 and first.json()["verdict"] == "accepted", first.text
    assert retry.status_code == 200 and retry.json()["verdict"] == "duplicate", retry.text
    other = provider.body()
    another = post_in(source["ingestUrl"], other, provider.sign(other))
    assert another.status_code == 200 and another.json()["verdict"] == "accepted", another.text
    receiver.wait_for(path, 2)
    forwarded = receiver.assert_stays(path, 2)
    assert sorted(got.body for got in forwarded) == sorted([body, other])


def test_the_dedupe_window_is_the_sources(hookline_server) -> None:
    source = create_source_raw(hookline_server, "generic-webhook", {"dedupeWindowSeconds": 1})
    body = json.dumps({"type": "ping", "id": uuid.uuid4().hex}).encode()
    headers = {"content-type": "application/json"}
    assert post_in(source["ingestUrl"], body, headers).json()["verdict"] == "accepted"
    assert post_in(source["ingestUrl"], body, headers).json()["verdict"] == "duplicate"
    time.sleep(1.5)
    assert post_in(source["ingestUrl"], body, headers).json()["verdict"] == "accepted"


def test_the_timestamp_tolerance_is_the_sources(hookline_server) -> None:
    provider = StandardProvider("standard-webhooks")
    strict = create_source_raw(hookline_server, "standard-webhooks", {**provider.config(), "toleranceSeconds": 30})
    lenient = create_source_raw(hookline_server, "standard-webhooks", provider.config())
    body = provider.body()
    a_minute_ago = datetime.fromtimestamp(time.time() - 60, timezone.utc)
    headers = provider.sign(body, at=a_minute_ago)
    assert_refused(post_in(strict["ingestUrl"], body, headers), "timestamp_too_old")
    assert post_in(lenient["ingestUrl"], body, headers).status_code == 200


def test_rejected_requests_are_never_forwarded(svix: Svix, hookline_server, receiver: "Receiver") -> None:
    provider = GithubProvider()
    source = create_source_raw(hookline_server, "github", provider.config())
    _, path, _ = add_endpoint(svix, source["id"], receiver)
    body = provider.body()
    assert post_in(source["ingestUrl"], body, GithubProvider().sign(body)).status_code == 401
    receiver.assert_stays(path, 0)


def test_forward_to_app_sends_a_message_to_the_sending_api(svix: Svix, app, hookline_server) -> None:
    provider = StandardProvider("standard-webhooks")
    source = create_source_raw(hookline_server, "standard-webhooks", {**provider.config(), "forwardToApp": app.id})
    body = json.dumps({"type": "batch.completed", "data": {"id": "batch_1"}}).encode()
    assert post_in(source["ingestUrl"], body, provider.sign(body)).status_code == 200
    messages = svix.message.list(app.id, MessageListOptions(limit=10, with_content=True)).data
    assert [m.event_type for m in messages] == ["batch.completed"]
    assert messages[0].payload == {"type": "batch.completed", "data": {"id": "batch_1"}}

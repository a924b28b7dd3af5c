"""Acceptance suite: Hookline's sending API driven through the official Svix Python SDK.

Every resource of the Svix API is exercised with the SDK exactly as a Svix user would call
it (no patched models, no private attributes). Deliveries go to a real HTTP receiver on
loopback (see conftest.py), and are checked for body, signature and headers.

Run with:  HOOKLINE_BIN=target/debug/hookline .venv/bin/python -m pytest tests/sdk -q

Waits poll with a deadline (WAIT_TIMEOUT); the only fixed waits are the short "quiet"
windows that prove something does *not* arrive.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, TypeVar

import pytest

from svix.api import (
    AppPortalAccessIn,
    ApplicationIn,
    ApplicationListOptions,
    ApplicationPatch,
    BackgroundTaskStatus,
    BackgroundTaskType,
    EmptyResponse,
    EndpointGetStatsOptions,
    EndpointHeadersIn,
    EndpointHeadersPatchIn,
    EndpointIn,
    EndpointListOptions,
    EndpointOut,
    EndpointPatch,
    EndpointSecretRotateIn,
    EndpointUpsertIn,
    EventExampleIn,
    EventTypeDeleteOptions,
    EventTypeIn,
    EventTypeListOptions,
    EventTypeOut,
    EventTypePatch,
    EventTypeUpsertIn,
    MessageAttemptListByEndpointOptions,
    MessageAttemptListByMsgOptions,
    MessageAttemptOut,
    MessageAttemptTriggerType,
    MessageCreateOptions,
    MessageGetOptions,
    MessageIn,
    MessageListOptions,
    MessageStatus,
    MessageStatusText,
    Ordering,
    RecoverIn,
    StatusCodeClass,
    Svix,
)
from svix.exceptions import HttpError
from svix.webhooks import Webhook, WebhookVerificationError

if TYPE_CHECKING:  # only for annotations; conftest is not imported at run time
    from conftest import ReceivedRequest, Receiver

T = TypeVar("T")

# Upper bound for every wait on the server or the receiver (seconds).
WAIT_TIMEOUT = 15.0

# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def unique(prefix: str) -> str:
    """A slug no other test (or earlier run on the same database) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_secret() -> str:
    """A fresh endpoint secret in Svix's own shape: whsec_ + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def now() -> datetime:
    return datetime.now(timezone.utc)


def wait_until(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    what: str,
    timeout: float = WAIT_TIMEOUT,
    interval: float = 0.1,
) -> T:
    """Call `fetch` until `done(value)` holds; return that value or fail with the last one."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {value!r}"
            )
        time.sleep(interval)


def http_status(call: Callable[[], object]) -> int:
    """Run an SDK call that must fail with an HttpError and return its status code."""
    with pytest.raises(HttpError) as info:
        call()
    return info.value.status_code


def make_event_type(svix: Svix, label: str, **fields) -> str:
    name = f"sdk.{label}.{uuid.uuid4().hex[:8]}"
    svix.event_type.create(EventTypeIn(name=name, description=f"test type {label}", **fields))
    return name


def make_endpoint(
    svix: Svix, app_id: str, receiver: Receiver, label: str, **fields
) -> tuple[EndpointOut, str]:
    """An endpoint pointed at a fresh receiver path; returns (endpoint, path)."""
    path = receiver.new_path(label)
    endpoint = svix.endpoint.create(app_id, EndpointIn(url=receiver.url(path), **fields))
    return endpoint, path


def send(svix: Svix, app_id: str, event_type: str, payload: dict, **fields):
    """Create a message (the SDK's default options: with_content=false, auto idempotency key)."""
    return svix.message.create(app_id, MessageIn(event_type=event_type, payload=payload, **fields))


def verify(secret: str, request: ReceivedRequest) -> None:
    """Raise WebhookVerificationError unless `request` is signed with `secret`."""
    Webhook(secret).verify(request.body, request.header_map)


def signature_count(request: ReceivedRequest) -> int:
    return len([part for part in (request.signature or "").split(" ") if part])


def attempts_of(svix: Svix, app_id: str, msg_id: str, **options) -> List[MessageAttemptOut]:
    return svix.message_attempt.list_by_msg(
        app_id, msg_id, MessageAttemptListByMsgOptions(limit=50, **options)
    ).data


def wait_attempts(
    svix: Svix, app_id: str, msg_id: str, count: int, status: Optional[MessageStatus] = None
) -> List[MessageAttemptOut]:
    """Poll until the message has `count` attempts (all with `status`, if given)."""
    return wait_until(
        lambda: attempts_of(svix, app_id, msg_id),
        lambda data: len(data) == count
        and (status is None or all(a.status == status for a in data)),
        f"{count} attempt(s) of {msg_id}" + ("" if status is None else f" with status {status!r}"),
    )


def endpoint_message_status(svix: Svix, app_id: str, endpoint_id: str, msg_id: str):
    """The delivery status of one message for one endpoint, via list_attempted_messages."""
    page = svix.message_attempt.list_attempted_messages(app_id, endpoint_id)
    for item in page.data:
        if item.id == msg_id:
            return item.status
    return None


def all_app_ids(svix: Svix) -> List[str]:
    ids: List[str] = []
    iterator = None
    for _ in range(1000):
        page = svix.application.list(ApplicationListOptions(limit=100, iterator=iterator))
        ids.extend(app.id for app in page.data)
        if page.done:
            return ids
        iterator = page.iterator
    raise AssertionError("application list never reported done")


def all_event_types(svix: Svix, **options) -> Dict[str, EventTypeOut]:
    found: Dict[str, EventTypeOut] = {}
    iterator = None
    for _ in range(1000):
        page = svix.event_type.list(EventTypeListOptions(limit=100, iterator=iterator, **options))
        for item in page.data:
            found[item.name] = item
        if page.done:
            return found
        iterator = page.iterator
    raise AssertionError("event type list never reported done")


def lower_keys(mapping: Dict[str, str]) -> Dict[str, str]:
    # Header names are case-insensitive; the server may store them in any case.
    return {key.lower(): value for key, value in mapping.items()}


PAYLOAD = {
    "invoice": {"id": "inv_42", "amount": 1999, "currency": "EUR", "paid": True},
    "customer": "Zoë Ångström 🚀",
    "lines": [1, 2.5, None, {"nested": ["a", "b"]}],
    "note": "quote \" backslash \\ newline \n tab \t end",
}


# --------------------------------------------------------------------------- #
# Health and authentication
# --------------------------------------------------------------------------- #


def test_health_get_does_not_raise(svix: Svix, svix_for) -> None:
    assert svix.health.get() is None
    # Health is for load balancers and probes: it needs no valid token.
    assert svix_for("no-such-token-" + secrets.token_hex(8)).health.get() is None


def test_wrong_token_is_rejected_with_401(svix_for) -> None:
    intruder = svix_for("hookline-wrong-token-" + secrets.token_hex(12))
    assert http_status(lambda: intruder.application.list()) == 401
    assert http_status(lambda: intruder.event_type.list()) == 401


def test_app_portal_token_is_scoped_to_its_application(
    svix: Svix, svix_for, receiver: Receiver, hookline_server
) -> None:
    own = svix.application.create(ApplicationIn(name="portal owner"))
    other = svix.application.create(ApplicationIn(name="portal stranger"))
    own_endpoint, _ = make_endpoint(svix, own.id, receiver, "portal-own")
    other_endpoint, _ = make_endpoint(svix, other.id, receiver, "portal-other")

    access = svix.authentication.app_portal_access(own.id, AppPortalAccessIn())
    assert access.token and access.token != hookline_server.token
    assert access.url

    portal = svix_for(access.token)
    listed = portal.endpoint.list(own.id)
    assert [e.id for e in listed.data] == [own_endpoint.id]
    assert portal.endpoint.get(own.id, own_endpoint.id).url == own_endpoint.url

    assert http_status(lambda: portal.endpoint.list(other.id)) in (403, 404)
    assert http_status(lambda: portal.endpoint.get(other.id, other_endpoint.id)) in (403, 404)
    assert http_status(lambda: portal.application.list()) == 403


# --------------------------------------------------------------------------- #
# Applications
# --------------------------------------------------------------------------- #


def test_application_create_and_get_by_id_and_uid(svix: Svix) -> None:
    uid = unique("acme")
    created = svix.application.create(
        ApplicationIn(name="Acme Corp", uid=uid, metadata={"tier": "gold"}, throttle_rate=25)
    )
    assert created.id.startswith("app_")
    assert created.name == "Acme Corp"
    assert created.uid == uid
    assert created.metadata == {"tier": "gold"}
    assert created.throttle_rate == 25
    assert abs(created.created_at - now()) < timedelta(minutes=2)

    by_id = svix.application.get(created.id)
    by_uid = svix.application.get(uid)
    for fetched in (by_id, by_uid):
        assert fetched.id == created.id
        assert fetched.name == "Acme Corp"
        assert fetched.uid == uid
        assert fetched.metadata == {"tier": "gold"}


def test_application_list_paginates_with_limit_and_iterator(svix: Svix) -> None:
    prefix = unique("page")
    ids = [svix.application.create(ApplicationIn(name=f"{prefix}-{i}")).id for i in range(5)]
    ordered = sorted(ids)  # ids sort by creation time

    seen: List[str] = []
    iterator = None
    for _ in range(1000):
        page = svix.application.list(
            ApplicationListOptions(limit=2, iterator=iterator, order=Ordering.ASCENDING)
        )
        assert len(page.data) <= 2
        seen.extend(a.id for a in page.data)
        if page.done:
            break
        assert len(page.data) == 2, "a page that is not the last must be full"
        assert page.iterator, "a page that is not the last must carry an iterator"
        iterator = page.iterator
    else:
        raise AssertionError("application list never reported done")

    assert len(seen) == len(set(seen)), "pages overlap"
    assert seen == sorted(seen), "ascending order is by creation (id)"
    assert [i for i in seen if i in set(ids)] == ordered

    # Starting after the second of ours returns the third and fourth.
    after = svix.application.list(
        ApplicationListOptions(limit=2, iterator=ordered[1], order=Ordering.ASCENDING)
    )
    assert [a.id for a in after.data] == ordered[2:4]
    assert after.done is False

    # Newest first: ours are the newest applications.
    newest = svix.application.list(ApplicationListOptions(limit=3, order=Ordering.DESCENDING))
    assert [a.id for a in newest.data] == ordered[::-1][:3]
    assert newest.done is False


def test_application_upsert_replaces_and_creates(svix: Svix) -> None:
    uid = unique("put")
    created = svix.application.create(
        ApplicationIn(name="before put", uid=uid, metadata={"a": "1"})
    )
    updated = svix.application.upsert(
        created.id, ApplicationIn(name="after put", uid=uid, metadata={"b": "2"})
    )
    assert updated.id == created.id
    assert updated.name == "after put"
    assert updated.metadata == {"b": "2"}, "PUT replaces the metadata"
    assert svix.application.get(uid).name == "after put"

    # PUT on an id/uid that matches nothing creates the application.
    new_uid = unique("put-new")
    made = svix.application.upsert(new_uid, ApplicationIn(name="made by put", uid=new_uid))
    assert made.id.startswith("app_") and made.id != created.id
    assert made.uid == new_uid
    assert svix.application.get(new_uid).id == made.id


def test_application_patch_changes_only_given_fields(svix: Svix) -> None:
    uid = unique("patch")
    created = svix.application.create(
        ApplicationIn(name="patch me", uid=uid, metadata={"keep": "yes"})
    )

    renamed = svix.application.patch(created.id, ApplicationPatch(name="patched"))
    assert renamed.id == created.id
    assert renamed.name == "patched"
    assert renamed.uid == uid
    assert renamed.metadata == {"keep": "yes"}

    # An explicit null clears a nullable field; absent fields stay.
    cleared = svix.application.patch(created.id, ApplicationPatch(uid=None, metadata={"n": "1"}))
    assert cleared.uid is None
    assert cleared.metadata == {"n": "1"}
    assert cleared.name == "patched"
    assert svix.application.get(created.id).uid is None
    assert http_status(lambda: svix.application.get(uid)) == 404


def test_application_delete_then_get_is_404(svix: Svix) -> None:
    uid = unique("doomed")
    created = svix.application.create(ApplicationIn(name="doomed", uid=uid))
    assert svix.application.get(created.id).id == created.id

    assert svix.application.delete(created.id) is None
    assert http_status(lambda: svix.application.get(created.id)) == 404
    assert http_status(lambda: svix.application.get(uid)) == 404
    assert created.id not in all_app_ids(svix)


def test_application_get_or_create_returns_the_same_app(svix: Svix) -> None:
    uid = unique("goc")
    first = svix.application.get_or_create(ApplicationIn(name="get or create", uid=uid))
    second = svix.application.get_or_create(ApplicationIn(name="another name", uid=uid))
    assert first.id.startswith("app_")
    assert second.id == first.id
    assert second.name == "get or create", "an existing app is returned unchanged"
    # A plain create with a taken uid is a conflict.
    assert http_status(lambda: svix.application.create(ApplicationIn(name="dup", uid=uid))) == 409


# --------------------------------------------------------------------------- #
# Event types
# --------------------------------------------------------------------------- #

SCHEMAS = {
    "1": {
        "type": "object",
        "title": "Invoice paid",
        "properties": {"id": {"type": "string"}, "amount": {"type": "integer"}},
        "required": ["id"],
    }
}


def test_event_type_create_and_get(svix: Svix) -> None:
    name = f"sdk.invoice.paid.{uuid.uuid4().hex[:8]}"
    created = svix.event_type.create(
        EventTypeIn(name=name, description="An invoice was paid", schemas=SCHEMAS)
    )
    assert created.name == name
    assert created.description == "An invoice was paid"
    assert not created.archived
    assert created.deprecated is False
    assert created.schemas == SCHEMAS

    fetched = svix.event_type.get(name)
    assert fetched.name == name
    assert fetched.description == "An invoice was paid"
    assert fetched.schemas == SCHEMAS
    assert abs(fetched.created_at - now()) < timedelta(minutes=2)

    # The name is taken while the type is live.
    again = EventTypeIn(name=name, description="duplicate")
    assert http_status(lambda: svix.event_type.create(again)) == 409


def test_event_type_list_hides_archived_unless_asked(svix: Svix) -> None:
    keep = make_event_type(svix, "keep", schemas=SCHEMAS)
    gone = make_event_type(svix, "gone")

    assert svix.event_type.delete(gone) is None  # archive
    assert svix.event_type.get(gone).archived is True

    visible = all_event_types(svix)
    assert keep in visible
    assert gone not in visible

    everything = all_event_types(svix, include_archived=True, with_content=True)
    assert keep in everything and gone in everything
    assert everything[gone].archived is True
    assert not everything[keep].archived
    assert everything[keep].schemas == SCHEMAS

    # Pagination over event types: a small page is not the end.
    first = svix.event_type.list(EventTypeListOptions(limit=1, include_archived=True))
    assert len(first.data) == 1 and first.done is False and first.iterator


def test_event_type_upsert_and_patch(svix: Svix) -> None:
    name = make_event_type(svix, "evolving")

    upserted = svix.event_type.upsert(name, EventTypeUpsertIn(description="v2", schemas=SCHEMAS))
    assert upserted.name == name
    assert upserted.description == "v2"
    assert upserted.schemas == SCHEMAS

    deprecated = svix.event_type.patch(name, EventTypePatch(deprecated=True))
    assert deprecated.deprecated is True
    assert deprecated.description == "v2", "patch leaves absent fields alone"

    described = svix.event_type.patch(name, EventTypePatch(description="v3"))
    assert described.description == "v3"
    assert described.deprecated is True
    assert svix.event_type.get(name).description == "v3"

    # Archive, then unarchive with a patch.
    svix.event_type.delete(name)
    assert svix.event_type.get(name).archived is True
    assert svix.event_type.patch(name, EventTypePatch(archived=False)).archived is False
    assert name in all_event_types(svix)

    # PUT on an unknown name creates the type under that name.
    new_name = f"sdk.made.by.put.{uuid.uuid4().hex[:8]}"
    made = svix.event_type.upsert(new_name, EventTypeUpsertIn(description="made by put"))
    assert made.name == new_name
    assert svix.event_type.get(new_name).description == "made by put"


def test_event_type_expunge_removes_it(svix: Svix) -> None:
    name = make_event_type(svix, "expunged")
    assert svix.event_type.delete(name, EventTypeDeleteOptions(expunge=True)) is None
    assert http_status(lambda: svix.event_type.get(name)) == 404
    assert name not in all_event_types(svix, include_archived=True)


# --------------------------------------------------------------------------- #
# Endpoints
# --------------------------------------------------------------------------- #


def test_endpoint_create_with_all_fields_and_get(svix: Svix, app, receiver: Receiver) -> None:
    event_type = make_event_type(svix, "ep-create")
    uid = unique("ep")
    secret = new_secret()
    url = receiver.url(receiver.new_path("ep-create"))
    created = svix.endpoint.create(
        app.id,
        EndpointIn(
            url=url,
            description="primary receiver",
            uid=uid,
            event_types=[event_type],
            channels=["billing", "eu-west"],
            metadata={"team": "payments"},
            throttle_rate=10,
            secret=secret,
        ),
    )
    assert created.id.startswith("ep_")
    by_id = svix.endpoint.get(app.id, created.id)
    by_uid = svix.endpoint.get(app.id, uid)
    for endpoint in (created, by_id, by_uid):
        assert endpoint.id == created.id
        assert endpoint.url == url
        assert endpoint.description == "primary receiver"
        assert endpoint.uid == uid
        assert endpoint.event_types == [event_type]
        assert sorted(endpoint.channels or []) == ["billing", "eu-west"]
        assert endpoint.metadata == {"team": "payments"}
        assert endpoint.throttle_rate == 10
        assert not endpoint.disabled
    assert svix.endpoint.get_secret(app.id, created.id).key == secret


def test_endpoint_list_paginates(svix: Svix, app, receiver: Receiver) -> None:
    ids = {make_endpoint(svix, app.id, receiver, "ep-list")[0].id for _ in range(3)}

    full = svix.endpoint.list(app.id)
    assert {e.id for e in full.data} == ids
    assert full.done is True

    first = svix.endpoint.list(app.id, EndpointListOptions(limit=2))
    assert len(first.data) == 2 and first.done is False and first.iterator
    second = svix.endpoint.list(app.id, EndpointListOptions(limit=2, iterator=first.iterator))
    assert len(second.data) == 1 and second.done is True
    assert {e.id for e in first.data + second.data} == ids


def test_endpoint_upsert_patch_and_disable(svix: Svix, app, receiver: Receiver) -> None:
    endpoint, _ = make_endpoint(
        svix, app.id, receiver, "ep-edit", description="first", metadata={"a": "1"}, channels=["c1"]
    )
    new_url = receiver.url(receiver.new_path("ep-edit-2"))

    replaced = svix.endpoint.upsert(
        app.id, endpoint.id, EndpointUpsertIn(url=new_url, description="second")
    )
    assert replaced.id == endpoint.id
    assert replaced.url == new_url
    assert replaced.description == "second"
    assert replaced.metadata == {}, "PUT replaces the whole endpoint"
    assert replaced.channels is None

    disabled = svix.endpoint.patch(app.id, endpoint.id, EndpointPatch(disabled=True))
    assert disabled.disabled is True
    assert svix.endpoint.get(app.id, endpoint.id).disabled is True
    assert disabled.url == new_url, "patch leaves absent fields alone"

    enabled = svix.endpoint.patch(app.id, endpoint.id, EndpointPatch(disabled=False))
    assert enabled.disabled is False
    assert svix.endpoint.get(app.id, endpoint.id).disabled is False

    tagged = svix.endpoint.patch(
        app.id, endpoint.id, EndpointPatch(channels=["c9"], metadata={"x": "y"})
    )
    assert tagged.channels == ["c9"]
    assert tagged.metadata == {"x": "y"}
    assert tagged.description == "second"
    untagged = svix.endpoint.patch(app.id, endpoint.id, EndpointPatch(channels=None))
    assert untagged.channels is None, "an explicit null clears the channel filter"

    # PUT on an unknown uid creates a new endpoint.
    new_uid = unique("ep-put")
    made = svix.endpoint.upsert(
        app.id,
        new_uid,
        EndpointUpsertIn(url=receiver.url(receiver.new_path("ep-put")), uid=new_uid),
    )
    assert made.id.startswith("ep_") and made.id != endpoint.id
    assert made.uid == new_uid
    assert svix.endpoint.get(app.id, new_uid).id == made.id


def test_endpoint_delete(svix: Svix, app, receiver: Receiver) -> None:
    keep, _ = make_endpoint(svix, app.id, receiver, "ep-keep")
    doomed, _ = make_endpoint(svix, app.id, receiver, "ep-doomed")
    assert svix.endpoint.delete(app.id, doomed.id) is None
    assert http_status(lambda: svix.endpoint.get(app.id, doomed.id)) == 404
    assert [e.id for e in svix.endpoint.list(app.id).data] == [keep.id]


def test_endpoint_secret_get_and_rotate(svix: Svix, app, receiver: Receiver) -> None:
    endpoint, _ = make_endpoint(svix, app.id, receiver, "ep-secret")
    generated = svix.endpoint.get_secret(app.id, endpoint.id).key
    assert generated.startswith("whsec_")
    assert len(base64.b64decode(generated[len("whsec_"):] + "==")) >= 24

    chosen = new_secret()
    rotated = svix.endpoint.rotate_secret(app.id, endpoint.id, EndpointSecretRotateIn(key=chosen))
    assert rotated.key == chosen
    assert svix.endpoint.get_secret(app.id, endpoint.id).key == chosen

    # Without a key the server generates the new one.
    regenerated = svix.endpoint.rotate_secret(app.id, endpoint.id, EndpointSecretRotateIn())
    assert regenerated.key.startswith("whsec_")
    assert regenerated.key not in (chosen, generated)
    assert svix.endpoint.get_secret(app.id, endpoint.id).key == regenerated.key


def test_endpoint_headers_get_update_patch_and_delivery(
    svix: Svix, app, receiver: Receiver
) -> None:
    endpoint, path = make_endpoint(svix, app.id, receiver, "ep-headers")
    empty = svix.endpoint.get_headers(app.id, endpoint.id)
    assert empty.headers == {} and empty.sensitive == []

    svix.endpoint.set_headers(
        app.id, endpoint.id, EndpointHeadersIn(headers={"X-Tenant": "acme", "X-Trace": "t-1"})
    )
    got = svix.endpoint.get_headers(app.id, endpoint.id)
    assert lower_keys(got.headers) == {"x-tenant": "acme", "x-trace": "t-1"}

    # The SDK's patch model cannot carry a null value, so removal goes via deleteHeaders.
    svix.endpoint.patch_headers(
        app.id,
        endpoint.id,
        EndpointHeadersPatchIn(headers={"X-Region": "eu"}, delete_headers=["X-Trace"]),
    )
    got = svix.endpoint.get_headers(app.id, endpoint.id)
    assert lower_keys(got.headers) == {"x-tenant": "acme", "x-region": "eu"}

    # PUT replaces the whole set; Authorization is stored but reported as sensitive.
    svix.endpoint.set_headers(
        app.id,
        endpoint.id,
        EndpointHeadersIn(headers={"X-Only": "1", "Authorization": "Bearer hunter2"}),
    )
    got = svix.endpoint.get_headers(app.id, endpoint.id)
    assert lower_keys(got.headers) == {"x-only": "1"}
    assert [name.lower() for name in got.sensitive] == ["authorization"]

    # Deliveries carry the custom headers, the sensitive one included.
    event_type = make_event_type(svix, "headers")
    msg = svix.message.create(app.id, MessageIn(event_type=event_type, payload={"h": 1}))
    (request,) = receiver.wait_for(path, 1)
    assert request.message_id == msg.id
    assert request.header("X-Only") == "1"
    assert request.header("Authorization") == "Bearer hunter2"
    assert request.header("X-Tenant") is None


def test_endpoint_send_example_reaches_only_that_endpoint(
    svix: Svix, app, receiver: Receiver
) -> None:
    target, target_path = make_endpoint(svix, app.id, receiver, "example-target")
    bystander, _ = make_endpoint(svix, app.id, receiver, "example-bystander")

    example = svix.endpoint.send_example(app.id, target.id, EventExampleIn(event_type="svix.ping"))
    assert example.id.startswith("msg_")
    assert example.event_type == "svix.ping"

    (request,) = receiver.wait_for(target_path, 1)
    assert request.message_id == example.id
    assert request.json() == {"success": True}
    verify(svix.endpoint.get_secret(app.id, target.id).key, request)

    destinations = svix.message_attempt.list_attempted_destinations(app.id, example.id)
    assert [d.id for d in destinations.data] == [target.id]
    assert bystander.id not in [d.id for d in destinations.data]


# --------------------------------------------------------------------------- #
# Messages
# --------------------------------------------------------------------------- #


def test_message_create_get_by_id_and_event_id(svix: Svix, app) -> None:
    event_type = make_event_type(svix, "msg-create")
    event_id = unique("evt")
    created = svix.message.create(
        app.id,
        MessageIn(event_type=event_type, payload=PAYLOAD, event_id=event_id, channels=["orders"]),
    )
    assert created.id.startswith("msg_")
    assert created.event_type == event_type
    assert created.event_id == event_id
    assert created.channels == ["orders"]
    assert abs(created.timestamp - now()) < timedelta(minutes=2)
    # The SDK asks for with_content=false unless told otherwise.
    assert created.payload == {}

    for key in (created.id, event_id):
        full = svix.message.get(app.id, key, MessageGetOptions(with_content=True))
        assert full.id == created.id
        assert full.payload == PAYLOAD
        assert full.event_id == event_id
    assert svix.message.get(app.id, created.id).payload == {}

    echoed = svix.message.create(
        app.id,
        MessageIn(event_type=event_type, payload={"echo": [1, 2]}),
        MessageCreateOptions(with_content=True),
    )
    assert echoed.payload == {"echo": [1, 2]}
    assert echoed.event_id is None


def test_message_create_is_accepted_before_delivery(
    svix: Svix, app, receiver: Receiver, hookline_server
) -> None:
    endpoint, path = make_endpoint(svix, app.id, receiver, "slow")
    receiver.respond(path, 200, delay=3.0)
    event_type = make_event_type(svix, "accepted")

    started = time.monotonic()
    msg = svix.message.create(app.id, MessageIn(event_type=event_type, payload={"slow": True}))
    assert time.monotonic() - started < 2.0, "create must not wait for the delivery"
    (request,) = receiver.wait_for(path, 1)
    assert request.message_id == msg.id

    # The SDK hides the HTTP status, so check the 202 with a plain request.
    raw = urllib.request.Request(
        f"{hookline_server.url}/api/v1/app/{app.id}/msg",
        data=json.dumps({"eventType": event_type, "payload": {"raw": 1}}).encode(),
        headers={
            "Authorization": f"Bearer {hookline_server.token}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(raw, timeout=10) as response:
        assert response.status == 202
        assert json.loads(response.read())["id"].startswith("msg_")


def test_message_duplicate_event_id_is_409(svix: Svix, app) -> None:
    event_type = make_event_type(svix, "dup")
    event_id = unique("once")
    first = send(svix, app.id, event_type, {}, event_id=event_id)
    duplicate = MessageIn(event_type=event_type, payload={"x": 1}, event_id=event_id)
    assert http_status(lambda: svix.message.create(app.id, duplicate)) == 409
    assert svix.message.get(app.id, event_id).id == first.id


def test_message_list_filters_and_content(svix: Svix, app) -> None:
    type_a = make_event_type(svix, "list-a")
    type_b = make_event_type(svix, "list-b")
    m1 = send(svix, app.id, type_a, {"n": 1}, channels=["red"])
    m2 = send(svix, app.id, type_b, {"n": 2}, channels=["blue"])
    m3 = send(svix, app.id, type_a, {"n": 3})
    newest_first = sorted([m1.id, m2.id, m3.id], reverse=True)

    everything = svix.message.list(app.id)
    assert [m.id for m in everything.data] == newest_first
    assert everything.done is True
    assert all(m.payload == {} for m in everything.data)

    only_a = svix.message.list(app.id, MessageListOptions(event_types=[type_a]))
    assert {m.id for m in only_a.data} == {m1.id, m3.id}
    both = svix.message.list(app.id, MessageListOptions(event_types=[type_a, type_b]))
    assert {m.id for m in both.data} == {m1.id, m2.id, m3.id}
    red = svix.message.list(app.id, MessageListOptions(channel="red"))
    assert [m.id for m in red.data] == [m1.id]
    assert svix.message.list(app.id, MessageListOptions(channel="green")).data == []

    with_content = svix.message.list(app.id, MessageListOptions(with_content=True))
    assert {m.id: m.payload for m in with_content.data} == {
        m1.id: {"n": 1},
        m2.id: {"n": 2},
        m3.id: {"n": 3},
    }

    first = svix.message.list(app.id, MessageListOptions(limit=2))
    assert [m.id for m in first.data] == newest_first[:2]
    assert first.done is False and first.iterator
    rest = svix.message.list(app.id, MessageListOptions(limit=2, iterator=first.iterator))
    assert [m.id for m in rest.data] == newest_first[2:]
    assert rest.done is True


def test_message_expunge_content(svix: Svix, app) -> None:
    event_type = make_event_type(svix, "expunge")
    msg = svix.message.create(
        app.id, MessageIn(event_type=event_type, payload={"card": "4242 4242 4242 4242"})
    )
    before = svix.message.get(app.id, msg.id, MessageGetOptions(with_content=True))
    assert before.payload == {"card": "4242 4242 4242 4242"}

    assert svix.message.expunge_content(app.id, msg.id) is None
    after = svix.message.get(app.id, msg.id, MessageGetOptions(with_content=True))
    assert after.id == msg.id
    assert "card" not in after.payload
    assert "4242" not in json.dumps(after.payload)


def test_message_idempotency_key_creates_one_message_and_one_delivery(
    svix: Svix, app, receiver: Receiver
) -> None:
    endpoint, path = make_endpoint(svix, app.id, receiver, "idempotent")
    event_type = make_event_type(svix, "idempotent")
    key = unique("idem")
    body = MessageIn(event_type=event_type, payload={"charge": "ch_1"})
    # PostOptions would not do: message.create only sends the key from MessageCreateOptions.
    first = svix.message.create(app.id, body, MessageCreateOptions(idempotency_key=key))
    second = svix.message.create(app.id, body, MessageCreateOptions(idempotency_key=key))
    assert second.id == first.id

    receiver.wait_for(path, 1)
    (request,) = receiver.assert_stays(path, 1, quiet=1.5)
    assert request.message_id == first.id
    assert [m.id for m in svix.message.list(app.id).data] == [first.id]

    # A different key is a different message.
    third = svix.message.create(app.id, body, MessageCreateOptions(idempotency_key=unique("idem")))
    assert third.id != first.id


# --------------------------------------------------------------------------- #
# Deliveries
# --------------------------------------------------------------------------- #


def test_delivery_body_and_signature(svix: Svix, app, receiver: Receiver) -> None:
    endpoint, path = make_endpoint(svix, app.id, receiver, "deliver")
    event_type = make_event_type(svix, "deliver")
    secret = svix.endpoint.get_secret(app.id, endpoint.id).key

    msg = svix.message.create(app.id, MessageIn(event_type=event_type, payload=PAYLOAD))
    (request,) = receiver.wait_for(path, 1)

    assert request.method == "POST"
    assert (request.header("content-type") or "").startswith("application/json")
    assert json.loads(request.body.decode("utf-8")) == PAYLOAD
    assert request.message_id == msg.id
    assert abs(int(request.timestamp or "0") - time.time()) < 60
    verify(secret, request)
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(), request)

    stats = wait_until(
        lambda: svix.endpoint.get_stats(app.id, endpoint.id),
        lambda s: s.success == 1,
        "endpoint stats to count the success",
    )
    assert (stats.fail, stats.pending, stats.sending) == (0, 0, 0)
    ranged = svix.endpoint.get_stats(
        app.id, endpoint.id, EndpointGetStatsOptions(since=now() - timedelta(hours=1))
    )
    assert ranged.success == 1


def test_fan_out_follows_event_type_and_channel_filters(
    svix: Svix, app, receiver: Receiver
) -> None:
    type_a = make_event_type(svix, "fan-a")
    type_b = make_event_type(svix, "fan-b")
    only_a, path_a = make_endpoint(svix, app.id, receiver, "fan-a", event_types=[type_a])
    blue, path_blue = make_endpoint(svix, app.id, receiver, "fan-blue", channels=["blue"])
    b_blue_green, path_bg = make_endpoint(
        svix, app.id, receiver, "fan-bg", event_types=[type_b], channels=["blue", "green"]
    )

    m1 = send(svix, app.id, type_a, {"m": 1})
    m2 = send(svix, app.id, type_b, {"m": 2}, channels=["blue"])
    m3 = send(svix, app.id, type_a, {"m": 3}, channels=["green"])
    m4 = send(svix, app.id, type_b, {"m": 4}, channels=["red"])

    expected = {
        path_a: {m1.id, m3.id},  # type a; no channel filter
        path_blue: {m2.id},  # any type on channel blue; m1 has no channel at all
        path_bg: {m2.id},  # type b on blue or green
    }
    for path, ids in expected.items():
        receiver.wait_for(path, len(ids))
    for path, ids in expected.items():
        got = receiver.assert_stays(path, len(ids), quiet=0.5)
        assert {r.message_id for r in got} == ids, path

    destinations = {
        msg.id: {
            d.id for d in svix.message_attempt.list_attempted_destinations(app.id, msg.id).data
        }
        for msg in (m1, m2, m3, m4)
    }
    assert destinations == {
        m1.id: {only_a.id},
        m2.id: {blue.id, b_blue_green.id},
        m3.id: {only_a.id},
        m4.id: set(),
    }


def test_rotated_secret_signs_with_old_and_new_key(svix: Svix, app, receiver: Receiver) -> None:
    endpoint, path = make_endpoint(svix, app.id, receiver, "rotate")
    event_type = make_event_type(svix, "rotate")
    old = svix.endpoint.get_secret(app.id, endpoint.id).key
    fresh = new_secret()
    svix.endpoint.rotate_secret(app.id, endpoint.id, EndpointSecretRotateIn(key=fresh))

    msg = svix.message.create(app.id, MessageIn(event_type=event_type, payload={"rotated": True}))
    (request,) = receiver.wait_for(path, 1)
    assert request.message_id == msg.id
    assert signature_count(request) == 2, request.signature
    verify(old, request)
    verify(fresh, request)
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(), request)


# --------------------------------------------------------------------------- #
# Message attempts
# --------------------------------------------------------------------------- #


def test_message_attempt_listings_and_get(svix: Svix, app, receiver: Receiver) -> None:
    first, path_1 = make_endpoint(svix, app.id, receiver, "attempt-1")
    second, path_2 = make_endpoint(svix, app.id, receiver, "attempt-2")
    event_type = make_event_type(svix, "attempts")
    msg = svix.message.create(app.id, MessageIn(event_type=event_type, payload={"a": 1}))
    receiver.wait_for(path_1, 1)
    receiver.wait_for(path_2, 1)

    attempts = wait_attempts(svix, app.id, msg.id, 2, MessageStatus.SUCCESS)
    by_endpoint = {a.endpoint_id: a for a in attempts}
    assert set(by_endpoint) == {first.id, second.id}
    attempt = by_endpoint[first.id]
    assert attempt.id.startswith("atmpt_")
    assert attempt.msg_id == msg.id
    assert attempt.url == first.url
    assert attempt.response_status_code == 200
    assert attempt.status == MessageStatus.SUCCESS
    assert attempt.status_text == MessageStatusText.SUCCESS
    assert attempt.trigger_type == MessageAttemptTriggerType.SCHEDULED
    assert attempt.response_duration_ms >= 0
    assert abs(attempt.timestamp - now()) < timedelta(minutes=2)

    only_second = attempts_of(svix, app.id, msg.id, endpoint_id=second.id)
    assert [a.id for a in only_second] == [by_endpoint[second.id].id]

    fetched = svix.message_attempt.get(app.id, msg.id, attempt.id)
    assert (fetched.id, fetched.endpoint_id, fetched.msg_id) == (attempt.id, first.id, msg.id)
    assert fetched.status == MessageStatus.SUCCESS

    succeeded = svix.message_attempt.list_by_endpoint(
        app.id, first.id, MessageAttemptListByEndpointOptions(status=MessageStatus.SUCCESS)
    )
    assert [a.id for a in succeeded.data] == [attempt.id]
    failed = svix.message_attempt.list_by_endpoint(
        app.id, first.id, MessageAttemptListByEndpointOptions(status=MessageStatus.FAIL)
    )
    assert failed.data == []
    two_xx = svix.message_attempt.list_by_endpoint(
        app.id,
        first.id,
        MessageAttemptListByEndpointOptions(status_code_class=StatusCodeClass.CODE2XX),
    )
    assert [a.id for a in two_xx.data] == [attempt.id]

    attempted = svix.message_attempt.list_attempted_messages(app.id, first.id)
    assert [m.id for m in attempted.data] == [msg.id]
    assert attempted.data[0].status == MessageStatus.SUCCESS
    assert attempted.data[0].event_type == event_type

    destinations = svix.message_attempt.list_attempted_destinations(app.id, msg.id)
    assert {d.id: d.status for d in destinations.data} == {
        first.id: MessageStatus.SUCCESS,
        second.id: MessageStatus.SUCCESS,
    }
    assert {d.id: d.url for d in destinations.data} == {first.id: first.url, second.id: second.url}


def test_message_attempt_resend_is_manual(svix: Svix, app, receiver: Receiver) -> None:
    endpoint, path = make_endpoint(svix, app.id, receiver, "resend")
    event_type = make_event_type(svix, "resend")
    msg = svix.message.create(app.id, MessageIn(event_type=event_type, payload={"again": True}))
    receiver.wait_for(path, 1)
    wait_attempts(svix, app.id, msg.id, 1, MessageStatus.SUCCESS)

    result = svix.message_attempt.resend(app.id, msg.id, endpoint.id)
    assert isinstance(result, EmptyResponse)

    requests = receiver.wait_for(path, 2)
    assert [r.message_id for r in requests] == [msg.id, msg.id]
    assert json.loads(requests[1].body) == {"again": True}
    verify(svix.endpoint.get_secret(app.id, endpoint.id).key, requests[1])

    attempts = wait_attempts(svix, app.id, msg.id, 2, MessageStatus.SUCCESS)
    latest = max(attempts, key=lambda a: a.timestamp)
    earliest = min(attempts, key=lambda a: a.timestamp)
    assert latest.trigger_type == MessageAttemptTriggerType.MANUAL
    assert earliest.trigger_type == MessageAttemptTriggerType.SCHEDULED
    assert attempts[0].id == latest.id, "attempts are listed newest first"


def test_message_attempt_expunge_content(svix: Svix, app, receiver: Receiver) -> None:
    endpoint, path = make_endpoint(svix, app.id, receiver, "attempt-expunge")
    receiver.respond(path, 200, body=b"receipt-7f3a-confidential")
    event_type = make_event_type(svix, "attempt-expunge")
    msg = svix.message.create(app.id, MessageIn(event_type=event_type, payload={"x": 1}))
    receiver.wait_for(path, 1)
    (attempt,) = wait_attempts(svix, app.id, msg.id, 1, MessageStatus.SUCCESS)

    with_body = attempts_of(svix, app.id, msg.id, with_content=True)
    assert with_body[0].response == "receipt-7f3a-confidential"
    fetched = svix.message_attempt.get(app.id, msg.id, attempt.id)
    assert fetched.response == "receipt-7f3a-confidential"

    assert svix.message_attempt.expunge_content(app.id, msg.id, attempt.id) is None
    after = svix.message_attempt.get(app.id, msg.id, attempt.id)
    assert after.id == attempt.id
    assert "confidential" not in after.response
    assert "confidential" not in attempts_of(svix, app.id, msg.id, with_content=True)[0].response


# --------------------------------------------------------------------------- #
# Retries and failures
# --------------------------------------------------------------------------- #


def test_failing_endpoint_is_retried_then_fails_then_recovers(
    svix: Svix, app, receiver: Receiver, hookline_server
) -> None:
    endpoint, path = make_endpoint(svix, app.id, receiver, "fails")
    receiver.respond(path, 500, body=b"boom")
    event_type = make_event_type(svix, "fails")
    msg = svix.message.create(app.id, MessageIn(event_type=event_type, payload={"try": "hard"}))

    expected_attempts = 1 + len(hookline_server.retry_schedule)  # 1 + 3
    requests = receiver.wait_for(path, expected_attempts)
    wait_until(
        lambda: endpoint_message_status(svix, app.id, endpoint.id, msg.id),
        lambda status: status == MessageStatus.FAIL,
        "the message to end in status fail",
    )
    requests = receiver.assert_stays(path, expected_attempts, quiet=1.5)
    assert {r.message_id for r in requests} == {msg.id}, "retries keep the message id"
    gaps = [b.received_at - a.received_at for a, b in zip(requests, requests[1:])]
    assert all(gap >= 0.7 for gap in gaps), f"retries must follow the schedule, gaps {gaps}"

    attempts = wait_attempts(svix, app.id, msg.id, expected_attempts, MessageStatus.FAIL)
    assert all(a.response_status_code == 500 for a in attempts)
    assert all(a.trigger_type == MessageAttemptTriggerType.SCHEDULED for a in attempts)
    (destination,) = svix.message_attempt.list_attempted_destinations(app.id, msg.id).data
    assert destination.status == MessageStatus.FAIL
    stats = svix.endpoint.get_stats(app.id, endpoint.id)
    assert (stats.success, stats.fail, stats.pending, stats.sending) == (0, 1, 0, 0)

    # The endpoint is fixed; recover re-sends what failed.
    receiver.respond(path, 200)
    since = now() - timedelta(minutes=10)
    task = svix.endpoint.recover(app.id, endpoint.id, RecoverIn(since=since))
    assert task.id.startswith("qtask_")
    assert task.task == BackgroundTaskType.ENDPOINT_RECOVER
    assert task.status in (BackgroundTaskStatus.RUNNING, BackgroundTaskStatus.FINISHED)

    recovered = receiver.wait_for(path, expected_attempts + 1)
    assert recovered[-1].message_id == msg.id
    wait_until(
        lambda: endpoint_message_status(svix, app.id, endpoint.id, msg.id),
        lambda status: status == MessageStatus.SUCCESS,
        "the recovered message to succeed",
    )
    stats = wait_until(
        lambda: svix.endpoint.get_stats(app.id, endpoint.id),
        lambda s: s.success == 1,
        "stats to count the recovered message",
    )
    assert stats.fail == 0


def test_410_gone_disables_the_endpoint(svix: Svix, app, receiver: Receiver) -> None:
    endpoint, path = make_endpoint(svix, app.id, receiver, "gone")
    receiver.respond(path, 410, body=b"gone")
    event_type = make_event_type(svix, "gone")
    svix.message.create(app.id, MessageIn(event_type=event_type, payload={"bye": True}))

    receiver.wait_for(path, 1)
    wait_until(
        lambda: svix.endpoint.get(app.id, endpoint.id).disabled,
        lambda disabled: disabled is True,
        "the endpoint to be disabled after a 410",
    )
    # A disabled endpoint is not a destination of new messages.
    later = svix.message.create(app.id, MessageIn(event_type=event_type, payload={"later": True}))
    destinations = svix.message_attempt.list_attempted_destinations(app.id, later.id)
    assert endpoint.id not in {d.id for d in destinations.data}


def test_307_redirect_is_a_failed_attempt_and_not_followed(
    svix: Svix, app, receiver: Receiver
) -> None:
    target_path = receiver.new_path("redirect-target")
    endpoint, path = make_endpoint(svix, app.id, receiver, "redirect")
    receiver.respond(path, 307, headers={"Location": receiver.url(target_path)})
    event_type = make_event_type(svix, "redirect")
    msg = svix.message.create(app.id, MessageIn(event_type=event_type, payload={"moved": True}))

    receiver.wait_for(path, 1)
    attempts = wait_until(
        lambda: attempts_of(svix, app.id, msg.id),
        lambda data: len(data) >= 1,
        "the first attempt to be recorded",
    )
    first = min(attempts, key=lambda a: a.timestamp)
    assert first.status == MessageStatus.FAIL
    assert first.response_status_code == 307
    receiver.assert_stays(target_path, 0, quiet=1.5)

// Acceptance suite: Hookline's sending API driven through the official Svix JavaScript SDK
// (the `svix` npm package, 1.x), the counterpart of tests/sdk/test_svix_sdk.py.
//
// Every resource of the Svix API is exercised with the SDK's own methods exactly as a
// Svix user would call them (no patched models, no raw requests except where the SDK
// hides what is checked). Deliveries go to a real HTTP receiver on loopback (see
// harness.mjs), and are checked for body, signature and headers with the SDK's `Webhook`.
//
// Run with:  HOOKLINE_BIN=target/debug/hookline node --test tests/sdk-js/
//
// Waits poll with a deadline (WAIT_TIMEOUT); the only fixed waits are the short "quiet"
// windows that prove something does *not* arrive.

import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import {
  ApiException,
  BackgroundTaskStatus,
  BackgroundTaskType,
  MessageAttemptTriggerType,
  MessageStatus,
  MessageStatusText,
  Ordering,
  StatusCodeClass,
  Webhook,
  WebhookVerificationError,
} from "svix";

import { WAIT_TIMEOUT, ctx, sdkTest, setUp } from "./harness.mjs";

setUp();

// --------------------------------------------------------------------------- //
// Helpers
// --------------------------------------------------------------------------- //

/** A slug no other test (or earlier run on the same database) uses. */
function unique(prefix) {
  return `${prefix}-${randomUUID().replaceAll("-", "").slice(0, 10)}`;
}

/** A fresh endpoint secret in Svix's own shape: whsec_ + base64 of 24 random bytes. */
function newSecret() {
  return `whsec_${randomBytes(24).toString("base64")}`;
}

/** Assert that `date` is a valid Date within two minutes of now. */
function assertRecent(date, what) {
  assert.ok(date instanceof Date && !Number.isNaN(date.getTime()), `${what} is not a date: ${date}`);
  assert.ok(Math.abs(date.getTime() - Date.now()) < 120_000, `${what} is not recent: ${date.toISOString()}`);
}

/** Call `fetch` until `done(value)` holds; return that value or fail with the last one. */
async function waitUntil(fetch, done, what, timeout = WAIT_TIMEOUT, interval = 100) {
  const deadline = performance.now() + timeout;
  for (;;) {
    const value = await fetch();
    if (done(value)) return value;
    if (performance.now() >= deadline) {
      assert.fail(`timed out after ${timeout / 1000}s waiting for ${what}; last: ${JSON.stringify(value)}`);
    }
    await sleep(interval);
  }
}

/** Run an SDK call that must fail with an HTTP error and return its status code. */
async function httpStatus(call) {
  try {
    await call();
  } catch (err) {
    if (err instanceof ApiException) return err.code;
    throw err;
  }
  assert.fail("expected the SDK call to fail with an HTTP error, it succeeded");
}

async function makeEventType(label, fields = {}) {
  const name = `sdk.${label}.${randomUUID().slice(0, 8)}`;
  await ctx.svix.eventType.create({ name, description: `test type ${label}`, ...fields });
  return name;
}

/** An endpoint pointed at a fresh receiver path; resolves to [endpoint, path]. */
async function makeEndpoint(appId, label, fields = {}) {
  const path = ctx.receiver.newPath(label);
  const endpoint = await ctx.svix.endpoint.create(appId, { url: ctx.receiver.url(path), ...fields });
  return [endpoint, path];
}

/** Create a message (the SDK's default options: with_content=false, auto idempotency key). */
function send(appId, eventType, payload, fields = {}) {
  return ctx.svix.message.create(appId, { eventType, payload, ...fields });
}

/** A fresh application for one test, so tests never see each other's data. */
function newApp(t) {
  return ctx.svix.application.create({ name: `sdk-js-${t.name}`.slice(0, 200) });
}

/** Throw WebhookVerificationError unless `request` is signed with `secret`. */
function verify(secret, request) {
  return new Webhook(secret).verify(request.body, request.headers);
}

function messageId(request) {
  return request.headers["svix-id"] ?? request.headers["webhook-id"];
}

function signatureCount(request) {
  const header = request.headers["svix-signature"] ?? request.headers["webhook-signature"] ?? "";
  return header.split(" ").filter(Boolean).length;
}

async function attemptsOf(appId, msgId, options = {}) {
  return (await ctx.svix.messageAttempt.listByMsg(appId, msgId, { limit: 50, ...options })).data;
}

/** Poll until the message has `count` attempts (all with `status`, if given). */
function waitAttempts(appId, msgId, count, status) {
  return waitUntil(
    () => attemptsOf(appId, msgId),
    (data) => data.length === count && (status === undefined || data.every((a) => a.status === status)),
    `${count} attempt(s) of ${msgId}${status === undefined ? "" : ` with status ${status}`}`,
  );
}

/** The delivery status of one message for one endpoint, via listAttemptedMessages. */
async function endpointMessageStatus(appId, endpointId, msgId) {
  const page = await ctx.svix.messageAttempt.listAttemptedMessages(appId, endpointId);
  return page.data.find((item) => item.id === msgId)?.status ?? null;
}

async function allAppIds() {
  const ids = [];
  let iterator = null;
  for (let i = 0; i < 1000; i++) {
    const page = await ctx.svix.application.list({ limit: 100, iterator });
    ids.push(...page.data.map((app) => app.id));
    if (page.done) return ids;
    iterator = page.iterator;
  }
  assert.fail("application list never reported done");
}

async function allEventTypes(options = {}) {
  const found = new Map();
  let iterator = null;
  for (let i = 0; i < 1000; i++) {
    const page = await ctx.svix.eventType.list({ limit: 100, iterator, ...options });
    for (const item of page.data) found.set(item.name, item);
    if (page.done) return found;
    iterator = page.iterator;
  }
  assert.fail("event type list never reported done");
}

/** Header names are case-insensitive; the server may store them in any case. */
function lowerKeys(mapping) {
  return Object.fromEntries(Object.entries(mapping ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
}

const ids = (items) => items.map((item) => item.id);
const sorted = (items) => [...items].sort();

const PAYLOAD = {
  invoice: { id: "inv_42", amount: 1999, currency: "EUR", paid: true },
  customer: "Zoë Ångström 🚀",
  lines: [1, 2.5, null, { nested: ["a", "b"] }],
  note: 'quote " backslash \\ newline \n tab \t end',
};

// --------------------------------------------------------------------------- //
// Health and authentication
// --------------------------------------------------------------------------- //

sdkTest("health.get resolves, with or without a valid token", async () => {
  assert.equal(await ctx.svix.health.get(), undefined);
  // Health is for load balancers and probes: it needs no valid token.
  const stranger = ctx.svixFor(`no-such-token-${randomBytes(8).toString("hex")}`);
  assert.equal(await stranger.health.get(), undefined);
});

sdkTest("a wrong token is rejected with 401", async () => {
  const intruder = ctx.svixFor(`hookline-wrong-token-${randomBytes(12).toString("hex")}`);
  assert.equal(await httpStatus(() => intruder.application.list()), 401);
  assert.equal(await httpStatus(() => intruder.eventType.list()), 401);
});

sdkTest("authentication.appPortalAccess gives a token scoped to its application", async () => {
  const { svix } = ctx;
  const own = await svix.application.create({ name: "portal owner" });
  const other = await svix.application.create({ name: "portal stranger" });
  const [ownEndpoint] = await makeEndpoint(own.id, "portal-own");
  const [otherEndpoint] = await makeEndpoint(other.id, "portal-other");

  const access = await svix.authentication.appPortalAccess(own.id, {});
  assert.ok(access.token, "a token");
  assert.notEqual(access.token, ctx.server.token);
  assert.ok(access.url, "a portal url");

  const portal = ctx.svixFor(access.token);
  const listed = await portal.endpoint.list(own.id);
  assert.deepEqual(ids(listed.data), [ownEndpoint.id]);
  assert.equal((await portal.endpoint.get(own.id, ownEndpoint.id)).url, ownEndpoint.url);

  assert.ok([403, 404].includes(await httpStatus(() => portal.endpoint.list(other.id))));
  assert.ok([403, 404].includes(await httpStatus(() => portal.endpoint.get(other.id, otherEndpoint.id))));
  assert.equal(await httpStatus(() => portal.application.list()), 403);
});

// --------------------------------------------------------------------------- //
// Applications
// --------------------------------------------------------------------------- //

sdkTest("application.create, then get by id and by uid", async () => {
  const { svix } = ctx;
  const uid = unique("acme");
  const created = await svix.application.create({
    name: "Acme Corp",
    uid,
    metadata: { tier: "gold" },
    throttleRate: 25,
  });
  assert.match(created.id, /^app_/);
  assert.equal(created.name, "Acme Corp");
  assert.equal(created.uid, uid);
  assert.deepEqual(created.metadata, { tier: "gold" });
  assert.equal(created.throttleRate, 25);
  assertRecent(created.createdAt, "createdAt");
  assertRecent(created.updatedAt, "updatedAt");

  for (const fetched of [await svix.application.get(created.id), await svix.application.get(uid)]) {
    assert.equal(fetched.id, created.id);
    assert.equal(fetched.name, "Acme Corp");
    assert.equal(fetched.uid, uid);
    assert.deepEqual(fetched.metadata, { tier: "gold" });
    assert.equal(fetched.throttleRate, 25);
  }
});

sdkTest("application.list paginates with limit, iterator and order", async () => {
  const { svix } = ctx;
  const prefix = unique("page");
  const made = [];
  for (let i = 0; i < 5; i++) made.push((await svix.application.create({ name: `${prefix}-${i}` })).id);
  const ordered = sorted(made); // ids sort by creation time

  const seen = [];
  let iterator = null;
  let done = false;
  for (let i = 0; i < 1000 && !done; i++) {
    const page = await svix.application.list({ limit: 2, iterator, order: Ordering.Ascending });
    assert.ok(page.data.length <= 2);
    seen.push(...ids(page.data));
    done = page.done;
    if (!done) {
      assert.equal(page.data.length, 2, "a page that is not the last must be full");
      assert.ok(page.iterator, "a page that is not the last must carry an iterator");
      iterator = page.iterator;
    }
  }
  assert.ok(done, "application list never reported done");
  assert.equal(new Set(seen).size, seen.length, "pages overlap");
  assert.deepEqual(seen, sorted(seen), "ascending order is by creation (id)");
  assert.deepEqual(
    seen.filter((id) => made.includes(id)),
    ordered,
  );

  // Starting after the second of ours returns the third and fourth.
  const after = await svix.application.list({ limit: 2, iterator: ordered[1], order: Ordering.Ascending });
  assert.deepEqual(ids(after.data), ordered.slice(2, 4));
  assert.equal(after.done, false);

  // Newest first: ours are the newest applications.
  const newest = await svix.application.list({ limit: 3, order: Ordering.Descending });
  assert.deepEqual(ids(newest.data), [...ordered].reverse().slice(0, 3));
  assert.equal(newest.done, false);
});

sdkTest("application.update (PUT) replaces, and creates an unknown uid", async () => {
  const { svix } = ctx;
  const uid = unique("put");
  const created = await svix.application.create({ name: "before put", uid, metadata: { a: "1" } });
  const updated = await svix.application.update(created.id, { name: "after put", uid, metadata: { b: "2" } });
  assert.equal(updated.id, created.id);
  assert.equal(updated.name, "after put");
  assert.deepEqual(updated.metadata, { b: "2" }, "PUT replaces the metadata");
  assert.equal((await svix.application.get(uid)).name, "after put");

  // PUT on an id/uid that matches nothing creates the application.
  const newUid = unique("put-new");
  const made = await svix.application.update(newUid, { name: "made by put", uid: newUid });
  assert.match(made.id, /^app_/);
  assert.notEqual(made.id, created.id);
  assert.equal(made.uid, newUid);
  assert.equal((await svix.application.get(newUid)).id, made.id);
});

sdkTest("application.patch changes only the given fields; null clears", async () => {
  const { svix } = ctx;
  const uid = unique("patch");
  const created = await svix.application.create({ name: "patch me", uid, metadata: { keep: "yes" } });

  const renamed = await svix.application.patch(created.id, { name: "patched" });
  assert.equal(renamed.id, created.id);
  assert.equal(renamed.name, "patched");
  assert.equal(renamed.uid, uid);
  assert.deepEqual(renamed.metadata, { keep: "yes" });

  // An explicit null clears a nullable field; absent fields stay.
  const cleared = await svix.application.patch(created.id, { uid: null, metadata: { n: "1" } });
  assert.equal(cleared.uid ?? null, null);
  assert.deepEqual(cleared.metadata, { n: "1" });
  assert.equal(cleared.name, "patched");
  assert.equal((await svix.application.get(created.id)).uid ?? null, null);
  assert.equal(await httpStatus(() => svix.application.get(uid)), 404);
});

sdkTest("application.delete, then get is 404", async () => {
  const { svix } = ctx;
  const uid = unique("doomed");
  const created = await svix.application.create({ name: "doomed", uid });
  assert.equal((await svix.application.get(created.id)).id, created.id);

  assert.equal(await svix.application.delete(created.id), undefined);
  assert.equal(await httpStatus(() => svix.application.get(created.id)), 404);
  assert.equal(await httpStatus(() => svix.application.get(uid)), 404);
  assert.ok(!(await allAppIds()).includes(created.id));
});

sdkTest("application.getOrCreate returns the same application", async () => {
  const { svix } = ctx;
  const uid = unique("goc");
  const first = await svix.application.getOrCreate({ name: "get or create", uid });
  const second = await svix.application.getOrCreate({ name: "another name", uid });
  assert.match(first.id, /^app_/);
  assert.equal(first.name, "get or create");
  assert.equal(second.id, first.id);
  assert.equal(second.name, "get or create", "an existing app is returned unchanged");
  // A plain create with a taken uid is a conflict.
  assert.equal(await httpStatus(() => svix.application.create({ name: "dup", uid })), 409);
});

// --------------------------------------------------------------------------- //
// Event types
// --------------------------------------------------------------------------- //

const SCHEMAS = {
  1: {
    type: "object",
    title: "Invoice paid",
    properties: { id: { type: "string" }, amount: { type: "integer" } },
    required: ["id"],
  },
};

sdkTest("eventType.create and get", async () => {
  const { svix } = ctx;
  const name = `sdk.invoice.paid.${randomUUID().slice(0, 8)}`;
  const created = await svix.eventType.create({ name, description: "An invoice was paid", schemas: SCHEMAS });
  assert.equal(created.name, name);
  assert.equal(created.description, "An invoice was paid");
  assert.ok(!created.archived);
  assert.equal(created.deprecated, false);
  assert.deepEqual(created.schemas, SCHEMAS);
  assertRecent(created.createdAt, "createdAt");

  const fetched = await svix.eventType.get(name);
  assert.equal(fetched.name, name);
  assert.equal(fetched.description, "An invoice was paid");
  assert.deepEqual(fetched.schemas, SCHEMAS);
  assertRecent(fetched.createdAt, "createdAt");
  assertRecent(fetched.updatedAt, "updatedAt");

  // The name is taken while the type is live.
  assert.equal(await httpStatus(() => svix.eventType.create({ name, description: "duplicate" })), 409);
});

sdkTest("eventType.list hides archived types unless asked", async () => {
  const { svix } = ctx;
  const keep = await makeEventType("keep", { schemas: SCHEMAS });
  const gone = await makeEventType("gone");

  assert.equal(await svix.eventType.delete(gone), undefined); // archive
  assert.equal((await svix.eventType.get(gone)).archived, true);

  const visible = await allEventTypes();
  assert.ok(visible.has(keep));
  assert.ok(!visible.has(gone));

  const everything = await allEventTypes({ includeArchived: true, withContent: true });
  assert.ok(everything.has(keep) && everything.has(gone));
  assert.equal(everything.get(gone).archived, true);
  assert.ok(!everything.get(keep).archived);
  assert.deepEqual(everything.get(keep).schemas, SCHEMAS);

  // Pagination over event types: a small page is not the end.
  const first = await svix.eventType.list({ limit: 1, includeArchived: true });
  assert.equal(first.data.length, 1);
  assert.equal(first.done, false);
  assert.ok(first.iterator);
});

sdkTest("eventType.update (PUT) and patch", async () => {
  const { svix } = ctx;
  const name = await makeEventType("evolving");

  const updated = await svix.eventType.update(name, { description: "v2", schemas: SCHEMAS });
  assert.equal(updated.name, name);
  assert.equal(updated.description, "v2");
  assert.deepEqual(updated.schemas, SCHEMAS);

  const deprecated = await svix.eventType.patch(name, { deprecated: true });
  assert.equal(deprecated.deprecated, true);
  assert.equal(deprecated.description, "v2", "patch leaves absent fields alone");

  const described = await svix.eventType.patch(name, { description: "v3" });
  assert.equal(described.description, "v3");
  assert.equal(described.deprecated, true);
  assert.equal((await svix.eventType.get(name)).description, "v3");

  // Archive, then unarchive with a patch.
  await svix.eventType.delete(name);
  assert.equal((await svix.eventType.get(name)).archived, true);
  assert.equal((await svix.eventType.patch(name, { archived: false })).archived, false);
  assert.ok((await allEventTypes()).has(name));

  // PUT on an unknown name creates the type under that name.
  const newName = `sdk.made.by.put.${randomUUID().slice(0, 8)}`;
  const made = await svix.eventType.update(newName, { description: "made by put" });
  assert.equal(made.name, newName);
  assert.equal((await svix.eventType.get(newName)).description, "made by put");
});

sdkTest("eventType.delete with expunge removes it", async () => {
  const { svix } = ctx;
  const name = await makeEventType("expunged");
  assert.equal(await svix.eventType.delete(name, { expunge: true }), undefined);
  assert.equal(await httpStatus(() => svix.eventType.get(name)), 404);
  assert.ok(!(await allEventTypes({ includeArchived: true })).has(name));
});

// --------------------------------------------------------------------------- //
// Endpoints
// --------------------------------------------------------------------------- //

sdkTest("endpoint.create with every field, then get by id and by uid", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const eventType = await makeEventType("ep-create");
  const uid = unique("ep");
  const secret = newSecret();
  const url = receiver.url(receiver.newPath("ep-create"));
  const created = await svix.endpoint.create(app.id, {
    url,
    description: "primary receiver",
    uid,
    filterTypes: [eventType],
    channels: ["billing", "eu-west"],
    metadata: { team: "payments" },
    throttleRate: 10,
    secret,
  });
  assert.match(created.id, /^ep_/);
  const byId = await svix.endpoint.get(app.id, created.id);
  const byUid = await svix.endpoint.get(app.id, uid);
  for (const endpoint of [created, byId, byUid]) {
    assert.equal(endpoint.id, created.id);
    assert.equal(endpoint.url, url);
    assert.equal(endpoint.description, "primary receiver");
    assert.equal(endpoint.uid, uid);
    assert.deepEqual(sorted(endpoint.channels ?? []), ["billing", "eu-west"]);
    assert.deepEqual(endpoint.metadata, { team: "payments" });
    assert.equal(endpoint.throttleRate, 10);
    assert.ok(!endpoint.disabled);
    assertRecent(endpoint.createdAt, "createdAt");
    assertRecent(endpoint.updatedAt, "updatedAt");
  }
  assert.equal((await svix.endpoint.getSecret(app.id, created.id)).key, secret);
  for (const endpoint of [created, byId, byUid]) {
    assert.deepEqual(endpoint.filterTypes, [eventType], "the event type filter reads back as filterTypes");
  }
});

sdkTest("endpoint filterTypes and channels round trip through create, list, update and patch", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const typeA = await makeEventType("ft-a");
  const typeB = await makeEventType("ft-b");
  const [endpoint] = await makeEndpoint(app.id, "ft", { filterTypes: [typeA], channels: ["c1"] });
  assert.deepEqual(endpoint.channels, ["c1"]);

  const listed = (await svix.endpoint.list(app.id)).data.find((e) => e.id === endpoint.id);
  assert.deepEqual(listed?.channels, ["c1"]);

  const updated = await svix.endpoint.update(app.id, endpoint.id, {
    url: endpoint.url,
    filterTypes: [typeA, typeB],
    channels: ["c2", "c3"],
  });
  assert.deepEqual(sorted(updated.channels ?? []), ["c2", "c3"]);

  const patched = await svix.endpoint.patch(app.id, endpoint.id, { filterTypes: [typeB] });
  assert.deepEqual(sorted(patched.channels ?? []), ["c2", "c3"], "patch leaves absent fields alone");

  const cleared = await svix.endpoint.patch(app.id, endpoint.id, { filterTypes: null, channels: null });
  assert.equal(cleared.channels ?? null, null, "an explicit null clears the channel filter");

  // Event type filters as the SDK reads them back.
  assert.deepEqual(endpoint.filterTypes, [typeA], "create answers the filter as filterTypes");
  assert.deepEqual(listed.filterTypes, [typeA], "list answers the filter as filterTypes");
  assert.deepEqual(sorted(updated.filterTypes ?? []), sorted([typeA, typeB]), "PUT answers filterTypes");
  assert.deepEqual(patched.filterTypes, [typeB], "PATCH answers filterTypes");
  assert.deepEqual((await svix.endpoint.get(app.id, endpoint.id)).filterTypes ?? null, null);
});

sdkTest("endpoint.list paginates", async (t) => {
  const { svix } = ctx;
  const app = await newApp(t);
  const made = new Set();
  for (let i = 0; i < 3; i++) made.add((await makeEndpoint(app.id, "ep-list"))[0].id);

  const full = await svix.endpoint.list(app.id);
  assert.deepEqual(new Set(ids(full.data)), made);
  assert.equal(full.done, true);

  const first = await svix.endpoint.list(app.id, { limit: 2 });
  assert.equal(first.data.length, 2);
  assert.equal(first.done, false);
  assert.ok(first.iterator);
  const second = await svix.endpoint.list(app.id, { limit: 2, iterator: first.iterator });
  assert.equal(second.data.length, 1);
  assert.equal(second.done, true);
  assert.deepEqual(new Set(ids([...first.data, ...second.data])), made);
});

sdkTest("endpoint.update (PUT), patch and disable", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const [endpoint] = await makeEndpoint(app.id, "ep-edit", {
    description: "first",
    metadata: { a: "1" },
    channels: ["c1"],
  });
  const newUrl = receiver.url(receiver.newPath("ep-edit-2"));

  const replaced = await svix.endpoint.update(app.id, endpoint.id, { url: newUrl, description: "second" });
  assert.equal(replaced.id, endpoint.id);
  assert.equal(replaced.url, newUrl);
  assert.equal(replaced.description, "second");
  assert.deepEqual(replaced.metadata, {}, "PUT replaces the whole endpoint");
  assert.equal(replaced.channels ?? null, null);

  const disabled = await svix.endpoint.patch(app.id, endpoint.id, { disabled: true });
  assert.equal(disabled.disabled, true);
  assert.equal((await svix.endpoint.get(app.id, endpoint.id)).disabled, true);
  assert.equal(disabled.url, newUrl, "patch leaves absent fields alone");

  const enabled = await svix.endpoint.patch(app.id, endpoint.id, { disabled: false });
  assert.equal(enabled.disabled, false);
  assert.equal((await svix.endpoint.get(app.id, endpoint.id)).disabled, false);

  const tagged = await svix.endpoint.patch(app.id, endpoint.id, { channels: ["c9"], metadata: { x: "y" } });
  assert.deepEqual(tagged.channels, ["c9"]);
  assert.deepEqual(tagged.metadata, { x: "y" });
  assert.equal(tagged.description, "second");
  const untagged = await svix.endpoint.patch(app.id, endpoint.id, { channels: null });
  assert.equal(untagged.channels ?? null, null, "an explicit null clears the channel filter");

  // PUT on an unknown uid creates a new endpoint.
  const newUid = unique("ep-put");
  const made = await svix.endpoint.update(app.id, newUid, {
    url: receiver.url(receiver.newPath("ep-put")),
    uid: newUid,
  });
  assert.match(made.id, /^ep_/);
  assert.notEqual(made.id, endpoint.id);
  assert.equal(made.uid, newUid);
  assert.equal((await svix.endpoint.get(app.id, newUid)).id, made.id);
});

sdkTest("endpoint.delete", async (t) => {
  const { svix } = ctx;
  const app = await newApp(t);
  const [keep] = await makeEndpoint(app.id, "ep-keep");
  const [doomed] = await makeEndpoint(app.id, "ep-doomed");
  assert.equal(await svix.endpoint.delete(app.id, doomed.id), undefined);
  assert.equal(await httpStatus(() => svix.endpoint.get(app.id, doomed.id)), 404);
  assert.deepEqual(ids((await svix.endpoint.list(app.id)).data), [keep.id]);
});

sdkTest("endpoint.getSecret and rotateSecret", async (t) => {
  const { svix } = ctx;
  const app = await newApp(t);
  const [endpoint] = await makeEndpoint(app.id, "ep-secret");
  const generated = (await svix.endpoint.getSecret(app.id, endpoint.id)).key;
  assert.match(generated, /^whsec_/);
  assert.ok(Buffer.from(generated.slice("whsec_".length), "base64").length >= 24);

  const chosen = newSecret();
  // rotateSecret answers 204: the SDK resolves to nothing.
  await svix.endpoint.rotateSecret(app.id, endpoint.id, { key: chosen });
  assert.equal((await svix.endpoint.getSecret(app.id, endpoint.id)).key, chosen);

  // Without a key the server generates the new one.
  await svix.endpoint.rotateSecret(app.id, endpoint.id);
  const regenerated = (await svix.endpoint.getSecret(app.id, endpoint.id)).key;
  assert.match(regenerated, /^whsec_/);
  assert.ok(![chosen, generated].includes(regenerated));
});

sdkTest("endpoint headers: getHeaders, updateHeaders, patchHeaders, and their delivery", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const [endpoint, path] = await makeEndpoint(app.id, "ep-headers");
  const empty = await svix.endpoint.getHeaders(app.id, endpoint.id);
  assert.deepEqual(empty.headers, {});
  assert.deepEqual(empty.sensitive, []);

  await svix.endpoint.updateHeaders(app.id, endpoint.id, { headers: { "X-Tenant": "acme", "X-Trace": "t-1" } });
  let got = await svix.endpoint.getHeaders(app.id, endpoint.id);
  assert.deepEqual(lowerKeys(got.headers), { "x-tenant": "acme", "x-trace": "t-1" });

  await svix.endpoint.patchHeaders(app.id, endpoint.id, {
    headers: { "X-Region": "eu" },
    deleteHeaders: ["X-Trace"],
  });
  got = await svix.endpoint.getHeaders(app.id, endpoint.id);
  assert.deepEqual(lowerKeys(got.headers), { "x-tenant": "acme", "x-region": "eu" });

  // PUT replaces the whole set; Authorization is stored but reported as sensitive.
  await svix.endpoint.updateHeaders(app.id, endpoint.id, {
    headers: { "X-Only": "1", Authorization: "Bearer hunter2" },
  });
  got = await svix.endpoint.getHeaders(app.id, endpoint.id);
  assert.deepEqual(lowerKeys(got.headers), { "x-only": "1" });
  assert.deepEqual(
    got.sensitive.map((name) => name.toLowerCase()),
    ["authorization"],
  );

  // Deliveries carry the custom headers, the sensitive one included.
  const eventType = await makeEventType("headers");
  const msg = await send(app.id, eventType, { h: 1 });
  const [request] = await receiver.waitFor(path, 1);
  assert.equal(messageId(request), msg.id);
  assert.equal(request.headers["x-only"], "1");
  assert.equal(request.headers.authorization, "Bearer hunter2");
  assert.equal(request.headers["x-tenant"], undefined);
});

sdkTest("endpoint.sendExample reaches only that endpoint", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const [target, targetPath] = await makeEndpoint(app.id, "example-target");
  const [bystander] = await makeEndpoint(app.id, "example-bystander");

  const example = await svix.endpoint.sendExample(app.id, target.id, { eventType: "svix.ping" });
  assert.match(example.id, /^msg_/);
  assert.equal(example.eventType, "svix.ping");

  const [request] = await receiver.waitFor(targetPath, 1);
  assert.equal(messageId(request), example.id);
  assert.deepEqual(JSON.parse(request.body.toString("utf8")), { success: true });
  verify((await svix.endpoint.getSecret(app.id, target.id)).key, request);

  const destinations = await svix.messageAttempt.listAttemptedDestinations(app.id, example.id);
  assert.deepEqual(ids(destinations.data), [target.id]);
  assert.ok(!ids(destinations.data).includes(bystander.id));
});

// --------------------------------------------------------------------------- //
// Messages
// --------------------------------------------------------------------------- //

sdkTest("message.create with and without the payload in the answer, get by id and by eventId", async (t) => {
  const { svix } = ctx;
  const app = await newApp(t);
  const eventType = await makeEventType("msg-create");
  const eventId = unique("evt");

  // withContent: false keeps the server's own answer, which is asked without content.
  const created = await svix.message.create(
    app.id,
    { eventType, payload: PAYLOAD, eventId, channels: ["orders"] },
    { withContent: false },
  );
  assert.match(created.id, /^msg_/);
  assert.equal(created.eventType, eventType);
  assert.equal(created.eventId, eventId);
  assert.deepEqual(created.channels, ["orders"]);
  assertRecent(created.timestamp, "timestamp");
  assert.deepEqual(created.payload, {});

  for (const key of [created.id, eventId]) {
    const full = await svix.message.get(app.id, key, { withContent: true });
    assert.equal(full.id, created.id);
    assert.deepEqual(full.payload, PAYLOAD);
    assert.equal(full.eventId, eventId);
    assert.deepEqual(full.channels, ["orders"]);
  }
  assert.deepEqual((await svix.message.get(app.id, created.id, { withContent: false })).payload, {});

  // By default the SDK answers with the payload it sent.
  const echoed = await svix.message.create(app.id, { eventType, payload: { echo: [1, 2] } });
  assert.match(echoed.id, /^msg_/);
  assert.notEqual(echoed.id, created.id);
  assert.deepEqual(echoed.payload, { echo: [1, 2] });
  assert.equal(echoed.eventId ?? null, null);
  assert.deepEqual((await svix.message.get(app.id, echoed.id)).payload, { echo: [1, 2] });

  // An empty payload is a payload.
  const bare = await svix.message.create(app.id, { eventType, payload: {} });
  assert.deepEqual((await svix.message.get(app.id, bare.id, { withContent: true })).payload, {});
});

sdkTest("message.create is accepted (202) before the delivery is made", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const [, path] = await makeEndpoint(app.id, "slow");
  receiver.respond(path, 200, { delay: 3000 });
  const eventType = await makeEventType("accepted");

  const started = performance.now();
  const msg = await send(app.id, eventType, { slow: true });
  assert.ok(performance.now() - started < 2000, "create must not wait for the delivery");
  const [request] = await receiver.waitFor(path, 1);
  assert.equal(messageId(request), msg.id);

  // The SDK hides the HTTP status, so check the 202 with a plain request.
  const response = await fetch(`${ctx.server.url}/api/v1/app/${app.id}/msg`, {
    method: "POST",
    headers: { authorization: `Bearer ${ctx.server.token}`, "content-type": "application/json" },
    body: JSON.stringify({ eventType, payload: { raw: 1 } }),
  });
  assert.equal(response.status, 202);
  assert.match((await response.json()).id, /^msg_/);
});

sdkTest("message.create with a taken eventId is 409", async (t) => {
  const { svix } = ctx;
  const app = await newApp(t);
  const eventType = await makeEventType("dup");
  const eventId = unique("once");
  const first = await send(app.id, eventType, {}, { eventId });
  assert.equal(await httpStatus(() => send(app.id, eventType, { x: 1 }, { eventId })), 409);
  assert.equal((await svix.message.get(app.id, eventId)).id, first.id);
  assert.deepEqual(ids((await svix.message.list(app.id)).data), [first.id]);
});

sdkTest("message.list filters by event type and channel, with or without content", async (t) => {
  const { svix } = ctx;
  const app = await newApp(t);
  const typeA = await makeEventType("list-a");
  const typeB = await makeEventType("list-b");
  const m1 = await send(app.id, typeA, { n: 1 }, { channels: ["red"] });
  const m2 = await send(app.id, typeB, { n: 2 }, { channels: ["blue"] });
  const m3 = await send(app.id, typeA, { n: 3 });
  const newestFirst = sorted([m1.id, m2.id, m3.id]).reverse();

  // Without options the SDK sends no with_content, and the server's default is true.
  const everything = await svix.message.list(app.id);
  assert.deepEqual(ids(everything.data), newestFirst);
  assert.equal(everything.done, true);
  assert.deepEqual(everything.data.map((m) => m.payload), [{ n: 3 }, { n: 2 }, { n: 1 }]);
  const bare = await svix.message.list(app.id, { withContent: false });
  assert.deepEqual(ids(bare.data), newestFirst);
  assert.deepEqual(bare.data.map((m) => m.payload), [{}, {}, {}]);

  const onlyA = await svix.message.list(app.id, { eventTypes: [typeA] });
  assert.deepEqual(new Set(ids(onlyA.data)), new Set([m1.id, m3.id]));
  const both = await svix.message.list(app.id, { eventTypes: [typeA, typeB] });
  assert.deepEqual(new Set(ids(both.data)), new Set([m1.id, m2.id, m3.id]));
  const red = await svix.message.list(app.id, { channel: "red" });
  assert.deepEqual(ids(red.data), [m1.id]);
  assert.deepEqual((await svix.message.list(app.id, { channel: "green" })).data, []);

  const first = await svix.message.list(app.id, { limit: 2 });
  assert.deepEqual(ids(first.data), newestFirst.slice(0, 2));
  assert.equal(first.done, false);
  assert.ok(first.iterator);
  const rest = await svix.message.list(app.id, { limit: 2, iterator: first.iterator });
  assert.deepEqual(ids(rest.data), newestFirst.slice(2));
  assert.equal(rest.done, true);
});

sdkTest("message.expungeContent removes the payload", async (t) => {
  const { svix } = ctx;
  const app = await newApp(t);
  const eventType = await makeEventType("expunge");
  const msg = await send(app.id, eventType, { card: "4242 4242 4242 4242" });
  const before = await svix.message.get(app.id, msg.id, { withContent: true });
  assert.deepEqual(before.payload, { card: "4242 4242 4242 4242" });

  assert.equal(await svix.message.expungeContent(app.id, msg.id), undefined);
  const after = await svix.message.get(app.id, msg.id, { withContent: true });
  assert.equal(after.id, msg.id);
  assert.ok(!("card" in (after.payload ?? {})));
  assert.ok(!JSON.stringify(after.payload).includes("4242"));
});

sdkTest("message.create with an idempotencyKey makes one message and one delivery", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const [, path] = await makeEndpoint(app.id, "idempotent");
  const eventType = await makeEventType("idempotent");
  const key = unique("idem");
  const body = { eventType, payload: { charge: "ch_1" } };
  const first = await svix.message.create(app.id, body, { idempotencyKey: key });
  const second = await svix.message.create(app.id, body, { idempotencyKey: key });
  assert.equal(second.id, first.id);

  await receiver.waitFor(path, 1);
  const [request] = await receiver.assertStays(path, 1, 1500);
  assert.equal(messageId(request), first.id);
  assert.deepEqual(ids((await svix.message.list(app.id)).data), [first.id]);

  // A different key is a different message.
  const third = await svix.message.create(app.id, body, { idempotencyKey: unique("idem") });
  assert.notEqual(third.id, first.id);
});

// --------------------------------------------------------------------------- //
// Deliveries
// --------------------------------------------------------------------------- //

sdkTest("a delivery carries the body and svix-* headers that the SDK's Webhook verifies", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const [endpoint, path] = await makeEndpoint(app.id, "deliver");
  const eventType = await makeEventType("deliver");
  const secret = (await svix.endpoint.getSecret(app.id, endpoint.id)).key;

  const msg = await send(app.id, eventType, PAYLOAD);
  const [request] = await receiver.waitFor(path, 1);

  assert.equal(request.method, "POST");
  assert.match(request.headers["content-type"] ?? "", /^application\/json/);
  assert.deepEqual(JSON.parse(request.body.toString("utf8")), PAYLOAD);

  // Stats count the delivery.
  const stats = await waitUntil(
    () => svix.endpoint.getStats(app.id, endpoint.id),
    (s) => s.success === 1,
    "endpoint stats to count the success",
  );
  assert.deepEqual([stats.fail, stats.pending, stats.sending], [0, 0, 0]);
  const ranged = await svix.endpoint.getStats(app.id, endpoint.id, { since: new Date(Date.now() - 3_600_000) });
  assert.equal(ranged.success, 1);

  // The Svix headers, verified the way a Svix customer's receiver does it.
  const svixHeaders = {
    "svix-id": request.headers["svix-id"],
    "svix-timestamp": request.headers["svix-timestamp"],
    "svix-signature": request.headers["svix-signature"],
  };
  assert.equal(svixHeaders["svix-id"], msg.id, `svix-id header; got headers ${JSON.stringify(request.headers)}`);
  assert.ok(Math.abs(Number(svixHeaders["svix-timestamp"]) - Date.now() / 1000) < 60, "svix-timestamp is now");
  assert.match(svixHeaders["svix-signature"] ?? "", /^v1,/);
  const verified = new Webhook(secret).verify(request.body, svixHeaders);
  assert.deepEqual(verified, PAYLOAD);
  assert.throws(() => new Webhook(newSecret()).verify(request.body, svixHeaders), WebhookVerificationError);
  const tampered = Buffer.from(JSON.stringify({ ...PAYLOAD, note: "changed" }));
  assert.throws(() => new Webhook(secret).verify(tampered, svixHeaders), WebhookVerificationError);
});

sdkTest("fan-out follows the endpoints' event type and channel filters", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const typeA = await makeEventType("fan-a");
  const typeB = await makeEventType("fan-b");
  const [onlyA, pathA] = await makeEndpoint(app.id, "fan-a", { filterTypes: [typeA] });
  const [blue, pathBlue] = await makeEndpoint(app.id, "fan-blue", { channels: ["blue"] });
  const [bBlueGreen, pathBg] = await makeEndpoint(app.id, "fan-bg", {
    filterTypes: [typeB],
    channels: ["blue", "green"],
  });

  const m1 = await send(app.id, typeA, { m: 1 });
  const m2 = await send(app.id, typeB, { m: 2 }, { channels: ["blue"] });
  const m3 = await send(app.id, typeA, { m: 3 }, { channels: ["green"] });
  const m4 = await send(app.id, typeB, { m: 4 }, { channels: ["red"] });

  const expected = [
    [pathA, [m1.id, m3.id]], // type a; no channel filter
    [pathBlue, [m2.id]], // any type on channel blue; m1 has no channel at all
    [pathBg, [m2.id]], // type b on blue or green
  ];
  for (const [path, want] of expected) await receiver.waitFor(path, want.length);
  for (const [path, want] of expected) {
    const got = await receiver.assertStays(path, want.length, 500);
    assert.deepEqual(sorted(got.map(messageId)), sorted(want), path);
  }

  const destinations = {};
  for (const msg of [m1, m2, m3, m4]) {
    const page = await svix.messageAttempt.listAttemptedDestinations(app.id, msg.id);
    destinations[msg.id] = sorted(ids(page.data));
  }
  assert.deepEqual(destinations, {
    [m1.id]: [onlyA.id],
    [m2.id]: sorted([blue.id, bBlueGreen.id]),
    [m3.id]: [onlyA.id],
    [m4.id]: [],
  });
});

sdkTest("a rotated secret signs with the old and the new key", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const [endpoint, path] = await makeEndpoint(app.id, "rotate");
  const eventType = await makeEventType("rotate");
  const old = (await svix.endpoint.getSecret(app.id, endpoint.id)).key;
  const fresh = newSecret();
  await svix.endpoint.rotateSecret(app.id, endpoint.id, { key: fresh });

  const msg = await send(app.id, eventType, { rotated: true });
  const [request] = await receiver.waitFor(path, 1);
  assert.equal(messageId(request), msg.id);
  assert.equal(signatureCount(request), 2, JSON.stringify(request.headers));
  verify(old, request);
  verify(fresh, request);
  assert.throws(() => verify(newSecret(), request), WebhookVerificationError);
});

// --------------------------------------------------------------------------- //
// Message attempts
// --------------------------------------------------------------------------- //

sdkTest("messageAttempt listByMsg, listByEndpoint, listAttemptedMessages, listAttemptedDestinations and get", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const [first, path1] = await makeEndpoint(app.id, "attempt-1");
  const [second, path2] = await makeEndpoint(app.id, "attempt-2");
  const eventType = await makeEventType("attempts");
  const msg = await send(app.id, eventType, { a: 1 });
  await receiver.waitFor(path1, 1);
  await receiver.waitFor(path2, 1);

  const attempts = await waitAttempts(app.id, msg.id, 2, MessageStatus.Success);
  const byEndpoint = Object.fromEntries(attempts.map((a) => [a.endpointId, a]));
  assert.deepEqual(sorted(Object.keys(byEndpoint)), sorted([first.id, second.id]));
  const attempt = byEndpoint[first.id];
  assert.match(attempt.id, /^atmpt_/);
  assert.equal(attempt.msgId, msg.id);
  assert.equal(attempt.url, first.url);
  assert.equal(attempt.responseStatusCode, 200);
  assert.equal(attempt.status, MessageStatus.Success);
  assert.equal(attempt.statusText, MessageStatusText.Success);
  assert.equal(attempt.triggerType, MessageAttemptTriggerType.Scheduled);
  assert.ok(attempt.responseDurationMs >= 0);
  assertRecent(attempt.timestamp, "timestamp");

  const onlySecond = await attemptsOf(app.id, msg.id, { endpointId: second.id });
  assert.deepEqual(ids(onlySecond), [byEndpoint[second.id].id]);

  const fetched = await svix.messageAttempt.get(app.id, msg.id, attempt.id);
  assert.deepEqual([fetched.id, fetched.endpointId, fetched.msgId], [attempt.id, first.id, msg.id]);
  assert.equal(fetched.status, MessageStatus.Success);

  const succeeded = await svix.messageAttempt.listByEndpoint(app.id, first.id, { status: MessageStatus.Success });
  assert.deepEqual(ids(succeeded.data), [attempt.id]);
  const failed = await svix.messageAttempt.listByEndpoint(app.id, first.id, { status: MessageStatus.Fail });
  assert.deepEqual(failed.data, []);
  const twoXx = await svix.messageAttempt.listByEndpoint(app.id, first.id, {
    statusCodeClass: StatusCodeClass.Code2xx,
  });
  assert.deepEqual(ids(twoXx.data), [attempt.id]);

  const attempted = await svix.messageAttempt.listAttemptedMessages(app.id, first.id);
  assert.deepEqual(ids(attempted.data), [msg.id]);
  assert.equal(attempted.data[0].status, MessageStatus.Success);
  assert.equal(attempted.data[0].statusText, MessageStatusText.Success);
  assert.equal(attempted.data[0].eventType, eventType);

  const destinations = await svix.messageAttempt.listAttemptedDestinations(app.id, msg.id);
  assert.deepEqual(Object.fromEntries(destinations.data.map((d) => [d.id, d.status])), {
    [first.id]: MessageStatus.Success,
    [second.id]: MessageStatus.Success,
  });
  assert.deepEqual(Object.fromEntries(destinations.data.map((d) => [d.id, d.url])), {
    [first.id]: first.url,
    [second.id]: second.url,
  });
});

sdkTest("messageAttempt.resend makes a manual attempt", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const [endpoint, path] = await makeEndpoint(app.id, "resend");
  const eventType = await makeEventType("resend");
  const msg = await send(app.id, eventType, { again: true });
  await receiver.waitFor(path, 1);
  await waitAttempts(app.id, msg.id, 1, MessageStatus.Success);

  const result = await svix.messageAttempt.resend(app.id, msg.id, endpoint.id);
  assert.deepEqual(result, {});

  const requests = await receiver.waitFor(path, 2);
  assert.deepEqual(requests.map(messageId), [msg.id, msg.id]);
  assert.deepEqual(JSON.parse(requests[1].body.toString("utf8")), { again: true });
  verify((await svix.endpoint.getSecret(app.id, endpoint.id)).key, requests[1]);

  const attempts = await waitAttempts(app.id, msg.id, 2, MessageStatus.Success);
  const byTime = [...attempts].sort((a, b) => a.timestamp - b.timestamp);
  assert.equal(byTime[1].triggerType, MessageAttemptTriggerType.Manual);
  assert.equal(byTime[0].triggerType, MessageAttemptTriggerType.Scheduled);
  assert.equal(attempts[0].id, byTime[1].id, "attempts are listed newest first");
});

sdkTest("messageAttempt.expungeContent removes the response body", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const [, path] = await makeEndpoint(app.id, "attempt-expunge");
  receiver.respond(path, 200, { body: "receipt-7f3a-confidential" });
  const eventType = await makeEventType("attempt-expunge");
  const msg = await send(app.id, eventType, { x: 1 });
  await receiver.waitFor(path, 1);
  const [attempt] = await waitAttempts(app.id, msg.id, 1, MessageStatus.Success);

  const withBody = await attemptsOf(app.id, msg.id, { withContent: true });
  assert.equal(withBody[0].response, "receipt-7f3a-confidential");
  assert.equal((await svix.messageAttempt.get(app.id, msg.id, attempt.id)).response, "receipt-7f3a-confidential");

  assert.equal(await svix.messageAttempt.expungeContent(app.id, msg.id, attempt.id), undefined);
  const after = await svix.messageAttempt.get(app.id, msg.id, attempt.id);
  assert.equal(after.id, attempt.id);
  assert.ok(!after.response.includes("confidential"));
  assert.ok(!(await attemptsOf(app.id, msg.id, { withContent: true }))[0].response.includes("confidential"));
});

// --------------------------------------------------------------------------- //
// Retries, failures and recovery
// --------------------------------------------------------------------------- //

sdkTest("a failing endpoint is retried, fails, and endpoint.recover re-sends", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const [endpoint, path] = await makeEndpoint(app.id, "fails");
  receiver.respond(path, 500, { body: "boom" });
  const eventType = await makeEventType("fails");
  const msg = await send(app.id, eventType, { try: "hard" });

  const expectedAttempts = 1 + ctx.server.retrySchedule.length; // 1 + 3
  await receiver.waitFor(path, expectedAttempts);
  await waitUntil(
    () => endpointMessageStatus(app.id, endpoint.id, msg.id),
    (status) => status === MessageStatus.Fail,
    "the message to end in status fail",
  );
  const requests = await receiver.assertStays(path, expectedAttempts, 1500);
  assert.deepEqual(new Set(requests.map(messageId)), new Set([msg.id]), "retries keep the message id");
  const gaps = requests.slice(1).map((r, i) => r.receivedAt - requests[i].receivedAt);
  assert.ok(
    gaps.every((gap) => gap >= 700),
    `retries must follow the schedule, gaps ${gaps}`,
  );

  const attempts = await waitAttempts(app.id, msg.id, expectedAttempts, MessageStatus.Fail);
  assert.ok(attempts.every((a) => a.responseStatusCode === 500));
  assert.ok(attempts.every((a) => a.triggerType === MessageAttemptTriggerType.Scheduled));
  const destinations = (await svix.messageAttempt.listAttemptedDestinations(app.id, msg.id)).data;
  assert.equal(destinations.length, 1);
  assert.equal(destinations[0].status, MessageStatus.Fail);
  let stats = await svix.endpoint.getStats(app.id, endpoint.id);
  assert.deepEqual([stats.success, stats.fail, stats.pending, stats.sending], [0, 1, 0, 0]);

  // The endpoint is fixed; recover re-sends what failed.
  receiver.respond(path, 200);
  const task = await svix.endpoint.recover(app.id, endpoint.id, { since: new Date(Date.now() - 600_000) });
  assert.match(task.id, /^qtask_/);
  assert.equal(task.task, BackgroundTaskType.EndpointRecover);
  assert.ok([BackgroundTaskStatus.Running, BackgroundTaskStatus.Finished].includes(task.status));
  assertRecent(task.updatedAt, "updatedAt");

  const recovered = await receiver.waitFor(path, expectedAttempts + 1);
  assert.equal(messageId(recovered.at(-1)), msg.id);
  await waitUntil(
    () => endpointMessageStatus(app.id, endpoint.id, msg.id),
    (status) => status === MessageStatus.Success,
    "the recovered message to succeed",
  );
  stats = await waitUntil(
    () => svix.endpoint.getStats(app.id, endpoint.id),
    (s) => s.success === 1,
    "stats to count the recovered message",
  );
  assert.equal(stats.fail, 0);
});

sdkTest("a 410 Gone disables the endpoint", async (t) => {
  const { svix, receiver } = ctx;
  const app = await newApp(t);
  const [endpoint, path] = await makeEndpoint(app.id, "gone");
  receiver.respond(path, 410, { body: "gone" });
  const eventType = await makeEventType("gone");
  await send(app.id, eventType, { bye: true });

  await receiver.waitFor(path, 1);
  await waitUntil(
    async () => (await svix.endpoint.get(app.id, endpoint.id)).disabled,
    (disabled) => disabled === true,
    "the endpoint to be disabled after a 410",
  );
  // A disabled endpoint is not a destination of new messages.
  const later = await send(app.id, eventType, { later: true });
  const destinations = await svix.messageAttempt.listAttemptedDestinations(app.id, later.id);
  assert.ok(!ids(destinations.data).includes(endpoint.id));
});

sdkTest("a 307 redirect is a failed attempt and is not followed", async (t) => {
  const { receiver } = ctx;
  const app = await newApp(t);
  const targetPath = receiver.newPath("redirect-target");
  const [, path] = await makeEndpoint(app.id, "redirect");
  receiver.respond(path, 307, { headers: { location: receiver.url(targetPath) } });
  const eventType = await makeEventType("redirect");
  const msg = await send(app.id, eventType, { moved: true });

  await receiver.waitFor(path, 1);
  const attempts = await waitUntil(
    () => attemptsOf(app.id, msg.id),
    (data) => data.length >= 1,
    "the first attempt to be recorded",
  );
  const first = [...attempts].sort((a, b) => a.timestamp - b.timestamp)[0];
  assert.equal(first.status, MessageStatus.Fail);
  assert.equal(first.responseStatusCode, 307);
  await receiver.assertStays(targetPath, 0, 1500);
});

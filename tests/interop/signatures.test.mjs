// Cross-language interop checks, Node side: Hookline's signatures against the
// npm packages `standardwebhooks`, `@octokit/webhooks-methods` and `stripe`.
//
// Run from the repository root with:  node --test tests/interop/
// The binary comes from $HOOKLINE_BIN (default target/debug/hookline, relative
// to the repository root). A missing binary fails the run; it is never skipped.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import standardwebhooks from 'standardwebhooks';
import { sign as octokitSign, verify as octokitVerify } from '@octokit/webhooks-methods';
import Stripe from 'stripe';

const { Webhook, WebhookVerificationError } = standardwebhooks;

// ---------------------------------------------------------------------------
// Locating the binary
// ---------------------------------------------------------------------------

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const HOOKLINE = path.resolve(REPO_ROOT, process.env.HOOKLINE_BIN || 'target/debug/hookline');

try {
  accessSync(HOOKLINE, constants.X_OK);
} catch {
  throw new Error(
    `hookline binary not found or not executable at ${HOOKLINE}. ` +
      'Build it (cargo build -p hookline) or point HOOKLINE_BIN at it.',
  );
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

// Svix-shaped secret (24 random bytes) and a 32-byte one, both `whsec_` + base64.
const SECRET_A = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const SECRET_B = 'whsec_' + Buffer.from('hookline-interop-node-secret-b!!').toString('base64');
const SECRET_C = 'whsec_' + Buffer.from('hookline-interop-node-secret-c!!').toString('base64');
// Stripe keys are raw UTF-8 even with the whsec_ prefix (these are also valid base64).
const STRIPE_A = 'whsec_StripeInteropAlpha0123456789abcdefgh';
const STRIPE_B = 'whsec_StripeInteropBravo0123456789abcdefgh';
// A GitHub secret with non-ASCII characters: the HMAC key is its UTF-8 bytes.
const GITHUB_SECRET = 'gh-interop-sécret-✓-0123456789';
// OpenAI-style raw (non-prefixed) secret.
const OPENAI_RAW = 'hookline-openai-raw-secret-0123456789abcdef';

const MSG_ID = 'msg_2bF9XhQvYk0Zr1aTnUcW7pLd';
const FIXED_TS = 1_700_000_000;

const EVENT = {
  id: 'evt_hookline_interop_1',
  object: 'event',
  type: 'response.completed',
  created_at: FIXED_TS,
  data: {
    id: 'resp_abc123',
    note: 'héllo ✓',
    hook: '🪝 naïve café – “quoted” ',
    escaped: 'tab\there, slash \\ and "quotes"',
  },
};
const BODIES = {
  compact: JSON.stringify(EVENT),
  pretty: JSON.stringify(EVENT, null, 2) + '\n',
};

// Change exactly one ASCII byte ("resp_abc123" -> "resp_bbc123").
function tamper(body) {
  const out = body.replace('resp_abc123', 'resp_bbc123');
  assert.notEqual(out, body);
  assert.equal(Buffer.byteLength(out), Buffer.byteLength(body));
  return out;
}

const nowTs = () => Math.floor(Date.now() / 1000);

// ---------------------------------------------------------------------------
// Driving the binary
// ---------------------------------------------------------------------------

const workdir = mkdtempSync(path.join(tmpdir(), 'hookline-interop-'));
process.on('exit', () => rmSync(workdir, { recursive: true, force: true }));
let bodyCounter = 0;

function run(args, body) {
  const file = path.join(workdir, `body-${++bodyCounter}.bin`);
  writeFileSync(file, Buffer.from(body, 'utf8'));
  const res = spawnSync(HOOKLINE, [...args, '--body-file', file], {
    encoding: 'utf8',
    timeout: 15_000,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (res.error) throw res.error;
  return {
    code: res.status,
    stdout: res.stdout,
    stderr: res.stderr,
    output: `${res.stdout}\n${res.stderr}`.trim(),
    describe: () => `exit ${res.status}\nstdout: ${JSON.stringify(res.stdout)}\nstderr: ${JSON.stringify(res.stderr)}`,
  };
}

const secretArgs = (secrets) => [secrets].flat().flatMap((s) => ['--secret', s]);

function parseHeaders(text) {
  const headers = {};
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const i = line.indexOf(': ');
    assert.ok(i > 0, `not a "name: value" line: ${JSON.stringify(line)}`);
    const name = line.slice(0, i);
    assert.equal(name, name.toLowerCase(), `header name not lowercase: ${name}`);
    assert.ok(!(name in headers), `header ${name} printed twice`);
    headers[name] = line.slice(i + 2);
  }
  return headers;
}

function hlSign(scheme, secrets, body, { id = MSG_ID, timestamp } = {}) {
  const args = ['sign', '--scheme', scheme, ...secretArgs(secrets)];
  if (id !== null) args.push('--id', id);
  if (timestamp !== undefined) args.push('--timestamp', String(timestamp));
  const res = run(args, body);
  assert.equal(res.code, 0, `hookline sign failed\n${res.describe()}`);
  return parseHeaders(res.stdout);
}

function hlVerify(scheme, secrets, headers, body, { now, tolerance } = {}) {
  const args = ['verify', '--scheme', scheme, ...secretArgs(secrets)];
  for (const [name, value] of Object.entries(headers)) args.push('-H', `${name}: ${value}`);
  if (now !== undefined) args.push('--now', String(now));
  if (tolerance !== undefined) args.push('--tolerance', String(tolerance));
  return run(args, body);
}

function assertValid(res) {
  assert.ok(res.code === 0 && res.stdout.trim() === 'valid', `expected \`valid\`, exit 0\n${res.describe()}`);
}

function assertRejected(res, ...needles) {
  assert.equal(res.code, 1, `expected exit 1\n${res.describe()}`);
  assert.notEqual(res.stdout.trim(), 'valid');
  for (const needle of needles) {
    assert.ok(res.output.toLowerCase().includes(needle), `expected "${needle}" in the reason\n${res.describe()}`);
  }
}

const stripe = new Stripe('sk_test_hookline_interop_not_used');

// ===========================================================================
// Hookline signs, the npm libraries verify
// ===========================================================================

for (const [label, body] of Object.entries(BODIES)) {
  test(`standardwebhooks verifies hookline standard signature (${label})`, () => {
    const headers = hlSign('standard', SECRET_A, body, { timestamp: nowTs() });
    assert.deepEqual(Object.keys(headers).sort(), ['webhook-id', 'webhook-signature', 'webhook-timestamp']);
    const wh = new Webhook(SECRET_A);
    assert.deepEqual(wh.verify(body, headers), JSON.parse(body));
    assert.deepEqual(wh.verify(Buffer.from(body, 'utf8'), headers), JSON.parse(body));
    assert.throws(() => wh.verify(tamper(body), headers), WebhookVerificationError);
    assert.throws(() => new Webhook(SECRET_C).verify(body, headers), WebhookVerificationError);
  });

  test(`octokit verifies hookline github signature (${label})`, async () => {
    const headers = hlSign('github', GITHUB_SECRET, body, { id: '72d3162e-cc78-11e3-81ab-4c9367dc0958' });
    const sig = headers['x-hub-signature-256'];
    assert.match(sig, /^sha256=[0-9a-f]{64}$/);
    assert.equal(await octokitVerify(GITHUB_SECRET, body, sig), true);
    assert.equal(await octokitVerify(GITHUB_SECRET, tamper(body), sig), false);
    assert.equal(await octokitVerify(GITHUB_SECRET + 'x', body, sig), false);
  });

  test(`stripe constructEvent accepts hookline stripe signature (${label})`, () => {
    const ts = nowTs();
    const sig = hlSign('stripe', STRIPE_A, body, { timestamp: ts })['stripe-signature'];
    assert.match(sig, new RegExp(`^t=${ts},v1=[0-9a-f]{64}$`));
    const event = stripe.webhooks.constructEvent(body, sig, STRIPE_A);
    assert.equal(event.id, 'evt_hookline_interop_1');
    assert.equal(event.data.note, 'héllo ✓');
    assert.equal(stripe.webhooks.constructEvent(Buffer.from(body, 'utf8'), sig, STRIPE_A).id, event.id);
    assert.throws(() => stripe.webhooks.constructEvent(tamper(body), sig, STRIPE_A), /No signatures found matching/);
  });
}

test('standardwebhooks raw-key mode verifies hookline openai signature with a non-prefixed secret', () => {
  // ASCII secret, so standardwebhooks' char-code conversion equals UTF-8.
  const headers = hlSign('openai', OPENAI_RAW, BODIES.compact, { timestamp: nowTs() });
  const wh = new Webhook(OPENAI_RAW, { format: 'raw' });
  assert.deepEqual(wh.verify(BODIES.compact, headers), EVENT);
  assert.throws(() => wh.verify(tamper(BODIES.compact), headers), WebhookVerificationError);
});

test('rotation: hookline signs with two keys, standardwebhooks and stripe accept either', () => {
  const body = BODIES.compact;
  const std = hlSign('standard', [SECRET_A, SECRET_B], body, { timestamp: nowTs() });
  assert.equal(std['webhook-signature'].split(' ').length, 2);
  for (const secret of [SECRET_A, SECRET_B]) {
    assert.deepEqual(new Webhook(secret).verify(body, std), EVENT);
  }
  assert.throws(() => new Webhook(SECRET_C).verify(body, std), WebhookVerificationError);

  const sig = hlSign('stripe', [STRIPE_A, STRIPE_B], body, { timestamp: nowTs() })['stripe-signature'];
  assert.equal(sig.split(',').filter((p) => p.startsWith('v1=')).length, 2);
  for (const secret of [STRIPE_A, STRIPE_B]) {
    assert.equal(stripe.webhooks.constructEvent(body, sig, secret).id, EVENT.id);
  }
});

// ===========================================================================
// The npm libraries sign, Hookline verifies
// ===========================================================================

for (const [label, body] of Object.entries(BODIES)) {
  test(`hookline verifies standardwebhooks signature (${label})`, () => {
    const ts = FIXED_TS;
    const sig = new Webhook(SECRET_B).sign(MSG_ID, new Date(ts * 1000), body);
    const headers = { 'webhook-id': MSG_ID, 'webhook-timestamp': String(ts), 'webhook-signature': sig };
    assertValid(hlVerify('standard', SECRET_B, headers, body, { now: ts }));
    assertValid(hlVerify('openai', SECRET_B, headers, body, { now: ts }));
    const svixHeaders = { 'svix-id': MSG_ID, 'svix-timestamp': String(ts), 'svix-signature': sig };
    assertValid(hlVerify('svix', SECRET_B, svixHeaders, body, { now: ts }));
    assertRejected(hlVerify('standard', SECRET_B, headers, tamper(body), { now: ts }), 'no signature matched');
    assertRejected(hlVerify('standard', SECRET_C, headers, body, { now: ts }), 'no signature matched');
  });

  test(`hookline verifies octokit signature (${label})`, async () => {
    const sig = await octokitSign(GITHUB_SECRET, body);
    const headers = { 'x-hub-signature-256': sig, 'x-github-delivery': '72d3162e-cc78-11e3-81ab-4c9367dc0958' };
    assertValid(hlVerify('github', GITHUB_SECRET, headers, body));
    assertRejected(hlVerify('github', GITHUB_SECRET, headers, tamper(body)), 'no signature matched');
    assertRejected(hlVerify('github', GITHUB_SECRET + 'x', headers, body), 'no signature matched');
  });

  test(`hookline verifies stripe generateTestHeaderString (${label})`, () => {
    const ts = FIXED_TS;
    const sig = stripe.webhooks.generateTestHeaderString({ payload: body, secret: STRIPE_A, timestamp: ts });
    assert.match(sig, new RegExp(`^t=${ts},v1=[0-9a-f]{64}$`));
    const headers = { 'stripe-signature': sig };
    assertValid(hlVerify('stripe', STRIPE_A, headers, body, { now: ts }));
    assertRejected(hlVerify('stripe', STRIPE_A, headers, tamper(body), { now: ts }), 'no signature matched');
    assertRejected(hlVerify('stripe', STRIPE_B, headers, body, { now: ts }), 'no signature matched');
  });
}

test('rotation: a library header holding two signatures verifies in hookline with either key', () => {
  const body = BODIES.pretty;
  const ts = FIXED_TS;
  const date = new Date(ts * 1000);
  const joined = `${new Webhook(SECRET_A).sign(MSG_ID, date, body)} ${new Webhook(SECRET_B).sign(MSG_ID, date, body)}`;
  const headers = { 'webhook-id': MSG_ID, 'webhook-timestamp': String(ts), 'webhook-signature': joined };
  assertValid(hlVerify('standard', SECRET_A, headers, body, { now: ts }));
  assertValid(hlVerify('standard', SECRET_B, headers, body, { now: ts }));
  assertRejected(hlVerify('standard', SECRET_C, headers, body, { now: ts }), 'no signature matched');

  const v1 = (secret) =>
    stripe.webhooks.generateTestHeaderString({ payload: body, secret, timestamp: ts }).split(',v1=')[1];
  const stripeHeaders = { 'stripe-signature': `t=${ts},v1=${v1(STRIPE_A)},v1=${v1(STRIPE_B)}` };
  assertValid(hlVerify('stripe', STRIPE_A, stripeHeaders, body, { now: ts }));
  assertValid(hlVerify('stripe', STRIPE_B, stripeHeaders, body, { now: ts }));
});

// ===========================================================================
// Tolerance edges: Hookline's boundary matches the libraries' with the clock pinned
// ===========================================================================

for (const [age, reason] of [[300, null], [301, 'too old'], [-300, null], [-301, 'too new']]) {
  test(`standard tolerance edge, age ${age} s: hookline agrees with standardwebhooks`, (t) => {
    const ts = FIXED_TS;
    const body = BODIES.compact;
    const sig = new Webhook(SECRET_B).sign(MSG_ID, new Date(ts * 1000), body);
    const headers = { 'webhook-id': MSG_ID, 'webhook-timestamp': String(ts), 'webhook-signature': sig };

    t.mock.method(Date, 'now', () => (ts + age) * 1000);
    const libVerify = () => new Webhook(SECRET_B).verify(body, headers);
    if (reason === null) libVerify();
    else assert.throws(libVerify, new RegExp(reason));
    t.mock.restoreAll();

    const res = hlVerify('standard', SECRET_B, headers, body, { now: ts + age });
    if (reason === null) assertValid(res);
    else assertRejected(res, reason);
  });
}

for (const [age, reason] of [[300, null], [301, 'too old'], [-10_000, null]]) {
  test(`stripe tolerance edge, age ${age} s: hookline agrees with stripe`, () => {
    const ts = FIXED_TS;
    const body = BODIES.compact;
    const sig = stripe.webhooks.generateTestHeaderString({ payload: body, secret: STRIPE_A, timestamp: ts });
    const receivedAtMs = (ts + age) * 1000;
    const libVerify = () => stripe.webhooks.constructEvent(body, sig, STRIPE_A, 300, undefined, receivedAtMs);
    if (reason === null) libVerify();
    else assert.throws(libVerify, /Timestamp outside the tolerance zone/);

    const res = hlVerify('stripe', STRIPE_A, { 'stripe-signature': sig }, body, { now: ts + age });
    if (reason === null) assertValid(res);
    else assertRejected(res, reason);
  });
}

// ===========================================================================
// Missing headers are named
// ===========================================================================

test('missing headers are reported by name', () => {
  const body = BODIES.compact;
  assertRejected(hlVerify('github', GITHUB_SECRET, {}, body), 'missing header x-hub-signature-256');
  assertRejected(hlVerify('stripe', STRIPE_A, {}, body, { now: FIXED_TS }), 'missing header stripe-signature');
  assertRejected(
    hlVerify('standard', SECRET_A, { 'webhook-id': MSG_ID, 'webhook-timestamp': String(FIXED_TS) }, body, { now: FIXED_TS }),
    'missing header webhook-signature',
  );
});

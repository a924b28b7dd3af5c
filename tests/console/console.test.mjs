// End-to-end test of the web console (`/console`, crates/hookline-server/console) in a
// real headless browser: Debian's chromium driven by playwright-core, against a real
// `hookline serve` and a real receiving endpoint on loopback.
//
// What a developer whose webhook "didn't arrive" does: sign in, find the failed delivery
// and why it failed, resend it and see it succeed; find the refused inbound request and
// why it was refused; replay an accepted one to the source's forwarding endpoint. And an
// app-portal link (`/console#token=…`) signs in with its token and drops it from the
// address bar.
//
// Run with:  scripts/setup-console && node --test tests/console/
// Environment:
//   HOOKLINE_BIN                   the binary (default target/debug/hookline); its console
//                                  is the embedded one unless HOOKLINE_CONSOLE_DIR is set
//   HOOKLINE_CONSOLE_DATABASE_URL  run on this database (PostgreSQL) instead of a temporary
//                                  SQLite file
//   CHROMIUM                       the browser (default /usr/bin/chromium)

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac, randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
// Every wait is bounded by this (milliseconds); the console refreshes every 2.5 s.
const WAIT = 20_000;

function hooklineBin() {
  const raw = process.env.HOOKLINE_BIN || "target/debug/hookline";
  return path.isAbsolute(raw) ? raw : path.join(REPO_ROOT, raw);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

async function waitUntil(check, what, timeout = WAIT) {
  const deadline = performance.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (performance.now() > deadline) assert.fail(`timed out after ${timeout / 1000}s waiting for ${what}`);
    await sleep(100);
  }
}

// --------------------------------------------------------------------------------------
// The receiving endpoint: records requests; a path set to fail answers 500 once.

class Receiver {
  requests = [];
  failOnce = new Set();

  async start() {
    this.server = http.createServer((req, res) => {
      const chunks = [];
      req.on("data", (chunk) => chunks.push(chunk));
      req.on("end", () => {
        const pathname = req.url.split("?")[0];
        this.requests.push({ path: pathname, headers: req.headers, body: Buffer.concat(chunks).toString() });
        const fail = this.failOnce.delete(pathname);
        res.writeHead(fail ? 500 : 200, { "content-type": "text/plain", "x-receiver": "console-test" });
        res.end(fail ? "receiver down for maintenance" : "thanks");
      });
    });
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = this.server.address().port;
    return this;
  }

  url(pathname) {
    return `http://127.0.0.1:${this.port}${pathname}`;
  }

  count(pathname) {
    return this.requests.filter((r) => r.path === pathname).length;
  }

  async close() {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

// --------------------------------------------------------------------------------------
// The server

class Hookline {
  async start() {
    const binary = hooklineBin();
    try {
      fs.accessSync(binary, fs.constants.X_OK);
    } catch {
      throw new Error(`hookline binary not found at ${binary}: build it (cargo build -p hookline) or set HOOKLINE_BIN`);
    }
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "hookline-console-"));
    this.token = `hookline-console-test-${randomBytes(16).toString("hex")}`;
    this.logPath = path.join(this.dir, "hookline.log");
    const port = await freePort();
    this.url = `http://127.0.0.1:${port}`;
    // Nothing of the caller's HOOKLINE_* settings but the log level, and the console's
    // files from disk when working on them.
    const passed = new Set(["HOOKLINE_LOG_LEVEL", "HOOKLINE_CONSOLE_DIR"]);
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("HOOKLINE_") || passed.has(key)));
    Object.assign(env, {
      HOOKLINE_LISTEN: `127.0.0.1:${port}`,
      HOOKLINE_DATABASE_URL:
        process.env.HOOKLINE_CONSOLE_DATABASE_URL || `sqlite://${path.join(this.dir, "hookline.db")}`,
      HOOKLINE_ADMIN_TOKEN: this.token,
      HOOKLINE_ALLOWED_SUBNETS: "127.0.0.0/8",
      // A failed delivery waits an hour for its retry: only the resend can deliver it.
      HOOKLINE_RETRY_SCHEDULE: "3600",
      HOOKLINE_ATTEMPT_TIMEOUT: "5",
      HOOKLINE_LOG_FORMAT: "json",
    });
    const log = fs.openSync(this.logPath, "w");
    this.child = spawn(binary, ["serve"], { cwd: this.dir, env, stdio: ["ignore", log, log] });
    fs.closeSync(log);
    this.exited = new Promise((resolve) => this.child.once("exit", resolve));
    await waitUntil(async () => {
      if (this.child.exitCode !== null) assert.fail(`hookline serve exited:\n${this.logTail()}`);
      try {
        return (await fetch(`${this.url}/api/v1/health`)).status === 204;
      } catch {
        return false;
      }
    }, "hookline serve to answer /api/v1/health");
    return this;
  }

  /** An API call as admin; fails on any non-2xx answer. */
  async api(method, pathname, body) {
    const response = await fetch(`${this.url}${pathname}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    assert.ok(response.ok, `${method} ${pathname} answered ${response.status}: ${text}`);
    return text ? JSON.parse(text) : null;
  }

  logTail(lines = 40) {
    try {
      return fs.readFileSync(this.logPath, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  }

  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    this.child.kill("SIGTERM");
    if (!(await Promise.race([this.exited.then(() => true), sleep(10_000, false)]))) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }
}

/** The headers a Standard Webhooks sender signs `body` with (`whsec_` secret). */
function standardWebhookHeaders(secret, id, body) {
  const timestamp = Math.floor(Date.now() / 1000);
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const signature = createHmac("sha256", key).update(`${id}.${timestamp}.${body}`).digest("base64");
  return { "webhook-id": id, "webhook-timestamp": String(timestamp), "webhook-signature": `v1,${signature}` };
}

// --------------------------------------------------------------------------------------
// Fixtures: the server, the receiver, the data, the browser

const fx = {};

before(async () => {
  fx.receiver = await new Receiver().start();
  fx.server = await new Hookline().start();
  const { server, receiver } = fx;
  const suffix = randomUUID().slice(0, 8);

  // A message whose first delivery fails (the receiver answers 500 once).
  fx.app = await server.api("POST", "/api/v1/app", { name: `Console test ${suffix}`, uid: `console-${suffix}` });
  receiver.failOnce.add("/hook");
  fx.endpoint = await server.api("POST", `/api/v1/app/${fx.app.id}/endpoint`, {
    url: receiver.url("/hook"), description: "customer endpoint",
  });
  fx.message = await server.api("POST", `/api/v1/app/${fx.app.id}/msg`, {
    eventType: "invoice.paid", payload: { invoice: `inv_${suffix}`, amount: 4200 },
  });
  await waitUntil(async () => {
    const attempts = await server.api("GET", `/api/v1/app/${fx.app.id}/attempt/msg/${fx.message.id}`);
    return attempts.data.some((a) => a.status === 2);
  }, "the first, failed attempt");

  // A source with a secret, forwarding to the receiver: one refused request (bad
  // signature, with a credential header that must not be shown) and one accepted.
  fx.secret = `whsec_${randomBytes(24).toString("base64")}`;
  fx.source = await server.api("POST", "/ingest/api/v1/source", {
    name: `Provider ${suffix}`, type: "standard-webhooks", config: { secret: fx.secret },
  });
  await server.api("POST", `/ingest/api/v1/source/${fx.source.id}/endpoint`, { url: receiver.url("/forwarded") });
  const body = JSON.stringify({ type: "prediction.completed", id: `p_${suffix}` });
  const refused = await fetch(fx.source.ingestUrl, {
    method: "POST",
    headers: {
      ...standardWebhookHeaders(`whsec_${randomBytes(24).toString("base64")}`, `evt_bad_${suffix}`, body),
      "content-type": "application/json",
      authorization: "Bearer do-not-show-me",
    },
    body,
  });
  assert.equal(refused.status, 401, "a request signed with another secret is refused");
  const accepted = await fetch(fx.source.ingestUrl, {
    method: "POST",
    headers: { ...standardWebhookHeaders(fx.secret, `evt_good_${suffix}`, body), "content-type": "application/json" },
    body,
  });
  assert.equal(accepted.status, 200, `the signed request is accepted: ${await accepted.text()}`);
  await waitUntil(() => receiver.count("/forwarded") >= 1, "the accepted request to be forwarded");

  fx.profile = fs.mkdtempSync(path.join(os.tmpdir(), "hookline-console-chromium-"));
  fx.browser = await chromium.launchPersistentContext(fx.profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  fx.page = fx.browser.pages()[0] ?? (await fx.browser.newPage());
  fx.page.setDefaultTimeout(WAIT);
  fx.pageErrors = [];
  fx.page.on("pageerror", (err) => fx.pageErrors.push(err.message));
  // A policy violation would mean a part of the console does not run as served.
  fx.page.on("console", (msg) => {
    if (msg.type() === "error" && /Content Security Policy/i.test(msg.text())) fx.pageErrors.push(msg.text());
  });
});

after(async () => {
  await fx.browser?.close();
  await fx.server?.stop();
  await fx.receiver?.close();
  if (fx.profile) fs.rmSync(fx.profile, { recursive: true, force: true });
  if (fx.server?.dir) fs.rmSync(fx.server.dir, { recursive: true, force: true });
});

/** A step whose failure shows what the page said and the server's log. */
function step(name, fn) {
  test(name, { timeout: 90_000 }, async () => {
    try {
      await fn();
      assert.deepEqual(fx.pageErrors, [], "the page raised no error");
    } catch (err) {
      const shown = await fx.page?.evaluate(() => document.body.innerText).catch(() => "(page unavailable)");
      err.message +=
        `\n\n--- the page said:\n${String(shown).slice(0, 3000)}` +
        `\n\n--- hookline serve log (last lines):\n${fx.server?.logTail(15)}`;
      throw err;
    }
  });
}

const text = (locator) => locator.innerText();

/** A time as a datetime-local input takes it: local time, to the minute. */
function localMinute(t) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())}T${pad(t.getHours())}:${pad(t.getMinutes())}`;
}

// --------------------------------------------------------------------------------------
// The steps, in order: each starts where the one before left the page.

step("a wrong token is refused with the server's reason", async () => {
  const { page, server } = fx;
  await page.goto(`${server.url}/console`);
  await page.fill("#token", "not-a-token-of-this-server");
  await page.click("form.sign-in button[type=submit]");
  const error = page.locator("form.sign-in .form-error");
  await error.filter({ hasText: "not accepted" }).waitFor();
  assert.match(await text(error), /401/);
});

step("signs in with the admin token and lists the applications", async () => {
  const { page, server } = fx;
  await page.fill("#token", server.token);
  await page.click("form.sign-in button[type=submit]");
  await page.locator("#nav a", { hasText: "Applications" }).waitFor();
  await page.locator("table.list a", { hasText: fx.app.name }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("hookline.token")), server.token);
});

step("finds the failed delivery and why it failed", async () => {
  const { page } = fx;
  await page.click(`table.list a:text-is("${fx.app.name}")`);
  await page.click(`table.list a:text-is("${fx.endpoint.url}")`);
  const failed = page.locator("details.attempt.s-fail").first();
  await failed.waitFor();
  assert.match(await text(failed.locator("summary")), /500 Internal Server Error/);
  await failed.locator("summary").click();
  const body = failed.locator(".item-body");
  assert.match(await text(body), /the endpoint answered HTTP 500 Internal Server Error/);
  assert.match(await text(body), /receiver down for maintenance/, "the response body excerpt is shown");
  assert.match(await text(body), new RegExp(`webhook-id: ${fx.message.id}`), "the request as sent names the message");
  // The signature shown is the one the endpoint got with the failed attempt.
  const first = fx.receiver.requests.find((r) => r.path === "/hook");
  const sent = await text(body.locator("pre.sent"));
  assert.ok(sent.includes(`webhook-signature: ${first.headers["webhook-signature"]}`), sent);
  assert.ok(sent.includes(`webhook-timestamp: ${first.headers["webhook-timestamp"]}`), sent);
  // The message page shows the payload.
  await body.locator(`a:text-is("${fx.message.id}")`).click();
  await page.locator("h1", { hasText: "invoice.paid" }).waitFor();
  assert.match(await text(page.locator("section", { hasText: "Payload" }).first()), /"amount": 4200/);
});

step("resends the failed delivery and sees it succeed", async () => {
  const { page, receiver } = fx;
  const before = receiver.count("/hook");
  // The message page opened the failed attempt; resend from it.
  const failed = page.locator("details.attempt.s-fail").first();
  await failed.waitFor();
  if (!(await failed.evaluate((el) => el.open))) await failed.locator("summary").click();
  await failed.locator("button.resend").click();
  await page.locator(".notice.ok", { hasText: "Resend" }).waitFor();
  const delivered = page.locator("details.attempt.s-success").first();
  await delivered.waitFor();
  assert.match(await text(delivered.locator("summary")), /200 OK/);
  assert.equal(receiver.count("/hook"), before + 1, "the endpoint got the resend");
  await page.locator("section", { hasText: "Endpoints" }).locator(".badge", { hasText: "success" }).first().waitFor();
});

step("acts on the endpoint: disable and enable, test event, recover, rotate", async () => {
  const { page, server, receiver } = fx;
  await page.goto(`${server.url}/console/#/app/${fx.app.id}/endpoint/${fx.endpoint.id}`);
  const state = page.locator("section", { hasText: "Endpoint" }).first().locator("dd .badge").first();
  await page.click("#toggle-endpoint");
  await page.locator(".notice.ok", { hasText: "Endpoint disabled" }).waitFor();
  assert.equal(await text(state), "disabled");
  await page.click("#toggle-endpoint");
  await page.locator(".notice.ok", { hasText: "Endpoint enabled" }).waitFor();
  assert.equal(await text(state), "enabled");

  const before = receiver.count("/hook");
  await page.click('button:text-is("Send test event")');
  await page.locator(".notice.ok", { hasText: "svix.ping" }).waitFor();
  await waitUntil(() => receiver.count("/hook") > before, "the test event at the endpoint");
  assert.match(receiver.requests.at(-1).body, /"success":\s*true/);

  // Recover from an hour ago: the console says what the server did.
  await page.fill("#recover-since", localMinute(new Date(Date.now() - 3600_000)));
  await page.click('button:text-is("Recover failed messages")');
  await page.locator("section", { hasText: "Actions" }).locator("p[role=status]", { hasText: "finished" }).waitFor();

  page.once("dialog", (dialog) => dialog.accept());
  await page.click('button:text-is("Rotate secret")');
  await page.locator(".notice.ok", { hasText: "Secret rotated" }).waitFor();
  const rotated = await text(page.locator("code.secret"));
  assert.match(rotated, /^whsec_/);
  const secret = await server.api("GET", `/api/v1/app/${fx.app.id}/endpoint/${fx.endpoint.id}/secret`);
  assert.equal(secret.key, rotated, "the secret shown is the endpoint's new one");
});

step("finds the refused inbound request and why it was refused", async () => {
  const { page } = fx;
  await page.click('#nav a:text-is("Sources")');
  await page.click(`table.list a:text-is("${fx.source.name}")`);
  const refused = page.locator("details.request.v-rejected").first();
  await refused.waitFor();
  assert.match(await text(refused.locator("summary")), /refused/);
  assert.match(await text(refused.locator("summary")), /no_signature_matched/);
  await refused.locator("summary").click();
  const body = refused.locator(".item-body");
  assert.match(await text(body), /no signature matched/);
  assert.match(await text(body), /prediction\.completed/, "the raw body is shown");
  assert.match(await text(body), /authorization\s+\[redacted\]/, "credentials are not shown");
  assert.doesNotMatch(await text(body), /do-not-show-me/);
  // The forwarding section fills in when the item opens: wait for it rather than read it early.
  await body.locator("p", { hasText: "Refused requests are not forwarded" }).waitFor();
  // Filtering by verdict leaves the refused request alone.
  await page.selectOption("#log-verdict", "rejected");
  await waitUntil(async () => (await page.locator("details.request.v-accepted").count()) === 0, "the verdict filter");
  await page.selectOption("#log-verdict", "");
});

step("replays an accepted inbound request to the forwarding endpoint", async () => {
  const { page, receiver } = fx;
  const before = receiver.count("/forwarded");
  const accepted = page.locator("details.request.v-accepted").first();
  await accepted.waitFor();
  await accepted.locator("summary").click();
  // Where it was forwarded, and how that went.
  const forwarding = accepted.locator(".item-body table.list", { hasText: "/forwarded" });
  await forwarding.waitFor();
  assert.match(await text(forwarding), /success/, "the forwarded delivery succeeded");
  await accepted.locator("button.replay").click();
  // The server's answer, whichever it is: an error notice names the refusal.
  const notice = page.locator(".notice:not([hidden])");
  await notice.waitFor();
  assert.match(await text(notice), /replayed/, "the console reports the replay");
  await waitUntil(() => receiver.count("/forwarded") > before, "the replayed request at the forwarding endpoint");
  const again = receiver.requests.filter((r) => r.path === "/forwarded").at(-1);
  assert.match(again.body, /prediction\.completed/, "the replay forwards the request's body");

  // A time range: the last hour holds the one accepted request (the refused one is skipped).
  const count = receiver.count("/forwarded");
  await page.fill("#replay-since", localMinute(new Date(Date.now() - 3600_000)));
  await page.click('button:text-is("Replay accepted requests")');
  const said = page.locator("section", { hasText: "Replay a time range" }).locator("p[role=status]");
  await said.filter({ hasText: "Replayed" }).waitFor();
  assert.match(await text(said), /Replayed 1 accepted request\(s\).*1 delivery\(ies\).*1 skipped/);
  await waitUntil(() => receiver.count("/forwarded") > count, "the range replay at the forwarding endpoint");
});

step("an app-portal link signs in with its token and takes it out of the address bar", async () => {
  const { browser, server } = fx;
  const access = await server.api("POST", `/api/v1/auth/app-portal-access/${fx.app.id}`, {});
  assert.match(access.url, /\/console#token=[^&]+&app=/);
  // Another tab: sessionStorage is per tab, so it starts signed out.
  const tab = await browser.newPage();
  try {
    tab.setDefaultTimeout(WAIT);
    // A link without its application: the token is scoped and the console asks to what.
    await tab.goto(access.url.replace(/&app=.*$/, ""));
    await tab.locator("#scope").waitFor({ state: "visible" });
    assert.doesNotMatch(tab.url(), /token=/, "the token left the address bar");
    await tab.fill("#scope", fx.app.uid);
    await tab.click("form.sign-in button[type=submit]");
    await tab.locator("h1", { hasText: fx.app.name }).waitFor();
    assert.equal(await text(tab.locator("#who")), `app ${fx.app.name}`);
    assert.doesNotMatch(tab.url(), /token=/);
    // Scoped: no list of applications or sources in the navigation.
    assert.equal(await tab.locator('#nav a:text-is("Sources")').count(), 0);
    // The link as the API gives it names its application and goes straight in.
    const direct = await browser.newPage();
    try {
      await direct.goto(access.url);
      await direct.locator("h1", { hasText: fx.app.name }).waitFor({ timeout: WAIT });
      assert.doesNotMatch(direct.url(), /token=/);
    } finally {
      await direct.close();
    }
    await tab.click("#sign-out");
    await tab.locator("form.sign-in").waitFor();
    assert.equal(await tab.evaluate(() => sessionStorage.getItem("hookline.token")), null);
  } finally {
    await tab.close();
  }
});

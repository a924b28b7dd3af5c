// The fixtures of the Svix JavaScript SDK suite (tests/sdk-js), the counterpart of
// tests/sdk/conftest.py.
//
// One `hookline serve` process is started per test file on a free loopback port, with its
// SQLite database in a temporary directory (or the PostgreSQL database named by
// $HOOKLINE_SDK_DATABASE_URL), and stopped with SIGTERM at the end. The official `svix`
// npm package talks to it. A small HTTP receiver, also on loopback, plays the customer's
// webhook endpoints: it records every request it gets and answers with a status chosen
// per path.
//
// The binary comes from $HOOKLINE_BIN (default target/debug/hookline, relative to the
// repository root). A missing binary is a failure, not a skip.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { ApiException, Svix } from "svix";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

// Every wait in the suite is bounded by this (milliseconds).
export const WAIT_TIMEOUT = 15_000;
const HEALTH_TIMEOUT = 20_000;
const STOP_TIMEOUT = 10_000;
// No test needs more than a few waits; a hung call must not hang the suite.
const TEST_TIMEOUT = 90_000;

// The retry schedule the server runs with: three retries, one second apart (the server
// adds +/-20 % jitter). A delivery that keeps failing therefore makes 1 + 3 attempts.
export const RETRY_SCHEDULE = [1, 1, 1];

export function hooklineBin() {
  const raw = process.env.HOOKLINE_BIN || "target/debug/hookline";
  return path.isAbsolute(raw) ? raw : path.join(REPO_ROOT, raw);
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export function pickFreePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

// --------------------------------------------------------------------------- //
// The webhook receiver
// --------------------------------------------------------------------------- //

/** A loopback HTTP server that records requests and answers as scripted per path.
 *
 * Paths are matched exactly (query string excluded). Unscripted paths answer 200.
 * Each recorded request is `{ method, path, query, headers, body, receivedAt }` with
 * lower-cased header names, the body as a Buffer and `receivedAt` in milliseconds
 * (monotonic clock). */
export class Receiver {
  #requests = [];
  #replies = new Map();
  #server;
  port = 0;

  async start() {
    this.#server = http.createServer((req, res) => {
      const chunks = [];
      req.on("data", (chunk) => chunks.push(chunk));
      req.on("end", () => {
        const [pathname, query = ""] = req.url.split("?", 2);
        const headers = {};
        for (let i = 0; i < req.rawHeaders.length; i += 2) {
          headers[req.rawHeaders[i].toLowerCase()] = req.rawHeaders[i + 1];
        }
        this.#requests.push({
          method: req.method,
          path: pathname,
          query,
          headers,
          body: Buffer.concat(chunks),
          receivedAt: performance.now(),
        });
        const reply = this.#replies.get(pathname) ?? { status: 200, body: "ok", headers: {} };
        const answer = () => {
          res.writeHead(reply.status, {
            ...reply.headers,
            "content-type": "text/plain; charset=utf-8",
            "content-length": Buffer.byteLength(reply.body),
          });
          res.end(req.method === "HEAD" ? undefined : reply.body);
        };
        if (reply.delay) setTimeout(answer, reply.delay);
        else answer();
      });
    });
    await new Promise((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(0, "127.0.0.1", resolve);
    });
    this.port = this.#server.address().port;
    return this;
  }

  async close() {
    this.#server.closeAllConnections();
    await new Promise((resolve) => this.#server.close(resolve));
  }

  // -- scripting ----------------------------------------------------------- //

  /** A fresh path no other test uses. */
  newPath(label = "hook") {
    return `/${label}/${randomUUID().replaceAll("-", "").slice(0, 12)}`;
  }

  url(pathname) {
    return `http://127.0.0.1:${this.port}${pathname}`;
  }

  /** Answer every later request to `pathname` with `status` (and body, headers, delay in ms). */
  respond(pathname, status, { body = "ok", headers = {}, delay = 0 } = {}) {
    this.#replies.set(pathname, { status, body, headers, delay });
  }

  // -- inspection ---------------------------------------------------------- //

  requests(pathname) {
    return this.#requests.filter((r) => pathname === undefined || r.path === pathname);
  }

  /** Poll until `pathname` got at least `count` requests; return them all. */
  async waitFor(pathname, count = 1, timeout = WAIT_TIMEOUT) {
    const deadline = performance.now() + timeout;
    for (;;) {
      const got = this.requests(pathname);
      if (got.length >= count) return got;
      if (performance.now() >= deadline) {
        assert.fail(
          `receiver path ${pathname} got ${got.length} request(s) within ${timeout / 1000}s, ` +
            `expected at least ${count}`,
        );
      }
      await sleep(50);
    }
  }

  /** Check that `pathname` holds exactly `count` requests and gets no more for `quiet` ms.
   *
   * This is the one place the suite waits without a condition: proving that something
   * does *not* arrive needs a window of time. */
  async assertStays(pathname, count, quiet = 1000) {
    const deadline = performance.now() + quiet;
    for (;;) {
      const got = this.requests(pathname);
      assert.equal(
        got.length,
        count,
        `receiver path ${pathname} got ${got.length} request(s), expected exactly ${count}`,
      );
      if (performance.now() >= deadline) return got;
      await sleep(50);
    }
  }
}

// --------------------------------------------------------------------------- //
// The server process
// --------------------------------------------------------------------------- //

async function healthOk(url) {
  // Plain fetch rather than the SDK: this runs before the server is known to be up, and
  // the SDK would retry and throw on connection errors instead of answering yes or no.
  try {
    const response = await fetch(`${url}/api/v1/health`, { signal: AbortSignal.timeout(1000) });
    await response.arrayBuffer();
    return response.status === 204;
  } catch {
    return false;
  }
}

export class HooklineServer {
  constructor({ url, port, token, dataDir, logPath, child }) {
    Object.assign(this, { url, port, token, dataDir, logPath, child });
    this.retrySchedule = RETRY_SCHEDULE;
    this.exitCode = null;
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.exitCode = code ?? signal;
        resolve();
      });
    });
  }

  get running() {
    return this.exitCode === null;
  }

  logTail(lines = 40) {
    try {
      return fs.readFileSync(this.logPath, "utf8").split("\n").slice(-lines - 1).join("\n");
    } catch (err) {
      return `(cannot read ${this.logPath}: ${err.message})`;
    }
  }

  async stop() {
    if (!this.running) return;
    this.child.kill("SIGTERM");
    const stopped = await Promise.race([this.exited.then(() => true), sleep(STOP_TIMEOUT, false)]);
    if (!stopped) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }
}

/** Start `hookline serve`; resolve to `[server, ""]` once healthy, or `[server, reason]`. */
async function startServer(dataDir, token, port, attempt) {
  const logPath = path.join(dataDir, `hookline-stderr-${attempt}.log`);
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      // Keep the caller's logging preferences, nothing else that could change behaviour.
      ([key]) =>
        !key.startsWith("HOOKLINE_") || key === "HOOKLINE_LOG_LEVEL" || key === "HOOKLINE_LOG_FORMAT",
    ),
  );
  Object.assign(env, {
    HOOKLINE_LISTEN: `127.0.0.1:${port}`,
    // HOOKLINE_SDK_DATABASE_URL runs the suite on another backend (PostgreSQL).
    HOOKLINE_DATABASE_URL:
      process.env.HOOKLINE_SDK_DATABASE_URL || `sqlite://${path.join(dataDir, "hookline.db")}`,
    HOOKLINE_ADMIN_TOKEN: token,
    HOOKLINE_ALLOWED_SUBNETS: "127.0.0.0/8",
    HOOKLINE_RETRY_SCHEDULE: RETRY_SCHEDULE.join(","),
    HOOKLINE_ATTEMPT_TIMEOUT: "5",
    // Signed under svix-* header names, as a Svix user moving over would run it (the
    // Python suite runs with the default webhook-* names).
    HOOKLINE_SVIX_HEADERS: "true",
  });
  env.HOOKLINE_LOG_FORMAT ??= "text";
  const log = fs.openSync(logPath, "w");
  let child;
  try {
    child = spawn(hooklineBin(), ["serve"], { cwd: dataDir, env, stdio: ["ignore", log, log] });
  } finally {
    fs.closeSync(log);
  }
  const url = `http://127.0.0.1:${port}`;
  const server = new HooklineServer({ url, port, token, dataDir, logPath, child });
  const spawnError = new Promise((resolve) => child.once("error", (err) => resolve(err.message)));
  const deadline = performance.now() + HEALTH_TIMEOUT;
  while (performance.now() < deadline) {
    const problem = await Promise.race([spawnError, sleep(0, null)]);
    if (problem) return [server, `could not be started: ${problem}`];
    if (!server.running) {
      return [server, `exited with status ${server.exitCode} before becoming healthy`];
    }
    if (await healthOk(url)) return [server, ""];
    await sleep(100);
  }
  return [server, `GET /api/v1/health did not answer 204 within ${HEALTH_TIMEOUT / 1000}s`];
}

/** Start the server, trying a few free ports (one could be taken before the server binds). */
export async function startHookline() {
  const binary = hooklineBin();
  try {
    fs.accessSync(binary, fs.constants.X_OK);
  } catch {
    throw new Error(
      `hookline binary not found or not executable at ${binary}. ` +
        "Build it (cargo build -p hookline) or point HOOKLINE_BIN at it.",
    );
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "hookline-sdk-js-"));
  // At least 16 characters (the server's rule), and no `.xx` suffix that the SDK would
  // read as a Svix cloud region.
  const token = `hookline-sdk-suite-${randomBytes(16).toString("hex")}`;
  const failures = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    const [server, problem] = await startServer(dataDir, token, await pickFreePort(), attempt);
    if (!problem) {
      // Never leave the server behind, however this process ends.
      const orphan = () => server.running && server.child.kill("SIGTERM");
      process.once("exit", orphan);
      server.forget = () => process.off("exit", orphan);
      return server;
    }
    const exited = !server.running;
    await server.stop();
    failures.push(`attempt ${attempt + 1} on port ${server.port}: ${problem}\n${server.logTail()}`);
    // Running but never healthy: another port will not help.
    if (!exited) break;
  }
  throw new Error(`hookline serve did not start:\n\n${failures.join("\n\n")}`);
}

// --------------------------------------------------------------------------- //
// One server and one receiver per test file, and tests that show the server's log
// --------------------------------------------------------------------------- //

/** The running fixtures: `{ server, receiver, svix, svixFor }`, set by `setUp()`. */
export const ctx = {};

/** Start the server and the receiver before the file's tests; stop them after. */
export function setUp() {
  before(async () => {
    ctx.receiver = await new Receiver().start();
    ctx.server = await startHookline();
    // The SDK retries 5xx answers and network errors; a compatibility suite wants to see
    // the first answer. (An empty schedule is how to say "no retries": numRetries: 0
    // reads as unset and means the default of two.)
    ctx.svixFor = (token) =>
      new Svix(token, { serverUrl: ctx.server.url, retryScheduleInMs: [], requestTimeout: 10_000 });
    ctx.svix = ctx.svixFor(ctx.server.token);
  });
  after(async () => {
    if (ctx.server) {
      await ctx.server.stop();
      ctx.server.forget?.();
      fs.rmSync(ctx.server.dataDir, { recursive: true, force: true });
    }
    await ctx.receiver?.close();
  });
}

/** A test whose failure shows the server's answer body (the SDK's error leaves it out)
 * and the tail of the server's log. */
export function sdkTest(name, fn) {
  test(name, { timeout: TEST_TIMEOUT }, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      if (err instanceof ApiException) {
        err.message = `HTTP ${err.code} from the server: ${JSON.stringify(err.body)}`;
      }
      if (ctx.server) {
        t.diagnostic(`hookline serve log (last 40 lines):\n${ctx.server.logTail()}`);
      }
      throw err;
    }
  });
}

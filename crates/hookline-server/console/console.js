// Hookline's web console: one page that reads and acts on the server through its public
// HTTP API, as any client would (`Authorization: Bearer <token>`). No framework and no
// build step. Data is only ever put on the page as text (textContent, never innerHTML),
// and the page's content security policy lets no inline script or style run.
//
// The token lives in sessionStorage: it goes when the tab closes. An app-portal link
// (`/console#token=…`, optionally `&app=…`) signs in with its token and is then taken out
// of the address bar.
"use strict";

const PAGE = 50;
// The API's largest page: a live refresh reads at most this many rows again.
const MAX_LIMIT = 250;
const LIVE_EVERY_MS = 2500;
const KEYS = { token: "hookline.token", scope: "hookline.scope", live: "hookline.live" };

// ---------------------------------------------------------------------------------------
// The page

/** An element with attributes (`class`, `on…` listeners, booleans, strings) and children
 * (nodes or strings, which become text). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "value") el.value = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

/** Puts `wanted` into `parent` in order, moving only what is not in place already, so
 * rows that did not change keep their focus, selection and open state. */
function syncChildren(parent, wanted) {
  wanted.forEach((el, i) => {
    if (parent.children[i] !== el) parent.insertBefore(el, parent.children[i] ?? null);
  });
  while (parent.children.length > wanted.length) parent.lastElementChild.remove();
}

let noticeTimer = 0;
/** Shows a message under the header: errors stay until the next one or a new page. */
function notify(message, kind = "error") {
  const box = $("notice");
  clearTimeout(noticeTimer);
  box.className = `notice ${kind}`;
  box.replaceChildren(
    h("span", { class: "notice-text" }, message),
    h("button", { type: "button", class: "quiet", "aria-label": "Dismiss", onclick: clearNotice }, "×"),
  );
  box.hidden = false;
  if (kind !== "error") noticeTimer = setTimeout(clearNotice, 8000);
}

function clearNotice() {
  $("notice").hidden = true;
  $("notice").replaceChildren();
}

// ---------------------------------------------------------------------------------------
// Formatting

const pad = (n) => String(n).padStart(2, "0");

/** A <time> in local time to the second, the exact instant in its title. */
function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return h("span", {}, String(iso));
  const text =
    `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ` +
    `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  return h("time", { datetime: iso, title: iso }, text);
}

function badge(text, kind = text) {
  return h("span", { class: `badge b-${String(kind).replace(/[^a-z0-9_-]/gi, "")}` }, text);
}

/** Code: JSON pretty-printed when it parses, otherwise as it is. */
function code(value) {
  let text = value;
  if (typeof value !== "string") text = JSON.stringify(value, null, 2);
  else {
    try {
      text = JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      // Not JSON: shown as received.
    }
  }
  return h("pre", { class: "code" }, text ?? "");
}

/** A definition list of [label, value] pairs; values are nodes or text. */
function fields(pairs) {
  return h(
    "dl",
    { class: "fields" },
    pairs.filter(Boolean).flatMap(([label, value]) => [h("dt", {}, label), h("dd", {}, value ?? "—")]),
  );
}

function headerTable(headers) {
  const entries = Array.isArray(headers) ? headers : Object.entries(headers ?? {});
  if (!entries.length) return h("p", { class: "muted" }, "none");
  return h(
    "table",
    { class: "headers" },
    h(
      "tbody",
      {},
      entries.map(([name, value]) => h("tr", {}, h("th", {}, name), h("td", {}, shownHeader(name, value)))),
    ),
  );
}

// Header values never shown, whatever the server kept: credentials, not signatures
// (signatures say nothing of the secret and are what a failed verification is about).
const SECRET_HEADER = /^(authorization|proxy-authorization|cookie|set-cookie|x-api-key|api-key|x-webhook-secret)$|token|secret|password|passwd|credential|session/i;

function shownHeader(name, value) {
  if (SECRET_HEADER.test(name) && value !== "[redacted]") return "[redacted]";
  return value;
}

const REASONS = {
  200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently",
  302: "Found", 303: "See Other", 307: "Temporary Redirect", 308: "Permanent Redirect",
  400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
  405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
  413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
  429: "Too Many Requests", 500: "Internal Server Error", 501: "Not Implemented",
  502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
};

const httpText = (status) => (status ? `${status} ${REASONS[status] ?? ""}`.trim() : "no answer");

const ERROR_KINDS = {
  timeout: "no answer within the attempt timeout",
  connection_refused: "the connection was refused: nothing listens at that address and port",
  connection: "the connection failed or was cut",
  tls: "the TLS handshake failed (certificate or protocol)",
  dns: "the host name did not resolve",
  ssrf_refused:
    "the address is private, loopback or reserved and not in HOOKLINE_ALLOWED_SUBNETS, so Hookline did not connect",
  redirect: "the endpoint answered a redirect; Hookline does not follow redirects",
  invalid_url: "the endpoint's URL cannot be used",
};

const TRIGGERS = { 0: "scheduled", 1: "manual" };
const TRIGGER_WORDS = { 0: "scheduled (the first try or a retry)", 1: "manual (a resend or a recovery)" };
const STATUS_TEXT = { 0: "success", 1: "pending", 2: "fail", 3: "sending" };

/** Why an attempt ended as it did, in words. */
function attemptReason(a) {
  const status = a.responseStatusCode;
  if (a.status === 0) return `delivered: the endpoint answered ${httpText(status)}`;
  const kind = a.errorKind && (ERROR_KINDS[a.errorKind] ?? a.errorKind);
  if (!status) {
    const detail = a.response && a.response !== "{}" && a.response !== "EXPUNGED" ? a.response : "";
    return `not delivered, no HTTP answer: ${[kind, detail].filter(Boolean).join(" — ") || "the request could not be made"}`;
  }
  if (status >= 300 && status < 400) return `HTTP ${httpText(status)}: ${ERROR_KINDS.redirect}`;
  if (status === 410) return "HTTP 410 Gone: the endpoint asked for no more deliveries, so Hookline disabled it";
  if (status === 429) return "HTTP 429 Too Many Requests: retried later, after at least a minute or its Retry-After";
  return `the endpoint answered HTTP ${httpText(status)}: only a 2xx answer counts as delivered`;
}

// ---------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, body) {
    super(describeError(status, body));
    this.status = status;
    this.body = body;
    this.code = body && typeof body === "object" ? body.code : undefined;
  }
}

/** An API error as the server said it: `code: detail`, or each invalid field. */
function describeError(status, body) {
  if (body && Array.isArray(body.detail)) {
    const fields = body.detail.map((d) => `${(d.loc ?? []).filter((p) => p !== "body").join(".") || "request"}: ${d.msg}`);
    return `The request was refused (HTTP ${status}): ${fields.join("; ")}`;
  }
  if (body && typeof body === "object" && body.detail) return `${body.detail} (${body.code ?? "error"}, HTTP ${status})`;
  if (typeof body === "string" && body.trim()) return `HTTP ${status}: ${body.trim().slice(0, 300)}`;
  return status ? `The server answered HTTP ${status}` : "The request failed";
}

const errorText = (err) => (err instanceof Error ? err.message : String(err));

/** One API call; resolves to the parsed answer (null for an empty one). */
async function api(path, { method = "GET", query, body, token = session.token } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
  }
  const init = {
    method,
    cache: "no-store",
    headers: { authorization: `Bearer ${token}`, accept: "application/json" },
  };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, { code: "unreachable", detail: `the server cannot be reached: ${err.message}` });
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    if (response.status === 401 && session.token && token === session.token) {
      signOut(`The server no longer accepts this token: ${describeError(401, data)}. Sign in again.`);
    }
    throw new ApiError(response.status, data);
  }
  return data;
}

const appPath = (app) => `/api/v1/app/${enc(app)}`;
const sourcePath = (source) => `/ingest/api/v1/source/${enc(source)}`;

// ---------------------------------------------------------------------------------------
// Signing in

/** `scope`: {kind: "admin"} | {kind: "app", id, name} | {kind: "source", id, name}. */
const session = { token: null, scope: null };

/** Thrown when a token is scoped and the console must be told to what. */
class NeedsScope extends Error {}

async function signIn(token, hint) {
  token = token.trim();
  if (!token) throw new Error("Paste a token first.");
  let scope;
  try {
    await api("/api/v1/app", { query: { limit: 1 }, token });
    scope = { kind: "admin" };
  } catch (err) {
    if (err.status === 401) throw new Error(`This token is not accepted: ${err.message}`);
    if (err.status !== 403) throw err;
    if (!hint) throw new NeedsScope();
    scope = await findScope(token, hint.trim());
  }
  session.token = token;
  session.scope = scope;
  sessionStorage.setItem(KEYS.token, token);
  sessionStorage.setItem(KEYS.scope, JSON.stringify(scope));
}

/** What a scoped token may read: the application, or the source, `hint` names. */
async function findScope(token, hint) {
  const refused = (err) => err instanceof ApiError && (err.status === 403 || err.status === 404);
  try {
    const app = await api(appPath(hint), { token });
    return { kind: "app", id: app.id, name: app.name };
  } catch (err) {
    if (!refused(err)) throw err;
  }
  try {
    const source = await api(sourcePath(hint), { token });
    return { kind: "source", id: source.id, name: source.name };
  } catch (err) {
    if (!refused(err)) throw err;
  }
  throw new Error(`This token may not read an application or a source named “${hint}”.`);
}

function signOut(message) {
  session.token = null;
  session.scope = null;
  sessionStorage.removeItem(KEYS.token);
  sessionStorage.removeItem(KEYS.scope);
  if (current) current.stop();
  current = null;
  showChrome();
  if (location.hash && location.hash !== "#/") history.replaceState(null, "", location.pathname);
  renderSignIn({ message });
}

function renderSignIn({ message = "", token = "", scoped = false } = {}) {
  const tokenInput = h("input", {
    id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    spellcheck: "false", value: token, placeholder: "the admin token, or an app token (appsk_…)",
  });
  const hintInput = h("input", {
    id: "scope", name: "scope", type: "text", autocomplete: "off", spellcheck: "false",
    placeholder: "app_… or its uid, or src_… for a source's dashboard token",
  });
  const scopeField = h(
    "p",
    { hidden: !scoped },
    h("label", { for: "scope" }, "Application or source"),
    hintInput,
    h(
      "span",
      { class: "hint" },
      "This token is scoped to one application (or one source) and may not list the others: say which it is.",
    ),
  );
  const error = h("p", { class: "form-error", role: "alert" }, message);
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    {
      class: "card sign-in",
      onsubmit: async (event) => {
        event.preventDefault();
        button.disabled = true;
        error.textContent = "";
        try {
          await signIn(tokenInput.value, scopeField.hidden ? "" : hintInput.value);
          showChrome();
          route();
        } catch (err) {
          if (err instanceof NeedsScope) {
            scopeField.hidden = false;
            error.textContent = "This token is scoped: name its application or source below.";
            hintInput.focus();
          } else {
            error.textContent = errorText(err);
          }
        } finally {
          button.disabled = false;
        }
      },
    },
    h("h1", {}, "Sign in"),
    h(
      "p",
      { class: "muted" },
      "The token stays in this tab only (session storage) and is sent to this server alone.",
    ),
    h("p", {}, h("label", { for: "token" }, "Token"), tokenInput),
    scopeField,
    error,
    h("p", {}, button),
  );
  $("view").replaceChildren(form);
  (scoped ? hintInput : tokenInput).focus();
}

/** The header: navigation for what the token may see, who is signed in, sign out. */
function showChrome() {
  const scope = session.scope;
  const nav = $("nav");
  $("sign-out").hidden = !scope;
  $("who").hidden = !scope;
  nav.hidden = !scope;
  if (!scope) return nav.replaceChildren();
  const link = (href, text) => h("a", { href }, text);
  if (scope.kind === "admin") {
    nav.replaceChildren(link("#/apps", "Applications"), link("#/sources", "Sources"), link("#/jobs", "Jobs"));
    $("who").textContent = "admin";
  } else if (scope.kind === "app") {
    nav.replaceChildren(link(`#/app/${enc(scope.id)}`, "Application"), link("#/jobs", "Jobs"));
    $("who").textContent = `app ${scope.name || scope.id}`;
  } else {
    nav.replaceChildren(link(`#/source/${enc(scope.id)}`, "Source"));
    $("who").textContent = `source ${scope.name || scope.id}`;
  }
  const live = h("label", { class: "live" }, h("input", {
    type: "checkbox", id: "live", checked: liveOn(),
    onchange: (e) => sessionStorage.setItem(KEYS.live, e.target.checked ? "on" : "off"),
  }), "Live");
  nav.append(live);
}

const liveOn = () => sessionStorage.getItem(KEYS.live) !== "off";

// ---------------------------------------------------------------------------------------
// Pages and live updates

/** The page on screen: what it refreshes while live, stopped when another replaces it. */
class Page {
  constructor() {
    this.alive = true;
    this.refreshers = [];
    this.timer = 0;
  }

  /** Calls `refresh` every few seconds while this page is shown, live is on and the tab
   * is visible; never two at once. */
  live(refresh) {
    this.refreshers.push(refresh);
    if (!this.timer) this.schedule();
  }

  schedule() {
    this.timer = setTimeout(() => this.tick(), LIVE_EVERY_MS);
  }

  async tick() {
    if (!this.alive) return;
    if (liveOn() && !document.hidden) await this.refreshNow();
    if (this.alive) this.schedule();
  }

  async refreshNow() {
    for (const refresh of this.refreshers) {
      if (!this.alive) return;
      try {
        await refresh();
      } catch (err) {
        if (this.alive && err.status !== 401) notify(`Live update failed: ${errorText(err)}`);
      }
    }
  }

  stop() {
    this.alive = false;
    clearTimeout(this.timer);
  }
}

let current = null;

const ROUTES = [
  [/^\/?$/, home],
  [/^\/apps$/, appsPage],
  [/^\/app\/([^/]+)$/, appPage],
  [/^\/app\/([^/]+)\/endpoint\/([^/]+)$/, endpointPage],
  [/^\/app\/([^/]+)\/msg\/([^/]+)(?:\/attempt\/([^/]+))?$/, messagePage],
  [/^\/sources$/, sourcesPage],
  [/^\/source\/([^/]+)(?:\/request\/([^/]+))?$/, sourcePage],
  [/^\/jobs$/, jobsPage],
  [/^\/job\/([^/]+)$/, jobPage],
];

async function route() {
  if (!session.scope) return;
  if (current) current.stop();
  clearNotice();
  const page = new Page();
  current = page;
  const path = location.hash.replace(/^#/, "") || "/";
  const view = $("view");
  view.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  for (const [pattern, render] of ROUTES) {
    const match = path.match(pattern);
    if (!match) continue;
    try {
      const args = match.slice(1).map((part) => (part === undefined ? undefined : decodeURIComponent(part)));
      const content = await render(page, ...args);
      if (page.alive && content) view.replaceChildren(content);
    } catch (err) {
      if (page.alive && err.status !== 401) {
        page.stop();
        view.replaceChildren(h("section", { class: "card" }, h("h1", {}, "Cannot show this page"), h("p", { class: "form-error" }, errorText(err))));
      }
    }
    return;
  }
  view.replaceChildren(h("section", { class: "card" }, h("h1", {}, "No such page"), h("p", {}, h("a", { href: "#/" }, "Start over"))));
}

function home() {
  const scope = session.scope;
  const target = scope.kind === "admin" ? "#/apps" : scope.kind === "app" ? `#/app/${enc(scope.id)}` : `#/source/${enc(scope.id)}`;
  location.replace(target);
  return null;
}

// ---------------------------------------------------------------------------------------
// Lists: pages of a list endpoint, filtered, kept fresh while live

/**
 * A list read page by page (`fetch(iterator, limit)` answers `{data, iterator, done}`).
 * `build(item, open)` makes an item's element; `keep(item)` filters on this side;
 * `past(item)` says the list (newest first) has gone past the wanted time range.
 * Items that did not change keep their element; `<details>` remember being open.
 */
function pagedList(page, { fetch, build, container, keep = () => true, past = () => false, empty = "Nothing here.", live = true }) {
  const open = new Set();
  const built = new Map();
  const info = h("span", { class: "muted" });
  const more = h("button", { type: "button", class: "quiet", hidden: true }, "Load more");
  const foot = h("div", { class: "list-foot" }, info, more);
  let raw = [];
  let iterator = null;
  let done = true;
  let generation = 0;

  container.addEventListener("toggle", (event) => {
    const id = event.target.dataset?.id;
    if (id) event.target.open ? open.add(id) : open.delete(id);
  }, true);

  const emptyElement = () =>
    container.tagName === "TBODY"
      ? h("tr", { class: "empty" }, h("td", { colspan: 20 }, empty))
      : h("p", { class: "empty muted" }, empty);

  function render() {
    const shown = [];
    let ended = done;
    for (const item of raw) {
      if (past(item)) {
        ended = true;
        break;
      }
      if (keep(item)) shown.push(item);
    }
    const ids = new Set();
    const elements = shown.map((item) => {
      const id = item.id ?? JSON.stringify(item);
      ids.add(id);
      const key = JSON.stringify(item);
      const old = built.get(id);
      if (old && old.key === key) return old.el;
      const el = build(item, open);
      built.set(id, { key, el });
      return el;
    });
    for (const id of [...built.keys()]) if (!ids.has(id)) built.delete(id);
    syncChildren(container, elements.length ? elements : [emptyElement()]);
    more.hidden = ended;
    info.textContent = shown.length ? `${shown.length} shown${ended ? "" : "; more below"}` : "";
  }

  async function load(reset) {
    const mine = ++generation;
    const answer = await fetch(reset ? null : iterator, PAGE);
    if (mine !== generation || !page.alive) return;
    raw = reset ? answer.data : raw.concat(answer.data);
    iterator = answer.iterator;
    done = answer.done || !answer.data.length;
    render();
  }

  async function refresh() {
    // Past a refresh's reach, rows loaded by hand stay as they are.
    if (raw.length > MAX_LIMIT) return;
    const mine = ++generation;
    const answer = await fetch(null, Math.min(MAX_LIMIT, Math.max(PAGE, raw.length)));
    if (mine !== generation || !page.alive) return;
    raw = answer.data;
    iterator = answer.iterator;
    done = answer.done || !answer.data.length;
    render();
  }

  async function reload() {
    built.clear();
    try {
      await load(true);
    } catch (err) {
      syncChildren(container, [emptyElement()]);
      info.textContent = "";
      notify(errorText(err));
    }
  }

  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      await load(false);
    } catch (err) {
      notify(errorText(err));
    } finally {
      more.disabled = false;
    }
  });

  if (live) page.live(refresh);
  return { foot, reload, refresh, render };
}

function table(columns, tbody) {
  return h("table", { class: "list" }, h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))), tbody);
}

/** A row that opens `href` when clicked anywhere (its first link is the keyboard way). */
function linkRow(href, cells) {
  return h("tr", { class: "link-row", onclick: (e) => { if (!e.target.closest("a, button")) location.hash = href; } }, cells.map((c) => h("td", {}, c)));
}

/** Two datetime-local inputs, read as RFC 3339 instants (or null when empty). */
function timeRange(prefix) {
  const since = h("input", { type: "datetime-local", step: 1, id: `${prefix}-since`, name: "since" });
  const until = h("input", { type: "datetime-local", step: 1, id: `${prefix}-until`, name: "until" });
  const read = (input) => (input.value ? new Date(input.value).toISOString() : null);
  return {
    elements: [
      h("label", { for: since.id }, "From", since),
      h("label", { for: until.id }, "To", until),
    ],
    since: () => read(since),
    until: () => read(until),
  };
}

function filterForm(onchange, ...controls) {
  const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); onchange(); } }, controls, h("button", { type: "submit" }, "Filter"));
  form.addEventListener("change", (e) => { if (e.target.tagName === "SELECT") onchange(); });
  return form;
}

function select(id, label, options) {
  return h("label", { for: id }, label, h("select", { id, name: id }, options.map(([value, text]) => h("option", { value }, text))));
}

/** A button that runs `action`, disabled meanwhile; its errors become notices. */
function actionButton(text, action, attrs = {}) {
  const button = h("button", {
    type: "button", ...attrs,
    onclick: async () => {
      button.disabled = true;
      try {
        await action();
      } catch (err) {
        if (err.status !== 401) notify(errorText(err));
      } finally {
        button.disabled = false;
      }
    },
  }, text);
  return button;
}

const section = (title, ...children) => h("section", { class: "card" }, h("h2", {}, title), children);
const idText = (id) => h("code", { class: "id" }, id);
const isAdmin = () => session.scope?.kind === "admin";

function crumbs(...parts) {
  return h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, parts.filter(Boolean).map(([href, text]) => (href ? h("a", { href }, text) : h("span", {}, text))));
}

// ---------------------------------------------------------------------------------------
// Applications

async function appsPage(page) {
  const tbody = h("tbody");
  const list = pagedList(page, {
    container: tbody,
    empty: "No applications yet.",
    fetch: (iterator, limit) => api("/api/v1/app", { query: { iterator, limit, order: "descending" } }),
    build: (app) => linkRow(`#/app/${enc(app.id)}`, [
      h("a", { href: `#/app/${enc(app.id)}` }, app.name), app.uid ?? "", idText(app.id), when(app.createdAt),
    ]),
  });
  const go = h("input", { id: "open-app", type: "text", placeholder: "app_… or uid", autocomplete: "off" });
  const openForm = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); if (go.value.trim()) location.hash = `#/app/${enc(go.value.trim())}`; } },
    h("label", { for: "open-app" }, "Open", go), h("button", { type: "submit" }, "Open"));
  await list.reload();
  return h("div", {}, h("h1", {}, "Applications"), section("All applications", openForm, table(["Name", "Uid", "Id", "Created"], tbody), list.foot));
}

async function appPage(page, appKey) {
  const app = await api(appPath(appKey));
  const base = `#/app/${enc(appKey)}`;

  const endpoints = h("tbody");
  const endpointList = pagedList(page, {
    container: endpoints,
    empty: "No endpoints: messages to this application go nowhere.",
    fetch: (iterator, limit) => api(`${appPath(appKey)}/endpoint`, { query: { iterator, limit } }),
    build: (ep) => linkRow(`${base}/endpoint/${enc(ep.id)}`, [
      h("a", { href: `${base}/endpoint/${enc(ep.id)}` }, ep.url),
      ep.description || "",
      ep.disabled ? badge("disabled") : badge("enabled"),
      (ep.eventTypes ?? []).join(", ") || "all",
      idText(ep.id),
    ]),
  });

  const types = h("input", { id: "msg-types", name: "types", type: "text", placeholder: "job.succeeded, job.failed", autocomplete: "off" });
  const channel = h("input", { id: "msg-channel", name: "channel", type: "text", autocomplete: "off" });
  const range = timeRange("msg");
  const messages = h("tbody");
  const messageList = pagedList(page, {
    container: messages,
    empty: "No messages match.",
    fetch: (iterator, limit) => api(`${appPath(appKey)}/msg`, {
      query: { iterator, limit, event_types: types.value.replace(/\s+/g, ""), channel: channel.value.trim(), before: iterator ? null : range.until(), with_content: false },
    }),
    past: (msg) => range.since() !== null && msg.timestamp < range.since(),
    build: (msg) => linkRow(`${base}/msg/${enc(msg.id)}`, [
      when(msg.timestamp), h("a", { href: `${base}/msg/${enc(msg.id)}` }, msg.eventType), idText(msg.id), msg.eventId ?? "", (msg.channels ?? []).join(", "),
    ]),
  });
  const filters = filterForm(() => messageList.reload(),
    h("label", { for: types.id }, "Event types", types),
    h("label", { for: channel.id }, "Channel", channel),
    range.elements);

  await Promise.all([endpointList.reload(), messageList.reload()]);
  return h("div", {},
    isAdmin() ? crumbs(["#/apps", "Applications"], [null, app.name]) : null,
    h("h1", {}, app.name, " ", idText(app.id)),
    fields([["Uid", app.uid], ["Created", when(app.createdAt)], app.throttleRate ? ["Throttle", `${app.throttleRate}/s`] : null]),
    section("Endpoints", table(["URL", "Description", "State", "Event types", "Id"], endpoints), endpointList.foot),
    section("Messages", filters, table(["Created", "Event type", "Message id", "Event id", "Channels"], messages), messageList.foot),
  );
}

// ---------------------------------------------------------------------------------------
// Endpoints

async function endpointPage(page, appKey, epKey) {
  const app = await api(appPath(appKey));
  const epPath = `${appPath(appKey)}/endpoint/${enc(epKey)}`;
  let ep = await api(epPath);
  const base = `#/app/${enc(appKey)}`;

  const summary = h("div");
  const stats = h("div", { class: "stats" });
  const renderSummary = () => {
    summary.replaceChildren(fields([
      ["URL", h("code", {}, ep.url)],
      ["State", ep.disabled ? badge("disabled") : badge("enabled")],
      ["Id", idText(ep.id)],
      ["Uid", ep.uid],
      ["Description", ep.description || null],
      ["Event types", (ep.eventTypes ?? []).join(", ") || "all"],
      ["Channels", (ep.channels ?? []).join(", ") || "all"],
      ["Throttle", ep.throttleRate ? `${ep.throttleRate}/s` : "none"],
      ["Created", when(ep.createdAt)],
      ["Updated", when(ep.updatedAt)],
    ]));
    toggle.textContent = ep.disabled ? "Enable" : "Disable";
  };
  const loadStats = async () => {
    const s = await api(`${epPath}/stats`);
    stats.replaceChildren(
      h("span", {}, badge("success"), ` ${s.success}`),
      h("span", {}, badge("pending"), ` ${s.pending}`),
      h("span", {}, badge("sending"), ` ${s.sending}`),
      h("span", {}, badge("fail"), ` ${s.fail}`),
      h("span", { class: "muted" }, "deliveries of the last 28 days"),
    );
  };

  const toggle = actionButton("Disable", async () => {
    ep = await api(epPath, { method: "PATCH", body: { disabled: !ep.disabled } });
    renderSummary();
    notify(ep.disabled ? "Endpoint disabled: nothing is delivered to it until it is enabled." : "Endpoint enabled.", "ok");
  }, { id: "toggle-endpoint" });

  const exampleType = h("input", { id: "example-type", type: "text", value: "svix.ping", autocomplete: "off" });
  const sendExample = actionButton("Send test event", async () => {
    const msg = await api(`${epPath}/send-example`, { method: "POST", body: { eventType: exampleType.value.trim() } });
    notify(`Test event ${msg.id} (${msg.eventType}) queued for this endpoint.`, "ok");
    await page.refreshNow();
  });

  const secretOut = h("code", { class: "secret", hidden: true });
  const showSecret = actionButton("Show secret", async () => {
    const { key } = await api(`${epPath}/secret`);
    secretOut.textContent = key;
    secretOut.hidden = false;
  });
  const rotate = actionButton("Rotate secret", async () => {
    if (!confirm("Rotate this endpoint's signing secret? The current one keeps signing for 24 hours.")) return;
    const answer = await api(`${epPath}/secret/rotate`, { method: "POST", body: {} });
    secretOut.textContent = answer?.key ?? "";
    secretOut.hidden = !answer?.key;
    notify("Secret rotated: deliveries are signed with the new and the old secret for the next 24 hours.", "ok");
  });

  const recoverRange = timeRange("recover");
  const recoverOut = h("p", { class: "muted", role: "status" });
  const recover = actionButton("Recover failed messages", async () => {
    const since = recoverRange.since();
    if (!since) throw new Error("Recovery needs a start time (From).");
    const until = recoverRange.until();
    recoverOut.textContent = "Recovering…";
    const task = await api(`${epPath}/recover`, { method: "POST", body: until ? { since, until } : { since } });
    recoverOut.textContent = `Recovery ${task.id}: ${task.status}. Every failed delivery to this endpoint from ${since}${until ? ` to ${until}` : " on"} was queued again; new attempts appear below.`;
    await page.refreshNow();
  });

  const headersBox = h("div");
  api(`${epPath}/headers`).then((hd) => {
    headersBox.replaceChildren(headerTable(hd.headers));
    if (hd.sensitive?.length) headersBox.append(h("p", { class: "muted" }, `Also sent, values hidden: ${hd.sensitive.join(", ")}`));
  }, (err) => headersBox.replaceChildren(h("p", { class: "muted" }, errorText(err))));

  // Attempts to this endpoint.
  const statusSel = select("attempt-status", "Status", [["", "any"], ["2", "fail"], ["0", "success"]]);
  const classSel = select("attempt-class", "HTTP", [["", "any"], ["200", "2xx"], ["300", "3xx"], ["400", "4xx"], ["500", "5xx"], ["0", "no answer"]]);
  const types = h("input", { id: "attempt-types", type: "text", placeholder: "event types", autocomplete: "off" });
  const range = timeRange("attempt");
  const attempts = h("div", { class: "items" });
  const attemptList = pagedList(page, {
    container: attempts,
    empty: "No attempts match.",
    fetch: (iterator, limit) => api(`${appPath(appKey)}/attempt/endpoint/${enc(epKey)}`, {
      query: {
        iterator, limit, status: statusSel.querySelector("select").value,
        status_code_class: classSel.querySelector("select").value,
        event_types: types.value.replace(/\s+/g, ""), before: iterator ? null : range.until(),
      },
    }),
    past: (a) => range.since() !== null && a.timestamp < range.since(),
    build: (a, open) => attemptItem(page, appKey, a, open, { endpointUrl: ep.url }),
  });
  const attemptFilters = filterForm(() => attemptList.reload(), statusSel, classSel, h("label", { for: types.id }, "Event types", types), range.elements);

  // Messages sent to this endpoint, with the state of their delivery.
  const msgStatus = select("delivery-status", "Delivery", [["", "any"], ["2", "failed"], ["1", "pending"], ["3", "sending"], ["0", "delivered"]]);
  const msgTypes = h("input", { id: "delivery-types", type: "text", placeholder: "event types", autocomplete: "off" });
  const msgRange = timeRange("delivery");
  const deliveries = h("tbody");
  const deliveryList = pagedList(page, {
    container: deliveries,
    empty: "No messages match.",
    fetch: (iterator, limit) => api(`${epPath}/msg`, {
      query: {
        iterator, limit, status: msgStatus.querySelector("select").value, with_content: false,
        event_types: msgTypes.value.replace(/\s+/g, ""), before: iterator ? null : msgRange.until(),
      },
    }),
    past: (m) => msgRange.since() !== null && m.timestamp < msgRange.since(),
    build: (m) => linkRow(`${base}/msg/${enc(m.id)}`, [
      when(m.timestamp), h("a", { href: `${base}/msg/${enc(m.id)}` }, m.eventType), badge(m.statusText), m.nextAttempt ? when(m.nextAttempt) : "", idText(m.id),
    ]),
  });
  const deliveryFilters = filterForm(() => deliveryList.reload(), msgStatus, h("label", { for: msgTypes.id }, "Event types", msgTypes), msgRange.elements);

  renderSummary();
  page.live(loadStats);
  await Promise.all([loadStats().catch(() => {}), attemptList.reload(), deliveryList.reload()]);
  return h("div", {},
    crumbs(isAdmin() ? ["#/apps", "Applications"] : null, [base, app.name], [null, "Endpoint"]),
    h("h1", {}, "Endpoint ", h("code", {}, ep.url)),
    section("Endpoint", summary, stats),
    section("Actions",
      h("div", { class: "actions" }, toggle,
        // Test events take the admin token.
        isAdmin() ? h("span", { class: "group" }, h("label", { for: exampleType.id }, "Event type", exampleType), sendExample) : null,
        showSecret, rotate),
      secretOut,
      h("div", { class: "actions" }, recoverRange.elements, recover),
      recoverOut),
    section("Custom headers", headersBox),
    section("Attempts", attemptFilters, attempts, attemptList.foot),
    section("Messages sent here", deliveryFilters, table(["Created", "Event type", "Delivery", "Next attempt", "Message id"], deliveries), deliveryList.foot),
  );
}

/** One attempt: a summary line, and when opened what was sent, what came back and why. */
function attemptItem(page, appKey, a, open, { payload, endpointUrl } = {}) {
  const base = `#/app/${enc(appKey)}`;
  const details = h("details", { class: `item attempt s-${a.statusText}`, "data-id": a.id, id: `attempt-${a.id}`, open: open.has(a.id) });
  details.append(h("summary", {},
    when(a.timestamp),
    badge(a.statusText),
    h("span", { class: "http" }, httpText(a.responseStatusCode)),
    h("span", { class: "ms" }, `${a.responseDurationMs} ms`),
    h("span", { class: "trigger" }, TRIGGERS[a.triggerType] ?? String(a.triggerType)),
    h("span", { class: "reason" }, attemptReason(a)),
  ));
  const resend = actionButton("Resend", async () => {
    await api(`${appPath(appKey)}/msg/${enc(a.msgId)}/endpoint/${enc(a.endpointId)}/resend`, { method: "POST" });
    notify(`Resend of ${a.msgId} queued: a new manual attempt appears in a moment.`, "ok");
    await page.refreshNow();
  }, { class: "resend" });
  details.append(h("div", { class: "item-body" },
    fields([
      ["Why", attemptReason(a)],
      ["Status", badge(a.statusText ?? STATUS_TEXT[a.status] ?? String(a.status))],
      ["HTTP status", httpText(a.responseStatusCode)],
      a.errorKind ? ["Error kind", `${a.errorKind}: ${ERROR_KINDS[a.errorKind] ?? ""}`] : null,
      ["Latency", `${a.responseDurationMs} ms`],
      ["Trigger", TRIGGER_WORDS[a.triggerType] ?? String(a.triggerType)],
      ["Attempt id", idText(a.id)],
      ["Message", h("a", { href: `${base}/msg/${enc(a.msgId)}/attempt/${enc(a.id)}` }, a.msgId)],
      ["Endpoint", h("a", { href: `${base}/endpoint/${enc(a.endpointId)}` }, endpointUrl ?? a.url)],
    ]),
    h("h3", {}, "Request as sent"),
    h("pre", { class: "code sent" },
      `POST ${a.url}\n` +
      (a.requestHeaders?.length
        ? a.requestHeaders.map(([name, value]) => `${name}: ${value}\n`).join("")
        : "(no request was sent)\n")),
    h("p", { class: "muted" }, "Credentials' values are shown as [redacted]. The body is the message's payload:"),
    payload === undefined
      ? h("p", {}, h("a", { href: `${base}/msg/${enc(a.msgId)}` }, "Open the message for its payload"))
      : h("pre", { class: "code" }, typeof payload === "string" ? payload : JSON.stringify(payload)),
    h("h3", {}, "Response"),
    "responseHeaders" in a ? headerTable(a.responseHeaders) : h("p", { class: "muted" }, "Response headers: not returned by the API."),
    a.response === "EXPUNGED" ? h("p", { class: "muted" }, "The response was expunged.") : code(a.response ?? ""),
    h("div", { class: "actions" }, resend),
  ));
  return details;
}

// ---------------------------------------------------------------------------------------
// Messages

async function messagePage(page, appKey, msgId, attemptId) {
  const [app, msg] = await Promise.all([api(appPath(appKey)), api(`${appPath(appKey)}/msg/${enc(msgId)}`)]);
  const base = `#/app/${enc(appKey)}`;

  const destinations = h("tbody");
  const destinationList = pagedList(page, {
    container: destinations,
    empty: "This message was sent to no endpoint (none matched its event type and channels).",
    fetch: (iterator, limit) => api(`${appPath(appKey)}/msg/${enc(msgId)}/endpoint`, { query: { iterator, limit } }),
    build: (d) => h("tr", {},
      h("td", {}, h("a", { href: `${base}/endpoint/${enc(d.id)}` }, d.url)),
      h("td", {}, badge(d.statusText)),
      h("td", {}, d.nextAttempt ? when(d.nextAttempt) : ""),
      h("td", {}, d.disabled ? badge("disabled") : ""),
      h("td", {}, actionButton("Resend", async () => {
        await api(`${appPath(appKey)}/msg/${enc(msgId)}/endpoint/${enc(d.id)}/resend`, { method: "POST" });
        notify(`Resend to ${d.url} queued: a new manual attempt appears in a moment.`, "ok");
        await page.refreshNow();
      }, { class: "resend" }))),
  });

  const attempts = h("div", { class: "items" });
  const attemptList = pagedList(page, {
    container: attempts,
    empty: "No attempts yet.",
    fetch: (iterator, limit) => api(`${appPath(appKey)}/attempt/msg/${enc(msgId)}`, { query: { iterator, limit } }),
    build: (a, open) => attemptItem(page, appKey, a, open, { payload: msg.payload }),
  });
  await Promise.all([destinationList.reload(), attemptList.reload()]);

  const view = h("div", {},
    crumbs(isAdmin() ? ["#/apps", "Applications"] : null, [base, app.name], [null, "Message"]),
    h("h1", {}, msg.eventType, " ", idText(msg.id)),
    section("Message", fields([
      ["Id (webhook-id)", idText(msg.id)],
      ["Event type", msg.eventType],
      ["Event id", msg.eventId],
      ["Channels", (msg.channels ?? []).join(", ") || null],
      ["Created", when(msg.timestamp)],
    ]), h("h3", {}, "Payload"), code(msg.payload)),
    section("Endpoints", table(["Endpoint", "Delivery", "Next attempt", "", ""], destinations), destinationList.foot),
    section("Attempts", attempts, attemptList.foot),
  );
  if (attemptId) {
    const target = attempts.querySelector(`[data-id="${CSS.escape(attemptId)}"]`);
    if (target) {
      target.open = true;
      requestAnimationFrame(() => target.scrollIntoView({ block: "start" }));
    }
  }
  return view;
}

// ---------------------------------------------------------------------------------------
// Sources and their request log

async function sourcesPage(page) {
  const tbody = h("tbody");
  const list = pagedList(page, {
    container: tbody,
    empty: "No sources yet.",
    fetch: (iterator, limit) => api("/ingest/api/v1/source", { query: { iterator, limit, order: "descending" } }),
    build: (s) => linkRow(`#/source/${enc(s.id)}`, [
      h("a", { href: `#/source/${enc(s.id)}` }, s.name), s.type, s.uid ?? "", idText(s.id), when(s.createdAt),
    ]),
  });
  await list.reload();
  return h("div", {}, h("h1", {}, "Sources"), section("All sources", table(["Name", "Type", "Uid", "Id", "Created"], tbody), list.foot));
}

const VERDICTS = { accepted: "accepted", duplicate: "duplicate", rejected: "refused" };

async function sourcePage(page, sourceKey, requestId) {
  const source = await api(sourcePath(sourceKey));
  const srcPath = sourcePath(sourceKey);

  // Forwarding endpoints.
  const endpoints = h("tbody");
  const endpointList = pagedList(page, {
    container: endpoints,
    empty: "No forwarding endpoints: accepted requests are logged but go nowhere.",
    fetch: (iterator, limit) => api(`${srcPath}/endpoint`, { query: { iterator, limit } }),
    build: (ep) => h("tr", {},
      h("td", {}, h("code", {}, ep.url)),
      h("td", {}, ep.disabled ? badge("disabled") : badge("enabled")),
      h("td", {}, idText(ep.id)),
      h("td", { class: "actions" },
        actionButton(ep.disabled ? "Enable" : "Disable", async () => {
          await api(`${srcPath}/endpoint/${enc(ep.id)}`, { method: "PATCH", body: { disabled: !ep.disabled } });
          notify(`Forwarding endpoint ${ep.disabled ? "enabled" : "disabled"}.`, "ok");
          await endpointList.refresh();
        }),
        actionButton("Rotate secret", async () => {
          if (!confirm("Rotate this forwarding endpoint's signing secret? The current one keeps signing for 24 hours.")) return;
          await api(`${srcPath}/endpoint/${enc(ep.id)}/secret/rotate`, { method: "POST", body: {} });
          notify("Secret rotated: forwarded requests are signed with the new and the old secret for 24 hours.", "ok");
        }))),
  });

  // Replay of a time range.
  const replayRange = timeRange("replay");
  const replayOut = h("p", { class: "muted", role: "status" });
  const replayRangeButton = actionButton("Replay accepted requests", async () => {
    const since = replayRange.since();
    const until = replayRange.until();
    if (!since) throw new Error("Replay needs a start time (From).");
    const answer = await api(`${srcPath}/replay`, { method: "POST", body: until ? { since, until } : { since } });
    replayOut.textContent =
      `Replayed ${answer.replayed} accepted request(s) received from ${since} ${until ? `to ${until}` : "on"}: ` +
      `${answer.deliveries} delivery(ies) queued to the forwarding endpoints` +
      (answer.skipped ? `; ${answer.skipped} skipped (refused, duplicates, or their payload expired).` : ".");
    await page.refreshNow();
  });

  // The request log.
  const verdictSel = select("log-verdict", "Verdict", [["", "any"], ["rejected", "refused"], ["accepted", "accepted"], ["duplicate", "duplicate"]]);
  const reasonInput = h("input", { id: "log-reason", type: "text", placeholder: "reason code or words", autocomplete: "off" });
  const range = timeRange("log");
  const requests = h("div", { class: "items" });
  const log = pagedList(page, {
    container: requests,
    empty: "No requests match.",
    fetch: (iterator, limit) => api(`${srcPath}/log`, { query: { iterator, limit } }),
    keep: (r) => {
      const verdict = verdictSel.querySelector("select").value;
      const words = reasonInput.value.trim().toLowerCase();
      const until = range.until();
      return (!verdict || r.verdict === verdict) &&
        (!words || `${r.reasonCode} ${r.error_text}`.toLowerCase().includes(words)) &&
        (!until || r.created_at <= until);
    },
    past: (r) => range.since() !== null && r.created_at < range.since(),
    build: (r, open) => requestItem(page, source, r, open),
  });
  const logFilters = filterForm(() => log.render(), verdictSel, h("label", { for: reasonInput.id }, "Reason", reasonInput), range.elements);

  await Promise.all([endpointList.reload(), log.reload()]);
  const logSection = section("Requests", logFilters, requests, log.foot);
  const view = h("div", {},
    isAdmin() ? crumbs(["#/sources", "Sources"], [null, source.name]) : null,
    h("h1", {}, source.name, " ", idText(source.id)),
    section("Source", fields([
      ["Type", source.type],
      ["Uid", source.uid],
      ["Ingest URL", h("code", {}, source.ingestUrl)],
      source.forwardingAppId
        ? ["Forwarded messages", h("a", { href: `#/app/${enc(source.forwardingAppId)}` }, `application ${source.forwardingAppId}`)]
        : null,
      ["Configuration", Object.keys(source.config ?? {}).length ? code(source.config) : "defaults (secrets are never shown)"],
      ["Created", when(source.createdAt)],
    ])),
    section("Forwarding endpoints", table(["URL", "State", "Id", ""], endpoints), endpointList.foot),
    isAdmin() ? section("Replay a time range", h("div", { class: "actions" }, replayRange.elements, replayRangeButton), replayOut) : null,
    logSection,
  );
  if (requestId) {
    let target = requests.querySelector(`[data-id="${CSS.escape(requestId)}"]`);
    if (!target) {
      // Older than the first page: shown on its own above the log.
      const request = await api(`${srcPath}/request/${enc(requestId)}`);
      target = requestItem(page, source, request, new Set([request.id]));
      logSection.before(section("Linked request", h("div", { class: "items" }, target)));
    }
    target.open = true;
    requestAnimationFrame(() => target.scrollIntoView({ block: "start" }));
  }
  return view;
}

/** One logged request: verdict and reason, then when opened its headers, body and where
 * it was forwarded. */
function requestItem(page, source, r, open) {
  const srcPath = sourcePath(source.id);
  const details = h("details", { class: `item request v-${r.verdict}`, "data-id": r.id, id: `request-${r.id}`, open: open.has(r.id) });
  const verdict = VERDICTS[r.verdict] ?? r.verdict;
  details.append(h("summary", {},
    when(r.created_at),
    badge(verdict, r.verdict),
    h("span", { class: "http" }, String(r.status_code)),
    h("span", { class: "code-word" }, r.reasonCode),
    h("span", { class: "path" }, `${r.method} ${r.path}${r.query ? `?${r.query}` : ""}`),
    h("span", { class: "reason" }, r.error_text || r.eventType || ""),
  ));
  const forwarded = h("div");
  const showForwarding = async () => {
    if (!r.msgId) {
      forwarded.replaceChildren(h("p", { class: "muted" }, r.verdict === "rejected" ? "Refused requests are not forwarded." : "Not forwarded (a duplicate of a request already forwarded)."));
      return;
    }
    // The forwarding message is a message of the source's own application.
    const appId = source.forwardingAppId;
    const link = appId ? h("a", { href: `#/app/${enc(appId)}/msg/${enc(r.msgId)}` }, r.msgId) : idText(r.msgId);
    if (!appId) {
      forwarded.replaceChildren(fields([["Forwarding message", link]]));
      return;
    }
    const answer = await api(`${appPath(appId)}/msg/${enc(r.msgId)}/endpoint`);
    forwarded.replaceChildren(
      fields([["Forwarding message", link]]),
      table(["Forwarding endpoint", "Delivery", "Next attempt"], h("tbody", {}, answer.data.map((d) => h("tr", {},
        h("td", {}, h("a", { href: `#/app/${enc(appId)}/endpoint/${enc(d.id)}` }, d.url)),
        h("td", {}, badge(d.statusText)),
        h("td", {}, d.nextAttempt ? when(d.nextAttempt) : ""))))),
      h("p", { class: "muted" }, "Open the message for each attempt, its answer and a resend."),
    );
  };
  let forwardingShown = false;
  details.addEventListener("toggle", () => {
    if (details.open && !forwardingShown) {
      forwardingShown = true;
      showForwarding().catch((err) => forwarded.replaceChildren(h("p", { class: "form-error" }, errorText(err))));
    }
  });
  const replay = actionButton("Replay", async () => {
    const answer = await api(`${srcPath}/request/${enc(r.id)}/replay`, { method: "POST" });
    notify(`Request ${r.id} replayed: its forwarding message ${answer.msgId} was queued again to ${answer.deliveries} forwarding endpoint(s).`, "ok");
    await showForwarding().catch(() => {});
    await page.refreshNow();
  }, { class: "replay" });
  const body = r.payload ?? "";
  details.append(h("div", { class: "item-body" },
    fields([
      ["Verdict", badge(verdict, r.verdict)],
      ["Reason", r.error_text || (r.verdict === "accepted" ? "verified and accepted" : r.verdict === "duplicate" ? "already received (same dedupe key): answered, not forwarded again" : "")],
      ["Reason code", h("code", {}, r.reasonCode)],
      ["Answered", String(r.status_code)],
      ["Event type", r.eventType],
      ["Request id", h("a", { href: `#/source/${enc(source.id)}/request/${enc(r.id)}` }, r.id)],
      ["Received", when(r.created_at)],
      r.droppedBefore ? ["Not logged before it", `${r.droppedBefore} refused request(s) over the log's cap`] : null,
    ]),
    h("h3", {}, "Request"),
    h("pre", { class: "code" }, `${r.method} ${r.path}${r.query ? `?${r.query}` : ""}`),
    headerTable(Object.entries(r.headers ?? {})),
    h("h3", {}, "Body"),
    r.bodyTruncated ? h("p", { class: "muted" }, `The log keeps the first ${body.length} of ${r.bodySize} bytes of a refused request.`) : null,
    h("pre", { class: "code body" }, body),
    h("h3", {}, "Forwarded"),
    forwarded,
    // Replays take the admin token; only accepted requests were forwarded.
    isAdmin() && r.verdict === "accepted" ? h("div", { class: "actions" }, replay) : null,
  ));
  if (details.open) {
    forwardingShown = true;
    showForwarding().catch((err) => forwarded.replaceChildren(h("p", { class: "form-error" }, errorText(err))));
  }
  return details;
}

// ---------------------------------------------------------------------------------------
// Jobs

const JOB_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "expired"];
const JOB_PROVIDERS = [
  "openai_response", "openai_batch", "openai_fine_tuning", "openai_eval_run", "replicate_prediction",
  "replicate_training", "anthropic_message_batch", "gemini_batch", "custom",
];
const ENDED = new Set(["succeeded", "failed", "cancelled", "expired"]);

async function jobsPage(page) {
  const statusSel = select("job-status", "Status", [["", "any"], ...JOB_STATUSES.map((s) => [s, s])]);
  const providerSel = select("job-provider", "Provider", [["", "any"], ...JOB_PROVIDERS.map((p) => [p, p])]);
  const appInput = h("input", { id: "job-app", type: "text", placeholder: "app id or uid", autocomplete: "off" });
  const groupInput = h("input", { id: "job-group", type: "text", autocomplete: "off" });
  const range = timeRange("job");
  const tbody = h("tbody");
  const list = pagedList(page, {
    container: tbody,
    empty: "No jobs match.",
    fetch: (iterator, limit) => api("/api/v1/job", {
      query: {
        iterator, limit, status: statusSel.querySelector("select").value, provider: providerSel.querySelector("select").value,
        appId: appInput.value.trim(), group: groupInput.value.trim(), before: iterator ? null : range.until(),
      },
    }),
    past: (job) => range.since() !== null && job.createdAt < range.since(),
    build: (job) => linkRow(`#/job/${enc(job.id)}`, [
      when(job.createdAt), h("a", { href: `#/job/${enc(job.id)}` }, job.uid ?? job.id), job.provider, job.providerJobId ?? "",
      badge(job.status), job.group ?? "", idText(job.appId), when(job.deadline),
    ]),
  });
  const filters = filterForm(() => list.reload(), statusSel, providerSel,
    h("label", { for: appInput.id }, "Application", appInput), h("label", { for: groupInput.id }, "Group", groupInput), range.elements);
  await list.reload();
  return h("div", {}, h("h1", {}, "Jobs"), section("Tracked jobs", filters,
    table(["Created", "Job", "Provider", "Provider id", "Status", "Group", "Application", "Deadline"], tbody), list.foot));
}

async function jobPage(page, jobId) {
  const box = h("div");
  const render = (job) => {
    const timeline = h("tbody", {}, job.timeline.map((t) => h("tr", {},
      h("td", {}, when(t.at)), h("td", {}, t.source), h("td", {}, t.providerStatus ?? ""), h("td", {}, badge(t.status)))));
    box.replaceChildren(...[
      h("h1", {}, "Job ", idText(job.id), " ", badge(job.status)),
      section("Job", fields([
        ["Uid", job.uid],
        ["Provider", job.provider],
        ["Provider job id", job.providerJobId],
        ["Provider status", job.providerStatus],
        ["Application", session.scope.kind === "admin" ? h("a", { href: `#/app/${enc(job.appId)}` }, job.appId) : job.appId],
        ["Group", job.group],
        ["Polling", job.poll ? `first after ${job.poll.after} s, every ${job.poll.interval} s up to ${job.poll.maxInterval} s` : "webhooks only"],
        ["Deadline", when(job.deadline)],
        ["Created", when(job.createdAt)],
        ["Updated", when(job.updatedAt)],
      ]),
      isAdmin() && !ENDED.has(job.status) ? h("div", { class: "actions" }, actionButton("Cancel job", async () => {
        if (!confirm("Cancel this job at its provider?")) return;
        render(await api(`/api/v1/job/${enc(job.id)}/cancel`, { method: "POST" }));
        notify("Job cancelled.", "ok");
      })) : null),
      section("Timeline", table(["At", "Seen by", "Provider status", "Status"], timeline)),
      job.progress != null ? section("Progress", code(job.progress)) : null,
      job.error != null ? section("Error", code(job.error)) : null,
      job.result != null ? section("Result", code(job.result)) : null,
      Object.keys(job.metadata ?? {}).length ? section("Metadata", code(job.metadata)) : null,
    ].filter(Boolean));
  };
  let shown = "";
  const load = async () => {
    const job = await api(`/api/v1/job/${enc(jobId)}`);
    const key = JSON.stringify(job);
    if (key !== shown) render(job);
    shown = key;
  };
  await load();
  page.live(load);
  return h("div", {}, crumbs(["#/jobs", "Jobs"], [null, "Job"]), box);
}

// ---------------------------------------------------------------------------------------
// Start

function start() {
  $("sign-out").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", () => {
    if (readLinkToken()) return;
    route();
  });
  if (readLinkToken()) return;
  const token = sessionStorage.getItem(KEYS.token);
  let scope = null;
  try {
    scope = JSON.parse(sessionStorage.getItem(KEYS.scope) ?? "null");
  } catch {
    scope = null;
  }
  if (token && scope) {
    session.token = token;
    session.scope = scope;
    showChrome();
    route();
  } else {
    renderSignIn();
  }
}

/** Signs in with the token of an app-portal link (`#token=…[&app=…]`), then takes it out
 * of the address bar and the history. Returns whether the address held one. */
function readLinkToken() {
  const fragment = location.hash.replace(/^#\/?/, "");
  if (!/(^|&)token=/.test(fragment)) return false;
  const params = new URLSearchParams(fragment);
  const token = params.get("token") ?? "";
  const hint = params.get("app") ?? params.get("source") ?? "";
  history.replaceState(null, "", location.pathname + location.search);
  if (current) current.stop();
  current = null;
  signIn(token, hint).then(
    () => {
      showChrome();
      route();
    },
    (err) => {
      if (err instanceof NeedsScope) {
        renderSignIn({ token, scoped: true, message: "This link's token is scoped to one application: name it (its id or uid) to go on." });
      } else {
        renderSignIn({ message: errorText(err) });
      }
    },
  );
  return true;
}

start();

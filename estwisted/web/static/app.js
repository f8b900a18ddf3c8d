// The estwisted admin UI: plain JavaScript over the node's HTTP API.
// Pages are routed by the URL hash (#/cluster, #/streams/<name>, ...).
// Credentials from the login page are kept in sessionStorage and sent as
// HTTP Basic on every API call.  Everything shown is built with
// textContent (never innerHTML), so event data cannot inject markup.

"use strict";

const CREDS_KEY = "estwisted.credentials";
const USER_KEY = "estwisted.user";
const SEEN_KEY = "estwisted.seenStreams";
const PAGE_SIZE = 20;

// -- DOM helpers --------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function table(headers, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) =>
      (c instanceof Node && c.tagName === "TD") ? c : h("td", {}, c))))));
}

function num(v) { return h("td", { class: "num" }, v); }

function bytes(n) {
  if (n === undefined || n === null || isNaN(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function duration(seconds) {
  seconds = Math.floor(seconds || 0);
  const d = Math.floor(seconds / 86400), hr = Math.floor(seconds / 3600) % 24;
  const m = Math.floor(seconds / 60) % 60, s = seconds % 60;
  return (d ? `${d}d ` : "") + `${hr}h ${m}m ${s}s`;
}

function errorBox(error) {
  return h("div", { class: "error", role: "alert" }, describe(error));
}

function describe(error) {
  if (error instanceof ApiError) {
    let text = `${error.status} ${error.statusText}`.trim();
    if (error.status === 0) text = "The node did not answer";
    if (error.detail) text += `: ${error.detail}`;
    return `${error.what} failed — ${text}`;
  }
  return `Something went wrong: ${error && error.message ? error.message : error}`;
}

function uuid4() {
  // crypto.randomUUID exists only in secure contexts; a node is often
  // reached over plain HTTP.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, "0")).join("");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

function pretty(value) {
  if (value === undefined || value === null || value === "") return "";
  if (typeof value === "string") {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch (e) { return value; }
  }
  return JSON.stringify(value, null, 2);
}

// -- the API ------------------------------------------------------------------

class ApiError extends Error {
  constructor(what, status, statusText, detail) {
    super(`${what}: ${status} ${statusText}`);
    this.what = what;
    this.status = status;
    this.statusText = statusText;
    this.detail = detail;
  }
}

function credentials() { return sessionStorage.getItem(CREDS_KEY); }

async function api(method, path, options = {}) {
  const headers = { Accept: options.accept || "application/json" };
  const creds = options.credentials !== undefined ? options.credentials : credentials();
  if (creds) headers.Authorization = `Basic ${creds}`;
  Object.assign(headers, options.headers || {});
  let body = options.body;
  if (options.json !== undefined) {
    body = JSON.stringify(options.json);
    headers["Content-Type"] = headers["Content-Type"] || "application/json";
  }
  const what = options.what || `${method} ${path}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: "no-store", credentials: "omit" });
  } catch (e) {
    throw new ApiError(what, 0, "", "");
  }
  const text = await response.text().catch(() => "");
  if (!response.ok) {
    // Show a short plain reason, never a page or a stack trace.
    let detail = "";
    const type = response.headers.get("content-type") || "";
    if (text && text.length < 300 && !type.includes("html") && !/Traceback|^\s*</.test(text)) {
      detail = text.trim();
      try {
        const j = JSON.parse(text);
        detail = typeof j === "object" && j ? (j.error || j.reason || j.message || "") : String(j);
      } catch (e) { /* plain text */ }
    }
    const err = new ApiError(what, response.status, response.statusText, detail);
    if (response.status === 401 && !options.allow401) {
      signOut(`${describe(err)}. Log in again.`);
    }
    throw err;
  }
  if (options.raw) return text;
  if (!text) return null;
  try { return JSON.parse(text); } catch (e) { return text; }
}

const enc = encodeURIComponent;

// Prometheus text format: name{labels} value -> [{name, labels, value}].
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const p of m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    out.push({ name: m[1], labels, value: parseFloat(m[4]) });
  }
  return out;
}

function metricSum(samples, name, filter) {
  let total = 0, found = false;
  for (const s of samples) {
    if (s.name === name && (!filter || filter(s.labels))) { total += s.value; found = true; }
  }
  return found ? total : undefined;
}

// -- session ----------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(CREDS_KEY);
  sessionStorage.removeItem(USER_KEY);
  loginMessage = message || "";
  if (location.hash.startsWith("#/login")) route();
  else location.hash = "#/login";
}

let loginMessage = "";

function showWho() {
  const who = document.getElementById("whoami");
  who.textContent = "";
  const user = sessionStorage.getItem(USER_KEY);
  if (user) {
    who.append(`Signed in as ${user}`,
      h("button", { class: "secondary", id: "logout", onclick: () => signOut("Signed out.") }, "Log out"));
  }
}

// -- pages --------------------------------------------------------------------

const main = () => document.getElementById("main");
let timers = [];
let generation = 0;

function every(seconds, fn) {
  const gen = generation;
  let busy = false;
  const tick = async () => {
    if (busy || gen !== generation) return;
    busy = true;
    try { await fn(); } catch (e) { report(e); } finally { busy = false; }
  };
  timers.push(setInterval(tick, seconds * 1000));
  return tick();
}

function report(e) {
  const banner = document.getElementById("banner");
  banner.hidden = false;
  banner.textContent = describe(e);
}

function clearBanner() {
  const banner = document.getElementById("banner");
  banner.hidden = true;
  banner.textContent = "";
}

function render(...nodes) {
  const m = main();
  m.textContent = "";
  m.append(...nodes);
}

async function loginPage() {
  document.getElementById("top").hidden = true;
  const message = loginMessage;
  loginMessage = "";
  const status = h("div", {}, message ? h("div", { class: "error", role: "alert" }, message) : null);
  const user = h("input", { id: "login-user", name: "user", autocomplete: "username", required: true });
  const pass = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { class: "stacked", id: "login-form" },
    h("label", {}, "User", user), h("label", {}, "Password", pass),
    h("button", { type: "submit", id: "login-submit" }, "Log in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const creds = btoa(unescape(encodeURIComponent(`${user.value}:${pass.value}`)));
    status.textContent = "";
    try {
      const me = await api("GET", "/users/$current", { credentials: creds, allow401: true, what: "Logging in" });
      sessionStorage.setItem(CREDS_KEY, creds);
      sessionStorage.setItem(USER_KEY, (me && me.data && me.data.loginName) || user.value);
      location.hash = "#/dashboard";
    } catch (e) {
      const text = e instanceof ApiError && e.status === 401 ? "Wrong user name or password." : describe(e);
      status.append(h("div", { class: "error", role: "alert" }, text));
    }
  });
  render(h("div", { class: "login" }, h("h1", {}, "Log in to estwisted"), status, form));
  user.focus();
}

async function dashboardPage() {
  const cards = h("div", { class: "cards", id: "dashboard-cards" });
  const tasks = h("div", { id: "dashboard-tasks" });
  const note = h("p", { class: "muted" }, "Refreshed every 2 seconds.");
  render(h("h1", {}, "Dashboard"), cards, h("h2", {}, "Long tasks"), tasks, note);
  let previous = null;
  const card = (label, value, id) => h("div", { class: "card", id },
    h("div", { class: "label" }, label), h("div", { class: "value" }, value));
  await every(2, async () => {
    const [info, stats, text, list] = await Promise.all([
      api("GET", "/info", { what: "Reading /info" }),
      api("GET", "/stats", { what: "Reading /stats" }),
      api("GET", "/metrics", { accept: "text/plain", raw: true, what: "Reading /metrics" }),
      readProgress(),
    ]);
    tasks.textContent = "";
    tasks.append(...taskList(list, 5));
    const samples = parseMetrics(text);
    const now = performance.now() / 1000;
    const events = metricSum(samples, "estore_events_committed_total") ?? 0;
    // Kinds never requested are not exported: none counts as zero.
    const reads = metricSum(samples, "estore_http_request_duration_seconds_count",
      (l) => l.kind && l.kind.startsWith("read")) ?? 0;
    let writeRate = "–", readRate = "–";
    if (previous) {
      const dt = now - previous.t;
      if (dt > 0) {
        writeRate = ((events - previous.events) / dt).toFixed(1);
        readRate = ((reads - previous.reads) / dt).toFixed(1);
      }
    }
    previous = { t: now, events, reads };
    const state = (info && info.state) || "unknown";
    cards.textContent = "";
    cards.append(
      card("State", state, "card-state"),
      card("Uptime", duration(stats && stats.proc && stats.proc.uptimeSeconds), "card-uptime"),
      card("Events written / s", writeRate, "card-writes"),
      card("HTTP reads / s", readRate, "card-reads"),
      card("HTTP long polls waiting", metricSum(samples, "estore_http_long_polls") ?? "–"),
      card("Persistent in flight", metricSum(samples, "estore_persistent_subscription_in_flight_messages") ?? 0),
      card("Client connections", metricSum(samples, "estore_connections") ?? 0),
      card("Subscriptions", metricSum(samples, "estore_subscriptions") ?? 0),
      card("Disk used", bytes(metricSum(samples, "estore_disk_bytes")), "card-disk"),
      card("Chunks", metricSum(samples, "estore_chunks") ?? 0),
      card("Writer checkpoint", metricSum(samples, "estore_writer_checkpoint_bytes") ?? "–"),
      card("Resident memory", bytes(metricSum(samples, "process_resident_memory_bytes"))),
    );
    clearBanner();
  });
}

let clusterHistory = [];
let clusterLast = null;

async function clusterPage() {
  const body = h("div", { id: "cluster-members" });
  const events = h("ul", { class: "events", id: "cluster-events" });
  render(h("h1", {}, "Cluster"), body, h("h2", {}, "Elections and state changes"), events,
    h("p", { class: "muted" }, "Refreshed every second from /gossip."));
  const showEvents = () => {
    events.textContent = "";
    if (!clusterHistory.length) events.append(h("li", { class: "muted" }, "No change seen since this page opened."));
    for (const e of clusterHistory.slice(0, 100)) events.append(h("li", {}, e));
  };
  showEvents();
  await every(1, async () => {
    const doc = await api("GET", "/gossip", { what: "Reading /gossip" });
    const members = (doc && doc.members) || [];
    const leader = members.find((m) => m.isAlive && (m.state === "Master" || m.state === "Leader"));
    const now = new Date().toLocaleTimeString();
    const states = Object.fromEntries(members.map((m) => [m.instanceId, `${m.state}${m.isAlive ? "" : " (dead)"}`]));
    if (clusterLast) {
      for (const m of members) {
        const before = clusterLast.states[m.instanceId];
        const name = `${m.externalHttpIp}:${m.externalHttpPort}`;
        if (before === undefined) clusterHistory.unshift(`${now} ${name} joined as ${states[m.instanceId]}`);
        else if (before !== states[m.instanceId]) clusterHistory.unshift(`${now} ${name}: ${before} → ${states[m.instanceId]}`);
      }
      const leaderId = leader ? leader.instanceId : null;
      if (leaderId !== clusterLast.leader) {
        clusterHistory.unshift(leader
          ? `${now} new leader ${leader.externalHttpIp}:${leader.externalHttpPort} (epoch ${leader.epochNumber})`
          : `${now} no leader`);
      }
    }
    clusterLast = { states, leader: leader ? leader.instanceId : null };
    const lead = leader ? leader.writerCheckpoint : null;
    const rows = members.map((m) => {
      const addr = `${m.externalHttpIp}:${m.externalHttpPort}`;
      const lag = lead === null || m === leader ? "–" : bytes(Math.max(0, lead - m.writerCheckpoint));
      return [
        h("a", { href: `${location.protocol}//${addr}/web/` }, addr),
        h("td", { class: `state state-${m.state}` }, m.state),
        h("td", { class: m.isAlive ? "" : "dead" }, m.isAlive ? "yes" : "no"),
        m.timeStamp ? new Date(m.timeStamp).toLocaleTimeString() : "",
        num(m.epochNumber), num(m.writerCheckpoint), num(m.chaserCheckpoint),
        num(m.lastCommitPosition), num(lag), m.instanceId,
      ];
    });
    body.textContent = "";
    body.append(
      h("p", {}, `${members.length} member(s); `,
        leader ? `leader: ${leader.externalHttpIp}:${leader.externalHttpPort}` : h("span", { class: "dead" }, "no leader")),
      table(["Node", "State", "Alive", "Last seen", "Epoch", "Writer", "Chaser", "Commit", "Lag", "Instance"],
        rows, { id: "members-table" }));
    showEvents();
    clearBanner();
  });
}

function rememberStream(name) {
  let seen = [];
  try { seen = JSON.parse(sessionStorage.getItem(SEEN_KEY) || "[]"); } catch (e) { seen = []; }
  seen = [name, ...seen.filter((s) => s !== name)].slice(0, 30);
  sessionStorage.setItem(SEEN_KEY, JSON.stringify(seen));
}

async function streamsPage() {
  const input = h("input", { id: "stream-name", placeholder: "stream name", required: true });
  const open = h("form", { class: "inline", id: "open-stream" }, h("label", {}, "Stream", input),
    h("button", { type: "submit" }, "Open"));
  open.addEventListener("submit", (ev) => { ev.preventDefault(); location.hash = `#/streams/${enc(input.value)}`; });
  const recent = h("div", { id: "recent-streams" }, h("p", { class: "muted" }, "Loading recent streams…"));
  render(h("h1", {}, "Streams"), open, h("h2", {}, "Recent streams"), recent);
  let names = [];
  let source = "";
  try {
    const feed = await api("GET", "/streams/%24streams/head/backward/50?embed=rich",
      { accept: "application/vnd.eventstore.atom+json", what: "Reading $streams" });
    names = (feed.entries || []).map((e) => (e.title || "").split("@").slice(1).join("@")).filter(Boolean);
    source = "$streams";
  } catch (e) {
    // No projections: the streams this node has written recently ($all).
  }
  if (!names.length) {
    try {
      const feed = await api("GET", "/streams/%24all/head/backward/200?embed=rich",
        { accept: "application/vnd.eventstore.atom+json", what: "Reading $all" });
      for (const e of feed.entries || []) {
        if (e.streamId && !names.includes(e.streamId)) names.push(e.streamId);
      }
      source = "$all (the node's most recent events)";
    } catch (e) {
      recent.textContent = "";
      recent.append(errorBox(e));
    }
  }
  let seen = [];
  try { seen = JSON.parse(sessionStorage.getItem(SEEN_KEY) || "[]"); } catch (e) { seen = []; }
  if (source || seen.length) {
    recent.textContent = "";
    const link = (n) => h("li", {}, h("a", { href: `#/streams/${enc(n)}`, class: "stream-link" }, n));
    if (names.length) recent.append(h("p", { class: "muted" }, `From ${source}.`), h("ul", {}, names.map(link)));
    else recent.append(h("p", { class: "muted" }, "No streams yet."));
    if (seen.length) recent.append(h("h2", {}, "Opened in this session"), h("ul", {}, seen.map(link)));
  }
}

function parseQuery(q) {
  return Object.fromEntries(new URLSearchParams(q || ""));
}

async function streamPage(name, query) {
  rememberStream(name);
  const from = query.from !== undefined ? query.from : "head";
  const dir = query.dir === "forward" ? "forward" : "backward";
  const out = h("div", { id: "stream-events" }, h("p", { class: "muted" }, "Loading…"));
  const meta = h("div", { id: "stream-metadata" });
  const actions = h("div", {});
  render(h("h1", {}, `Stream ${name}`), out, actions, meta);
  const path = `/streams/${enc(name)}/${from === "head" ? "head" : enc(from)}/${dir}/${PAGE_SIZE}?embed=body`;
  try {
    const feed = await api("GET", path, { accept: "application/vnd.eventstore.atom+json", what: `Reading ${name}` });
    const entries = (feed && feed.entries) || [];
    const rows = entries.map((e) => [
      num(e.eventNumber),
      // The event itself (for a link or a $all entry, the event it points at).
      h("a", { href: `#/event/${enc(e.streamId ?? name)}/${e.eventNumber}`, class: "event-link" }, e.title || e.eventNumber),
      e.eventType || "", e.updated ? new Date(e.updated).toLocaleString() : "",
      h("code", {}, (pretty(e.data) || "").slice(0, 160)),
    ]);
    const numbers = entries.map((e) => e.eventNumber).filter((n) => typeof n === "number");
    const lo = numbers.length ? Math.min(...numbers) : null;
    const hi = numbers.length ? Math.max(...numbers) : null;
    const pager = h("div", { class: "pager" },
      h("a", { href: `#/streams/${enc(name)}` }, "Newest"),
      lo !== null && lo > 0 ? h("a", { href: `#/streams/${enc(name)}?from=${lo - 1}&dir=backward`, id: "older" }, "Older") : null,
      hi !== null && !(feed.headOfStream) ? h("a", { href: `#/streams/${enc(name)}?from=${hi + 1}&dir=forward`, id: "newer" }, "Newer") : null,
      h("a", { href: `#/streams/${enc(name)}?from=0&dir=forward` }, "Oldest"));
    out.textContent = "";
    out.append(pager, entries.length
      ? table(["#", "Event", "Type", "Written", "Data"], rows, { id: "events-table" })
      : h("p", { class: "muted" }, "No events on this page."));
  } catch (e) {
    out.textContent = "";
    out.append(e instanceof ApiError && e.status === 404
      ? h("p", { class: "muted", id: "no-stream" }, "This stream has no events (or does not exist).")
      : errorBox(e));
  }
  actions.append(appendForm(name), deleteForm(name));
  await metadataEditor(name, meta);
}

function appendForm(name) {
  const type = h("input", { id: "append-type", value: "UserEvent", required: true });
  const data = h("textarea", { id: "append-data" }, '{\n  "hello": "world"\n}');
  const metadata = h("textarea", { id: "append-metadata", rows: 3 }, "");
  const status = h("div", {});
  const form = h("form", { class: "stacked", id: "append-form" }, h("h2", {}, "Append an event"),
    h("label", {}, "Event type", type), h("label", {}, "Data (JSON)", data),
    h("label", {}, "Metadata (JSON, optional)", metadata), h("button", { type: "submit" }, "Append"), status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.textContent = "";
    let parsed, parsedMeta;
    try {
      parsed = JSON.parse(data.value);
      parsedMeta = metadata.value.trim() ? JSON.parse(metadata.value) : undefined;
    } catch (e) {
      status.append(h("div", { class: "error" }, `Not valid JSON: ${e.message}`));
      return;
    }
    const event = { eventId: uuid4(), eventType: type.value, data: parsed };
    if (parsedMeta !== undefined) event.metadata = parsedMeta;
    try {
      await api("POST", `/streams/${enc(name)}`, {
        json: [event], headers: { "Content-Type": "application/vnd.eventstore.events+json" },
        what: "Appending",
      });
      status.append(h("div", { class: "ok" }, "Appended."));
      setTimeout(route, 300);
    } catch (e) { status.append(errorBox(e)); }
  });
  return form;
}

function deleteForm(name) {
  const hard = h("input", { type: "checkbox", id: "delete-hard" });
  const status = h("div", {});
  const button = h("button", { type: "submit", class: "danger", id: "delete-stream" }, "Delete stream");
  const form = h("form", { class: "inline" }, h("label", {}, h("span", {}, "Hard delete (permanent)"), hard), button, status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!confirm(`Delete stream ${name}${hard.checked ? " permanently" : ""}?`)) return;
    status.textContent = "";
    try {
      await api("DELETE", `/streams/${enc(name)}`, { headers: hard.checked ? { "ES-HardDelete": "true" } : {}, what: "Deleting" });
      status.append(h("div", { class: "ok" }, "Deleted."));
    } catch (e) { status.append(errorBox(e)); }
  });
  return h("div", {}, h("h2", {}, "Delete"), form);
}

async function metadataEditor(name, box) {
  const area = h("textarea", { id: "metadata-text" });
  const status = h("div", {});
  const form = h("form", { class: "stacked", id: "metadata-form" },
    h("h2", {}, "Stream metadata and ACL"),
    h("p", { class: "muted" }, 'e.g. {"$maxCount": 100, "$acl": {"$r": "$all", "$w": ["ops"]}}'),
    area, h("button", { type: "submit" }, "Save metadata"), status);
  box.append(form);
  try {
    const current = await api("GET", `/streams/${enc(name)}/metadata`, { what: "Reading metadata" });
    area.value = pretty(current && typeof current === "object" && "data" in current ? current.data : current) || "{}";
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) status.append(errorBox(e));
    area.value = "{}";
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.textContent = "";
    let value;
    try { value = JSON.parse(area.value); } catch (e) {
      status.append(h("div", { class: "error" }, `Not valid JSON: ${e.message}`));
      return;
    }
    try {
      await api("POST", `/streams/${enc(name)}/metadata`, {
        json: [{ eventId: uuid4(), eventType: "$metadata", data: value }],
        headers: { "Content-Type": "application/vnd.eventstore.events+json" }, what: "Saving metadata",
      });
      status.append(h("div", { class: "ok" }, "Saved."));
    } catch (e) { status.append(errorBox(e)); }
  });
}

async function eventPage(name, number) {
  render(h("h1", {}, `Event ${number}@${name}`), h("p", { class: "muted" }, "Loading…"));
  try {
    const entry = await api("GET", `/streams/${enc(name)}/${enc(number)}`,
      { accept: "application/vnd.eventstore.atom+json", what: "Reading the event" });
    const c = (entry && entry.content) || {};
    render(
      h("h1", {}, `Event ${number}@${name}`),
      h("p", {}, h("a", { href: `#/streams/${enc(name)}` }, `Back to ${name}`)),
      table(["Field", "Value"], [
        ["Stream", c.eventStreamId ?? name], ["Number", String(c.eventNumber ?? number)],
        ["Type", c.eventType ?? ""], ["Id", entry.id || ""], ["Written", entry.updated || ""],
      ], { id: "event-fields" }),
      h("h2", {}, "Data"), h("pre", { id: "event-data" }, pretty(c.data) || "(empty)"),
      h("h2", {}, "Metadata"), h("pre", { id: "event-metadata" }, pretty(c.metadata) || "(none)"));
  } catch (e) {
    render(h("h1", {}, `Event ${number}@${name}`), errorBox(e));
  }
}

async function subscriptionsPage() {
  const list = h("div", { id: "subscriptions-list" }, h("p", { class: "muted" }, "Loading…"));
  const detail = h("div", { id: "subscription-detail" });
  render(h("h1", {}, "Persistent subscriptions"), list, subscriptionForm(), detail);
  await every(3, async () => {
    let groups;
    try {
      groups = await api("GET", "/subscriptions", { what: "Listing subscriptions" });
    } catch (e) {
      list.textContent = "";
      list.append(errorBox(e));
      return;
    }
    const rows = (groups || []).map((g) => [
      h("a", { href: `#/streams/${enc(g.eventStreamId)}` }, g.eventStreamId), g.groupName, g.status,
      num(g.connectionCount), num(g.totalInFlightMessages), num(g.totalItemsProcessed),
      num(g.lastProcessedEventNumber), num(g.lastKnownEventNumber),
      h("td", {},
        h("button", { class: "secondary", onclick: () => showGroup(g.eventStreamId, g.groupName, detail) }, "Details"), " ",
        h("button", { class: "secondary", onclick: () => replayParked(g.eventStreamId, g.groupName, detail) }, "Replay parked"), " ",
        h("button", { class: "danger", onclick: () => deleteGroup(g.eventStreamId, g.groupName, detail) }, "Delete")),
    ]);
    list.textContent = "";
    list.append(rows.length
      ? table(["Stream", "Group", "Status", "Connections", "In flight", "Processed", "Last processed", "Last known", ""],
        rows, { id: "subscriptions-table" })
      : h("p", { class: "muted" }, "No persistent subscriptions."));
  });
}

const SETTINGS = [
  ["startFrom", "Start from (event number, -1 = end)", 0],
  ["resolveLinktos", "Resolve links", false],
  ["messageTimeoutMilliseconds", "Message timeout (ms)", 10000],
  ["maxRetryCount", "Max retries", 10],
  ["liveBufferSize", "Live buffer", 500],
  ["bufferSize", "History buffer", 500],
  ["readBatchSize", "Read batch", 20],
  ["checkPointAfterMilliseconds", "Checkpoint after (ms)", 1000],
  ["minCheckPointCount", "Min checkpoint count", 10],
  ["maxCheckPointCount", "Max checkpoint count", 1000],
  ["maxSubscriberCount", "Max subscribers (0 = no limit)", 0],
  ["namedConsumerStrategy", "Strategy", "RoundRobin"],
];

function subscriptionForm(existing) {
  const stream = h("input", { id: "sub-stream", required: true, value: existing ? existing.eventStreamId : "" });
  const group = h("input", { id: "sub-group", required: true, value: existing ? existing.groupName : "" });
  const inputs = {};
  const fields = SETTINGS.map(([key, label, def]) => {
    const value = existing && existing.config && key in existing.config ? existing.config[key] : def;
    let input;
    if (typeof def === "boolean") input = h("input", { type: "checkbox", id: `sub-${key}`, checked: !!value });
    else if (key === "namedConsumerStrategy") {
      input = h("select", { id: `sub-${key}` }, ["RoundRobin", "DispatchToSingle", "Pinned"].map((s) =>
        h("option", { value: s, selected: s === value }, s)));
    } else input = h("input", { id: `sub-${key}`, type: "number", value });
    inputs[key] = input;
    return h("label", {}, label, input);
  });
  const status = h("div", {});
  const form = h("form", { class: "inline", id: existing ? "edit-subscription" : "create-subscription" },
    h("label", {}, "Stream", stream), h("label", {}, "Group", group), ...fields,
    h("button", { type: "submit", id: existing ? "sub-save" : "sub-create" }, existing ? "Save" : "Create"), status);
  if (existing) { stream.disabled = true; group.disabled = true; }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.textContent = "";
    const body = {};
    for (const [key, , def] of SETTINGS) {
      const input = inputs[key];
      if (typeof def === "boolean") body[key] = input.checked;
      else if (typeof def === "number") body[key] = Number(input.value);
      else body[key] = input.value;
    }
    try {
      await api(existing ? "POST" : "PUT", `/subscriptions/${enc(stream.value)}/${enc(group.value)}`,
        { json: body, what: existing ? "Saving the subscription" : "Creating the subscription" });
      status.append(h("div", { class: "ok", id: "sub-result" }, existing ? "Saved." : "Created."));
    } catch (e) { status.append(errorBox(e)); }
  });
  return h("div", {}, h("h2", {}, existing ? `Edit ${existing.eventStreamId} :: ${existing.groupName}` : "Create a subscription"), form);
}

async function showGroup(stream, group, box) {
  box.textContent = "";
  try {
    const info = await api("GET", `/subscriptions/${enc(stream)}/${enc(group)}/info`, { what: "Reading the group" });
    const conns = (info.connections || []).map((c) => [c.from, c.username, num(c.inFlightMessages), num(c.availableSlots), num(c.totalItemsProcessed)]);
    box.append(
      h("h2", {}, `${stream} :: ${group}`),
      table(["Read buffer", "Live buffer", "Retry (parked replay) buffer", "Outstanding", "Last processed", "Last known (checkpoint source)"],
        [[num(info.readBufferCount), num(info.liveBufferCount), num(info.retryBufferCount), num(info.outstandingMessagesCount),
          num(info.lastProcessedEventNumber), num(info.lastKnownEventNumber)]]),
      h("p", {}, "Parked messages: ", h("a", { href: `#/streams/${enc(`$persistentsubscription-${stream}::${group}-parked`)}` }, "parked stream")),
      h("h2", {}, "Connections"),
      conns.length ? table(["From", "User", "In flight", "Free slots", "Processed"], conns) : h("p", { class: "muted" }, "No consumers connected."),
      subscriptionForm(info));
  } catch (e) { box.append(errorBox(e)); }
}

async function replayParked(stream, group, box) {
  box.textContent = "";
  try {
    await api("POST", `/subscriptions/${enc(stream)}/${enc(group)}/replayParked`, { what: "Replaying parked messages" });
    box.append(h("div", { class: "ok" }, `Parked messages of ${stream} :: ${group} replayed.`));
  } catch (e) { box.append(errorBox(e)); }
}

async function deleteGroup(stream, group, box) {
  if (!confirm(`Delete subscription group ${group} on ${stream}?`)) return;
  box.textContent = "";
  try {
    await api("DELETE", `/subscriptions/${enc(stream)}/${enc(group)}`, { what: "Deleting the subscription" });
    box.append(h("div", { class: "ok" }, `Deleted ${stream} :: ${group}.`));
  } catch (e) { box.append(errorBox(e)); }
}

// -- progress of long work (GET /progress) -------------------------------------

const TASK_KINDS = {
  "index-rebuild": "Index rebuild",
  "chunk-verification": "Chunk verification",
  "replication-catch-up": "Catching up from the leader",
  "scavenge": "Scavenge",
  "projection-catch-up": "Projection catch-up",
};

function amount(value, unit) {
  return unit === "bytes" ? bytes(value) : `${Math.round(value)} ${unit}`;
}

function taskLine(t) {
  const parts = [`${t.percentage.toFixed(1)}%`, `${amount(t.done, t.unit)} of ${amount(t.total, t.unit)}`];
  if (t.running) {
    parts.push(`${amount(t.rate, t.unit)}/s`);
    if (t.remaining > 0) parts.push(`${amount(t.remaining, t.unit)} to go`);
    parts.push(t.etaSeconds === null ? "time left unknown" : `about ${duration(t.etaSeconds)} left`);
  } else {
    parts.push(`${t.result} in ${t.elapsedSeconds.toFixed(1)} s`);
  }
  return parts.join(" · ");
}

function taskRow(t, attrs) {
  const bar = h("progress", { max: 100, value: t.percentage, class: "task-bar" });
  return h("div", { class: `task ${t.running ? "running" : "finished"}`, ...(attrs || {}) },
    h("div", { class: "task-name" }, `${TASK_KINDS[t.kind] || t.kind}: ${t.name}`),
    bar, h("div", { class: "task-line muted" }, taskLine(t)));
}

async function readProgress() {
  const body = await api("GET", "/progress", { what: "Reading /progress" });
  return (body && body.tasks) || [];
}

// tasks: running first, then finished ones newest first (as the node lists them)
function taskList(tasks, finishedShown) {
  const running = tasks.filter((t) => t.running);
  const finished = tasks.filter((t) => !t.running).slice(0, finishedShown);
  if (!running.length && !finished.length) return [h("p", { class: "muted" }, "Nothing running.")];
  return [...running, ...finished].map((t) => taskRow(t));
}

// -- projections ----------------------------------------------------------------

// "$" stays literal, as in v5's own URLs (/projection/$by_category).
const projectionPath = (name) => `/projection/${enc(name).replace(/%24/g, "$")}`;

async function projectionsPage() {
  const box = h("div", { id: "projections" }, h("p", { class: "muted" }, "Loading…"));
  const status = h("div", { id: "projections-status" });
  const formBox = h("div", {});
  render(h("h1", {}, "Projections"), status, box, formBox);
  const command = async (name, verb) => {
    status.textContent = "";
    try {
      await api("POST", `${projectionPath(name)}/command/${verb}`, { what: `${verb} ${name}`, json: {} });
      status.append(h("div", { class: "ok", id: "projection-command-result" }, `${name}: ${verb} done.`));
      await reload();
    } catch (e) { status.append(errorBox(e)); }
  };
  let shownForm = false;
  const reload = async () => {
    let list;
    try {
      list = await api("GET", "/projections/any", { what: "Listing projections" });
    } catch (e) {
      box.textContent = "";
      if (e instanceof ApiError && (e.status === 404 || e.status === 405 || e.status === 501)) {
        box.append(h("p", { id: "projections-not-running" }, "Projections are not running on this node."));
        return;
      }
      throw e;
    }
    const items = (list && list.projections) || [];
    const rows = items.map((p) => {
      const progress = typeof p.progress === "number" && p.progress >= 0
        ? h("td", {}, h("progress", { max: 100, value: Math.min(100, p.progress) }), ` ${p.progress.toFixed(1)}%`)
        : h("td", { class: "muted" }, "–");
      const running = String(p.status || "").startsWith("Running");
      return [
        h("td", {}, h("a", { href: `#/projections/${enc(p.name)}`, class: "projection-link" }, p.name)),
        h("td", { class: `projection-status status-${String(p.status || "").split("/")[0]}` }, p.status || ""),
        p.mode || "", progress, num(p.eventsProcessedAfterRestart ?? ""), p.position || "",
        p.checkpointStatus || p.stateReason || "",
        h("td", {},
          h("button", { class: "secondary", disabled: running, onclick: () => command(p.name, "enable") }, "Enable"), " ",
          h("button", { class: "secondary", disabled: !running, onclick: () => command(p.name, "disable") }, "Disable"), " ",
          h("button", { class: "danger", onclick: () => {
            if (confirm(`Reset projection ${p.name}? It will process every event again.`)) command(p.name, "reset");
          } }, "Reset")),
      ];
    });
    box.textContent = "";
    box.append(rows.length
      ? table(["Name", "Status", "Mode", "Progress", "Events processed", "Position", "Checkpoint", ""], rows, { id: "projections-table" })
      : h("p", { class: "muted" }, "No projections."));
    if (!shownForm) { shownForm = true; formBox.append(projectionForm(reload)); }
    clearBanner();
  };
  await every(3, reload);
}

function projectionForm(reload) {
  const name = h("input", { id: "projection-name", required: true, placeholder: "my-projection" });
  const mode = h("select", { id: "projection-mode" }, h("option", { value: "continuous" }, "Continuous"),
    h("option", { value: "onetime" }, "One-time"));
  const enabled = h("input", { id: "projection-enabled", type: "checkbox", checked: true });
  const emit = h("input", { id: "projection-emit", type: "checkbox" });
  const query = h("textarea", { id: "projection-query", spellcheck: "false" },
    "fromAll()\n  .when({\n    $init: function () { return { count: 0 }; },\n    $any: function (s, e) { s.count += 1; }\n  });\n");
  const result = h("div", { id: "projection-create-result" });
  const form = h("form", { class: "stacked", id: "create-projection" },
    h("label", {}, "Name", name), h("label", {}, "Mode", mode),
    h("label", { class: "check" }, h("span", {}, enabled, " Enabled")),
    h("label", { class: "check" }, h("span", {}, emit, " Emit events (emit=true)")),
    h("label", {}, "Query (JavaScript)", query),
    h("button", { type: "submit", id: "projection-create" }, "Create projection"), result);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    result.textContent = "";
    const params = new URLSearchParams({ name: name.value, type: "js", enabled: String(enabled.checked), emit: String(emit.checked) });
    try {
      await api("POST", `/projections/${mode.value}?${params}`, {
        what: "Creating the projection", raw: true,
        headers: { "Content-Type": "application/json" }, body: query.value,
      });
      result.append(h("div", { class: "ok" }, `Projection ${name.value} created.`));
      await reload();
    } catch (e) { result.append(errorBox(e)); }
  });
  return h("div", {}, h("h2", {}, "New projection"), form);
}

async function projectionPage(name) {
  const stats = h("div", { id: "projection-stats" }, h("p", { class: "muted" }, "Loading…"));
  const state = h("pre", { id: "projection-state" });
  const result = h("pre", { id: "projection-result" });
  const errors = h("div", {});
  render(h("h1", {}, `Projection ${name}`), h("p", {}, h("a", { href: "#/projections" }, "All projections")),
    errors, stats, h("h2", {}, "State"), state, h("h2", {}, "Result"), result);
  await every(3, async () => {
    const s = await api("GET", projectionPath(name), { what: "Reading the projection" });
    const fields = ["status", "mode", "progress", "position", "lastCheckpoint", "eventsProcessedAfterRestart",
      "checkpointStatus", "stateReason", "bufferedEvents", "writesInProgress", "readsInProgress"];
    stats.textContent = "";
    stats.append(table(["Field", "Value"], fields.filter((f) => s && s[f] !== undefined).map((f) => [f, String(s[f])]),
      { id: "projection-fields" }));
    errors.textContent = "";
    for (const [part, box] of [["state", state], ["result", result]]) {
      try {
        const text = await api("GET", `${projectionPath(name)}/${part}`, { what: `Reading the ${part}`, raw: true });
        box.textContent = pretty(text) || "(empty)";
      } catch (e) { box.textContent = ""; errors.append(errorBox(e)); }
    }
    clearBanner();
  });
}

async function usersPage() {
  const list = h("div", { id: "users-list" }, h("p", { class: "muted" }, "Loading…"));
  const status = h("div", {});
  render(h("h1", {}, "Users"), list, status, userForm(status));
  const reload = async () => {
    let users;
    try {
      users = await api("GET", "/users", { what: "Listing users" });
    } catch (e) {
      list.textContent = "";
      list.append(errorBox(e));
      return;
    }
    const act = async (what, method, path, json) => {
      status.textContent = "";
      try { await api(method, path, { json, what }); status.append(h("div", { class: "ok" }, `${what}: done.`)); await reload(); } catch (e) { status.append(errorBox(e)); }
    };
    const rows = ((users && users.data) || []).map((u) => {
      const login = u.loginName;
      const base = `/users/${enc(login)}`;
      return [login, u.fullName || "", (u.groups || []).join(", "), u.disabled ? "disabled" : "enabled",
        h("td", {},
          h("button", { class: "secondary", onclick: () => act(u.disabled ? "Enable" : "Disable", "POST", `${base}/command/${u.disabled ? "enable" : "disable"}`) }, u.disabled ? "Enable" : "Disable"), " ",
          h("button", { class: "secondary", onclick: () => {
            const pw = prompt(`New password for ${login}`);
            if (pw) act("Reset password", "POST", `${base}/command/reset-password`, { newPassword: pw });
          } }, "Reset password"), " ",
          h("button", { class: "secondary", onclick: () => {
            const groups = prompt(`Groups of ${login} (comma separated)`, (u.groups || []).join(", "));
            if (groups !== null) act("Set groups", "PUT", base, { fullName: u.fullName || "", groups: groups.split(",").map((g) => g.trim()).filter(Boolean) });
          } }, "Groups"), " ",
          h("button", { class: "danger", onclick: () => { if (confirm(`Delete user ${login}?`)) act("Delete", "DELETE", base); } }, "Delete"))];
    });
    list.textContent = "";
    list.append(table(["Login", "Full name", "Groups", "Status", ""], rows, { id: "users-table" }));
  };
  usersReload = reload;
  await reload();
}

let usersReload = null;

function userForm(status) {
  const login = h("input", { id: "user-login", required: true });
  const full = h("input", { id: "user-fullname" });
  const groups = h("input", { id: "user-groups", placeholder: "$admins, ops" });
  const pass = h("input", { id: "user-password", type: "password", required: true, autocomplete: "new-password" });
  const form = h("form", { class: "inline", id: "create-user" }, h("label", {}, "Login", login),
    h("label", {}, "Full name", full), h("label", {}, "Groups", groups), h("label", {}, "Password", pass),
    h("button", { type: "submit" }, "Create user"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.textContent = "";
    try {
      await api("POST", "/users", {
        json: { loginName: login.value, fullName: full.value, password: pass.value,
          groups: groups.value.split(",").map((g) => g.trim()).filter(Boolean) }, what: "Creating the user",
      });
      status.append(h("div", { class: "ok" }, `User ${login.value} created.`));
      if (usersReload) await usersReload();
    } catch (e) { status.append(errorBox(e)); }
  });
  return h("div", {}, h("h2", {}, "Create a user"), form);
}

async function adminPage() {
  const status = h("div", { id: "admin-status" });
  const progress = h("p", { id: "scavenge-progress", class: "muted" });
  const scavengeBar = h("div", { id: "scavenge-task" });
  const tasks = h("div", { id: "progress-tasks" });
  let scavengeId = null;
  const button = (label, cls, onclick, id) => h("button", { class: cls, onclick, id }, label);
  const run = async (what, method, path, options = {}) => {
    status.textContent = "";
    try {
      const result = await api(method, path, { what, raw: true, ...options });
      status.append(h("div", { class: "ok" }, `${what}: ${result ? String(result).slice(0, 300) : "done"}`));
      return result;
    } catch (e) { status.append(errorBox(e)); return null; }
  };
  const stop = button("Stop scavenge", "secondary", async () => {
    if (scavengeId) await run("Stopping the scavenge", "DELETE", `/admin/scavenge/${enc(scavengeId)}`);
    await refresh();
  }, "scavenge-stop");
  stop.disabled = true;
  render(h("h1", {}, "Admin"),
    h("h2", {}, "Scavenge"),
    h("p", {},
      button("Start scavenge", "", async () => {
        const text = await run("Scavenge", "POST", "/admin/scavenge");
        try { scavengeId = JSON.parse(text).scavengeId || scavengeId; } catch (e) { /* not JSON */ }
        await refresh();
      }, "scavenge"), " ", stop),
    progress, scavengeBar,
    h("h2", {}, "Node"),
    h("p", {},
      button("Reload certificates", "secondary", () => run("Reload certificates", "POST", "/admin/reloadcertificates", { accept: "text/plain" }), "reload-certificates"), " ",
      button("Shut down this node", "danger", () => {
        if (confirm("Shut this node down?")) run("Shutdown", "POST", "/admin/shutdown");
      }, "shutdown")),
    status,
    h("h2", {}, "Long tasks"), tasks);
  const refresh = async () => {
    const [text, list] = await Promise.all([
      api("GET", "/metrics", { accept: "text/plain", raw: true, what: "Reading /metrics" }),
      readProgress(),
    ]);
    const samples = parseMetrics(text);
    // the newest scavenge on the board: the running one, else the last one
    const scavenge = list.find((t) => t.kind === "scavenge" && t.running) || list.find((t) => t.kind === "scavenge");
    const running = scavenge ? (scavenge.running ? 1 : 0) : (metricSum(samples, "estore_scavenges_running") || 0);
    const started = metricSum(samples, "estore_scavenges_started_total") || 0;
    progress.textContent = running ? "A scavenge is running." : `No scavenge running (${started} started since the node started).`;
    scavengeBar.textContent = "";
    if (scavenge) {
      scavengeBar.append(taskRow(scavenge, { id: "scavenge-bar" }));
      if (scavenge.running) scavengeId = scavenge.name;
    }
    stop.disabled = !(running && scavengeId);
    tasks.textContent = "";
    tasks.append(...taskList(list, 10));
    clearBanner();
  };
  await every(1, refresh);
}

// -- router ----------------------------------------------------------------

async function route() {
  generation += 1;
  for (const t of timers) clearInterval(t);
  timers = [];
  clearBanner();
  const hash = location.hash.replace(/^#/, "") || "/dashboard";
  const [pathPart, queryPart] = hash.split("?");
  const parts = pathPart.split("/").filter(Boolean).map((p) => decodeURIComponent(p));
  const page = parts[0] || "dashboard";
  if (page !== "login" && !credentials()) {
    location.hash = "#/login";
    return;
  }
  document.getElementById("top").hidden = page === "login";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  showWho();
  const query = parseQuery(queryPart);
  try {
    if (page === "login") await loginPage();
    else if (page === "dashboard") await dashboardPage();
    else if (page === "cluster") await clusterPage();
    else if (page === "streams" && parts.length > 1) await streamPage(parts.slice(1).join("/"), query);
    else if (page === "streams") await streamsPage();
    else if (page === "event" && parts.length > 2) await eventPage(parts[1], parts[2]);
    else if (page === "subscriptions") await subscriptionsPage();
    else if (page === "projections" && parts.length > 1) await projectionPage(parts.slice(1).join("/"));
    else if (page === "projections") await projectionsPage();
    else if (page === "users") await usersPage();
    else if (page === "admin") await adminPage();
    else render(h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/dashboard" }, "Dashboard")));
  } catch (e) {
    // A page never ends blank: say what failed.
    if (!(e instanceof ApiError && e.status === 401)) {
      render(h("h1", {}, "This page could not be shown"), errorBox(e));
    }
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("error", (ev) => report(ev.error || ev.message));
window.addEventListener("unhandledrejection", (ev) => { ev.preventDefault(); report(ev.reason); });
route();

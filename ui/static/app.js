// Switchyard dashboard: polls this agent's JSON API and renders it. Plain
// JavaScript, no dependencies. Every value is written with textContent, so
// nothing from the API is ever interpreted as markup.
"use strict";

const PAGE = 50;        // servers per page (one request each: GET /v1/servers?limit=PAGE&after=CURSOR)
const ROOM_PAGE = 25;   // rooms per page
const MAX_ID_BYTES = 128; // the API's cap on server ids and on ?prefix= (UTF-8 bytes)
const FETCH_TIMEOUT_MS = 4000;

// servers is every registered server (registry fields, from the change
// stream) for the totals and the regions; serverPage is the page of the
// table as the API answered it (with load), cursors the "after" of each
// page from the first to the one shown, stateFilter the server state the
// table is limited to ("" for every server; the API filters: ?state=) and
// prefixFilter the start of the ids shown ("" for any; ?prefix=).
const st = {
  overview: null, servers: [], serversStale: false, allocs: [], policy: null, intents: [],
  errors: {}, prev: null, placed: null, allocRate: null, refuseRate: null,
  serverPage: null, cursors: [""], stateFilter: "", prefixFilter: "", roomPage: 0, updated: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}

function bar(frac, label) {
  const f = Math.max(0, Math.min(1, Number.isFinite(frac) ? frac : 0));
  const i = el("i", { class: f >= 0.9 ? "hot" : f >= 0.7 ? "warm" : "" });
  i.style.width = (f * 100).toFixed(1) + "%";
  const b = el("span", { class: "bar", title: label || (f * 100).toFixed(0) + "%" }, i);
  return b;
}

function fmtAge(ms) {
  if (ms == null) return "–";
  if (ms < 1000) return ms + " ms";
  if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
  return Math.round(ms / 60000) + " min";
}

function fmtTime(unixMs) {
  if (!unixMs) return "";
  return new Date(unixMs).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function fmtRate(r) { return r == null ? "–" : r < 10 ? r.toFixed(1) : Math.round(r).toString(); }

// fetchJSON returns the answer's body and headers (list pages carry their
// total and next cursor in headers: same origin, so the page reads them).
async function fetchJSON(path) {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
  try {
    const r = await fetch(path, { cache: "no-store", signal: ctl.signal });
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) {
      const e = new Error((body && body.error) || ("HTTP " + r.status));
      e.status = r.status; e.code = body && body.code;
      throw e;
    }
    return { body, headers: r.headers };
  } finally { clearTimeout(t); }
}

async function getJSON(path) { return (await fetchJSON(path)).body; }

// Linearizable read through the leader; when there is none (503), this
// agent's local replica instead, marked stale.
async function getLeaderOrLocal(path) {
  let r, stale = false;
  try {
    r = await fetchJSON(path);
  } catch (e) {
    if (e.status !== 503 && e.name !== "AbortError") throw e;
    const sep = path.includes("?") ? "&" : "?";
    r = await fetchJSON(path + sep + "stale=true");
    stale = true;
  }
  return { data: r.body, headers: r.headers, stale };
}

// getPage reads one page of a list endpoint: its items, the total of the
// list (X-Total-Count) and the cursor of the next page (X-Next-Cursor,
// "" on the last).
async function getPage(path, limit, after) {
  const sep = path.includes("?") ? "&" : "?";
  const r = await getLeaderOrLocal(path + sep + "limit=" + limit + (after ? "&after=" + encodeURIComponent(after) : ""));
  const items = r.data || [];
  const total = parseInt(r.headers.get("X-Total-Count"), 10);
  return { items, total: Number.isFinite(total) ? total : items.length, next: r.headers.get("X-Next-Cursor") || "", stale: r.stale, after };
}

// getAll reads every page of a list (used only without the change stream).
async function getAll(path) {
  const out = [];
  let after = "", stale = false;
  for (;;) {
    const p = await getPage(path, 1000, after);
    out.push(...p.items);
    stale = stale || p.stale;
    if (!p.next) return { data: out, stale };
    after = p.next;
  }
}

// poll runs fn every ms, never two at once, recording errors under name.
function poll(name, ms, fn) {
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try { await fn(); delete st.errors[name]; } catch (e) { st.errors[name] = e.message || String(e); }
    finally { busy = false; render(); }
  };
  tick();
  setInterval(tick, ms);
}

function sumCounters(ov) {
  let ok = 0, refused = 0, n = 0;
  for (const m of ov.members) {
    if (!m.stats) continue;
    n++;
    const a = m.stats.allocations || {};
    ok += (a.granted || 0) + (a.duplicate || 0);
    refused += a.refused || 0;
  }
  return { ok, refused, n, t: ov.unix_ms };
}

async function pollOverview() {
  const ov = await getJSON("/v1/overview");
  const c = sumCounters(ov);
  if (st.prev && st.prev.n === c.n && c.t > st.prev.t) {
    const dt = (c.t - st.prev.t) / 1000;
    const dOk = c.ok - st.prev.ok, dRef = c.refused - st.prev.refused;
    // A restarted member resets its counters: skip that interval.
    if (dOk >= 0 && dRef >= 0) { st.allocRate = dOk / dt; st.refuseRate = dRef / dt; }
  }
  st.prev = c;
  st.overview = ov;
  st.updated = Date.now();
}

// pollServerPage reads the page of the table shown: the servers (in the
// state filtered on, if any) after the current cursor, with their load.
// An answer for a page or a filter the operator has left meanwhile is
// dropped.
async function pollServerPage() {
  const after = st.cursors[st.cursors.length - 1], filter = filterKey();
  const q = [];
  if (st.stateFilter) q.push("state=" + encodeURIComponent(st.stateFilter));
  if (st.prefixFilter) q.push("prefix=" + encodeURIComponent(st.prefixFilter));
  const p = await getPage("/v1/servers" + (q.length ? "?" + q.join("&") : ""), PAGE, after);
  if (after !== st.cursors[st.cursors.length - 1] || filter !== filterKey()) return;
  p.filter = filter;
  p.which = (st.stateFilter ? st.stateFilter + " " : "") + (st.prefixFilter ? "“" + st.prefixFilter + "…” " : "");
  st.serverPage = p;
  st.serversStale = p.stale;
}

// Without the change stream, the totals and regions come from every page.
async function pollServerTotals() {
  const r = await getAll("/v1/servers");
  st.servers = r.data;
}

async function pollAllocs() {
  const r = await getAll("/v1/allocations?active=true");
  st.allocs = r.data;
}

async function pollPolicy() {
  const p = await getLeaderOrLocal("/v1/policy");
  st.policy = p.data;
  const i = await getLeaderOrLocal("/v1/provisioning/intents");
  st.intents = i.data || [];
}

function selfStats() {
  const ov = st.overview;
  if (!ov) return null;
  const me = ov.members.find((m) => m.id === ov.node);
  return me && me.stats ? me.stats.status : null;
}

function render() {
  renderHeader();
  renderMembers();
  renderTiles();
  renderServers();
  renderRooms();
  renderPolicy();
}

function renderHeader() {
  const ov = st.overview;
  if (!ov) return;
  $("node").textContent = ov.node;
  $("leader").textContent = ov.leader || "none";
  const me = selfStats();
  $("term").textContent = me ? me.term : "–";
  $("updated").textContent = "updated " + new Date(st.updated).toLocaleTimeString() +
    (st.watchIndex != null ? " · live from index " + st.watchIndex : "");
  const nl = $("no-leader");
  if (!ov.leader) {
    nl.hidden = false;
    nl.textContent = "Agent " + ov.node + " has no leader: the cluster cannot allocate or change anything through it right now. " +
      "Showing this agent's local replica, which may be out of date.";
  } else {
    nl.hidden = true;
  }
  const errs = Object.entries(st.errors);
  const eb = $("errors");
  eb.hidden = errs.length === 0;
  eb.textContent = errs.map(([k, v]) => k + ": " + v).join(" · ");
}

function renderMembers() {
  const ov = st.overview;
  if (!ov) return;
  const tb = $("members").tBodies[0];
  tb.replaceChildren(...ov.members.map((m) => {
    const s = m.stats && m.stats.status;
    const lag = s ? Math.max(0, s.commit_index - s.applied_index) : null;
    const tr = el("tr", { "data-member": m.id, class: (m.leader ? "leader " : "") + (m.reachable ? "" : "unreachable") },
      el("td", { class: "id" }, m.id),
      el("td", { class: "role" }, m.leader ? "leader" : m.suffrage.toLowerCase()),
      el("td", { class: "state" }, s ? s.state : (m.error ? "unreachable: " + m.error : "unreachable")),
      el("td", { class: "n term" }, s ? s.term : "–"),
      el("td", { class: "n last" }, s ? s.last_index : "–"),
      el("td", { class: "n commit" }, s ? s.commit_index : "–"),
      el("td", { class: "n applied" }, s ? s.applied_index : "–"),
      el("td", { class: "n lag" }, lag == null ? "–" : lag),
      el("td", { class: "n clock" }, s && s.clock_offset_ms != null ? s.clock_offset_ms + " ms" : "–"),
      el("td", { class: "http" }, m.http_addr || ""));
    return tr;
  }));
}

function renderTiles() {
  let cap = 0, used = 0;
  const states = { active: 0, draining: 0, down: 0 };
  for (const s of st.servers) {
    cap += s.capacity; used += s.used;
    states[s.state] = (states[s.state] || 0) + 1;
  }
  $("servers-count").textContent = st.servers.length;
  $("servers-states").textContent = Object.entries(states).map(([k, v]) => v + " " + k).join(", ") + (st.serversStale ? " (local replica)" : "");
  $("used-total").textContent = used;
  $("capacity-total").textContent = cap;
  const ub = $("used-bar");
  ub.style.width = (cap ? Math.min(100, 100 * used / cap) : 0).toFixed(1) + "%";
  $("alloc-active").textContent = st.allocs.length;
  $("rooms-count").textContent = new Set(st.allocs.map((a) => a.room)).size;
  $("alloc-rate").textContent = fmtRate(st.allocRate);
  $("refuse-rate").textContent = fmtRate(st.refuseRate);
  const p = st.policy;
  if (p) {
    $("policy-strategy").textContent = p.strategy || "least-loaded";
    $("policy-version").textContent = p.version;
    $("policy-when").textContent = p.applied_at_unix_ms ? "since " + fmtTime(p.applied_at_unix_ms) + " (index " + p.applied_at_index + ")" : "(default)";
  }
  const open = st.intents.filter((i) => i.state === "pending" || i.state === "started").length;
  $("intents-open").textContent = open + " open";
  $("intents-count").textContent = st.intents.length;
  $("intents-failed").textContent = st.intents.filter((i) => i.state === "failed").length;
}

function renderServers() {
  // Regions: one summary line each, over every server.
  const regions = new Map();
  for (const s of st.servers) {
    const k = s.region || "(none)";
    const r = regions.get(k) || { n: 0, active: 0, down: 0, used: 0, cap: 0 };
    r.n++; r.used += s.used; r.cap += s.capacity;
    if (s.state === "active") r.active++;
    if (s.state === "down") r.down++;
    regions.set(k, r);
  }
  $("regions").tBodies[0].replaceChildren(...[...regions.entries()].sort().map(([k, r]) =>
    el("tr", { "data-region": k },
      el("td", {}, k), el("td", { class: "n" }, r.n), el("td", { class: "n" }, r.active), el("td", { class: "n" }, r.down),
      el("td", { class: "n" }, r.used), el("td", { class: "n" }, r.cap),
      el("td", {}, bar(r.cap ? r.used / r.cap : 0)))));
  // The table: the page the API answered, ordered by id.
  const p = st.serverPage;
  if (!p) return;
  const page = st.cursors.length;
  const first = (page - 1) * PAGE + 1;
  const pages = Math.max(page, Math.ceil(p.total / PAGE), 1);
  $("page").textContent = "page " + page + " / " + pages;
  // The total is the API's count of the servers matching the filter.
  const which = p.which ? " " + p.which.trim() : "";
  $("servers-total").textContent = p.total;
  $("servers-which").textContent = p.which;
  $("servers-shown").textContent = p.items.length
    ? "showing " + first + "–" + (first + p.items.length - 1) + " of " + p.total + which + (p.stale ? " (local replica)" : "")
    : p.total ? "no" + which + " servers after " + p.after + " (of " + p.total + ")" : "no" + which + " servers";
  $("prev").disabled = page === 1;
  $("next").disabled = !p.next;
  $("servers").tBodies[0].replaceChildren(...p.items.map((s) => {
    const l = s.load;
    return el("tr", { "data-server": s.id },
      el("td", { class: "id" }, s.id),
      el("td", { class: "region" }, s.region || ""),
      el("td", { class: "zone" }, s.zone || ""),
      el("td", { class: "state state-" + s.state }, s.state),
      el("td", { class: "n capacity" }, s.capacity),
      el("td", { class: "n used" }, s.used),
      el("td", { class: "n free" }, s.free),
      el("td", {}, bar(s.capacity ? s.used / s.capacity : 0, s.used + " / " + s.capacity + " units")),
      el("td", {}, l ? bar(l.cpu, "cpu " + (l.cpu * 100).toFixed(0) + "%") : "–"),
      el("td", { class: "n peers" }, l ? l.peers : "–"),
      el("td", { class: "n age" }, fmtAge(s.load_age_ms)));
  }));
}

function renderRooms() {
  const rooms = new Map();
  for (const a of st.allocs) {
    const r = rooms.get(a.room) || { units: 0, servers: new Map(), edges: [] };
    r.units += a.units;
    r.servers.set(a.server, (r.servers.get(a.server) || 0) + a.units);
    if (a.requester && a.requester !== a.server) r.edges.push([a.requester, a.server, a.units]);
    rooms.set(a.room, r);
  }
  const names = [...rooms.keys()].sort();
  const pages = Math.max(1, Math.ceil(names.length / ROOM_PAGE));
  st.roomPage = Math.min(st.roomPage, pages - 1);
  $("rpage").textContent = names.length + " rooms · page " + (st.roomPage + 1) + " / " + pages;
  $("rooms").replaceChildren(...names.slice(st.roomPage * ROOM_PAGE, (st.roomPage + 1) * ROOM_PAGE).map((name) => {
    const r = rooms.get(name);
    const fed = new Set(r.edges.map((e) => e[1]));
    const kids = [];
    for (const [srv, units] of r.servers) {
      if (fed.has(srv)) continue; // shown under the server feeding it
      kids.push(serverNode(srv, units, r));
    }
    const p = st.placed && st.placed.get(name);
    const placed = p ? " · placed on " + (p.server || "(server lost)") + " (" + p.sfu + ")" + (p.moved ? ", moved" : "") : "";
    return el("li", { "data-room": name }, el("b", {}, name), " · " + r.units + " units on " + r.servers.size + " server(s)" + placed,
      el("ul", {}, ...kids));
  }));
}

function serverNode(srv, units, r, seen) {
  seen = seen || new Set();
  seen.add(srv);
  const li = el("li", { "data-server": srv }, srv + " (" + units + " units)");
  const out = r.edges.filter((e) => e[0] === srv && !seen.has(e[1]));
  if (out.length) {
    li.append(el("ul", {}, ...out.map((e) => {
      const n = serverNode(e[1], r.servers.get(e[1]) || e[2], r, seen);
      n.prepend(el("span", { class: "edge" }, "→ cascade "));
      return n;
    })));
  }
  return li;
}

function renderPolicy() {
  const p = st.policy;
  if (p) $("policy").textContent = JSON.stringify(p, null, 2);
  const tb = $("intents").tBodies[0];
  const list = [...st.intents].sort((a, b) => b.updated_at_unix_ms - a.updated_at_unix_ms).slice(0, 100);
  tb.replaceChildren(...list.map((i) => el("tr", { "data-intent": i.id },
    el("td", {}, i.id), el("td", {}, i.kind), el("td", { class: "state" }, i.state), el("td", {}, i.server_id),
    el("td", { class: "n" }, i.units || ""), el("td", {}, fmtTime(i.updated_at_unix_ms)), el("td", {}, i.error || ""))));
}

// turnServerPage moves the table to the next page (the cursor the shown
// page's answer gave) or back, and reads it at once.
function turnServerPage(forward) {
  const p = st.serverPage;
  if (forward) {
    if (!p || !p.next || p.after !== st.cursors[st.cursors.length - 1] || p.filter !== filterKey()) return;
    st.cursors.push(p.next);
  } else {
    if (st.cursors.length === 1) return;
    st.cursors.pop();
  }
  refreshServerPage();
}

// refreshServerPage reads the page now shown at once (not at the next poll).
function refreshServerPage() {
  pollServerPage().then(() => { delete st.errors.servers; }, (e) => { st.errors.servers = e.message || String(e); }).finally(render);
}

// filterKey names the table's filters, to drop answers to a filter the
// operator has left.
function filterKey() { return st.stateFilter + "\u0000" + st.prefixFilter; }

// filterServers limits the table to one server state ("" for all) and to
// ids starting with prefix ("" for any), and starts it over at its first
// page.
function filterServers(state, prefix) {
  if (state === st.stateFilter && prefix === st.prefixFilter) return;
  st.stateFilter = state;
  st.prefixFilter = prefix;
  st.cursors = [""];
  refreshServerPage();
}

function wire() {
  $("prev").addEventListener("click", () => turnServerPage(false));
  $("next").addEventListener("click", () => turnServerPage(true));
  $("state-filter").addEventListener("change", (e) => filterServers(e.target.value, st.prefixFilter));
  let typing = null; // the prefix is read once the operator pauses typing
  $("prefix-filter").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      const v = e.target.value;
      // maxlength counts UTF-16 units; the API counts bytes.
      if (new TextEncoder().encode(v).length > MAX_ID_BYTES) {
        st.errors.prefix = "an id prefix is at most " + MAX_ID_BYTES + " bytes";
        render();
        return;
      }
      delete st.errors.prefix;
      filterServers(st.stateFilter, v);
      render();
    }, 250);
  });
  $("rprev").addEventListener("click", () => { st.roomPage = Math.max(0, st.roomPage - 1); renderRooms(); });
  $("rnext").addEventListener("click", () => { st.roomPage++; renderRooms(); });
}

// For tests and curious operators: the last data the page rendered.
window.switchyardDashboard = st;

// Servers (for the totals and regions), allocations, intents, placed
// rooms and the policy follow this agent's change stream
// (GET /v1/watch as Server-Sent Events): a full copy first, then every
// change, applied to a local mirror that is shown at each "synced" mark.
// The browser resumes a dropped stream itself (Last-Event-ID); when the
// agent no longer remembers that index (410) or ends the stream, a fresh
// one starts from a full copy.
function startWatch() {
  const empty = () => ({ servers: new Map(), allocs: new Map(), intents: new Map(), rooms: new Map(), policy: null });
  let live = empty();
  let pending = null; // the copy being received after a reset
  let since = null;
  const open = () => {
    const es = new EventSource("/v1/watch?kinds=servers,allocations,intents,policy,rooms" + (since == null ? "" : "&since=" + since));
    const target = () => pending || live;
    const upsert = (field, key) => (e) => {
      const ev = JSON.parse(e.data);
      const m = target()[field];
      if (ev.op === "delete") m.delete(ev.id); else m.set(ev.id, ev[key]);
    };
    es.addEventListener("reset", () => { pending = empty(); });
    es.addEventListener("server", upsert("servers", "server"));
    es.addEventListener("allocation", upsert("allocs", "allocation"));
    es.addEventListener("intent", upsert("intents", "intent"));
    es.addEventListener("room", upsert("rooms", "room"));
    es.addEventListener("policy", (e) => { target().policy = JSON.parse(e.data).policy; });
    es.addEventListener("synced", (e) => {
      if (pending) { live = pending; pending = null; }
      since = JSON.parse(e.data).index;
      st.watchIndex = since;
      st.servers = [...live.servers.values()];
      st.allocs = [...live.allocs.values()].filter((a) => a.state === "active");
      st.intents = [...live.intents.values()];
      st.placed = live.rooms;
      if (live.policy) st.policy = live.policy;
      delete st.errors.watch;
      render();
    });
    es.addEventListener("error", (e) => {
      if (e.data) { // the agent ended the stream (slow_consumer, shutdown): resume
        const ev = JSON.parse(e.data);
        st.errors.watch = "watch: " + ev.code;
        es.close();
        pending = null;
        setTimeout(open, 500);
        return;
      }
      if (es.readyState === EventSource.CLOSED) { // refused, e.g. 410 compacted: start over
        st.errors.watch = "watch: stream refused; starting over";
        since = null;
        pending = null;
        setTimeout(open, 2000);
      }
      render();
    });
  };
  open();
}

wire();
poll("overview", 1000, pollOverview);
poll("servers", 2000, pollServerPage);
if (typeof EventSource === "function") {
  startWatch();
} else {
  poll("server totals", 5000, pollServerTotals);
  poll("allocations", 3000, pollAllocs);
  poll("policy", 3000, pollPolicy);
}

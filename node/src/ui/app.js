// Locker dashboard. Plain JS, no framework, same-origin requests only
// (relative URLs: the page works from whichever node served it).
//
// State: the tables are this node's replica. They are loaded once
// (stale reads of the local replica, which answer without a leader too),
// then kept current by the watch stream (GET v1/watch, SSE), resumed with
// Last-Event-ID after a drop. Without a stream the page polls. The cluster
// view is polled (it is not in the log).
"use strict";

// The SSE event names of GET v1/watch (EventSource needs each by name).
const KINDS = ["start", "acquired", "reacquired", "extended", "released", "expired",
  "freed", "taken_over", "process_registered", "process_kept_alive", "process_ended",
  "process_expired", "deadlines_shifted", "closed"];
// Too frequent to list (every keep-alive); applied all the same.
const QUIET = new Set(["process_kept_alive", "start"]);
const CLUSTER_EVERY_MS = 2000;
const PROCS_EVERY_MS = 2000;
const POLL_EVERY_MS = 2000;
const RESYNC_EVERY_MS = 30000;
const LIST_LIMIT = 1000;
const MAX_EVENTS = 200;
const TOKEN_KEY = "locker.token";

const $ = (id) => document.getElementById(id);

const st = {
  prefix: "",
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  locks: new Map(),      // key -> lock record
  gone: new Map(),       // key -> time it left (rows fade before removal)
  procs: new Map(),      // process hash -> process entry
  nodes: null,           // GET v1/cluster/nodes answer
  own: null,             // this node's ClusterAnswer
  offsets: [],           // recent (log time - browser time) samples
  lastId: null,          // last watch event id seen
  stream: null,          // the stream's start event (node, applied index)
  from: null,            // the index the tables were read at (the stream starts there)
  mode: "connecting",    // live | polling | reconnecting | offline | connecting
  es: null,              // EventSource
  fetchWatch: null,      // AbortController of the fetch-based stream
  backoff: 1000,
  retryTimer: null,
  pollTimer: null,
  nodeDown: false,
  events: [],
  dirty: true,
  generation: 0,         // bumps on prefix/token change: late answers are dropped
};

// ---------- HTTP ----------

function headers(extra) {
  const h = Object.assign({ Accept: "application/json" }, extra || {});
  if (st.token) h.Authorization = "Bearer " + st.token;
  return h;
}

async function api(path, timeoutMs) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs || 5000);
  try {
    const r = await fetch(path, { headers: headers(), signal: ctrl.signal, cache: "no-store" });
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    return { status: r.status, ok: r.ok, body };
  } catch (e) {
    return { status: 0, ok: false, body: null, error: String(e) };
  } finally {
    clearTimeout(timer);
  }
}

function errText(res) {
  if (res.status === 0) return "no answer (" + (res.error || "network error") + ")";
  const e = res.body && res.body.error;
  return "HTTP " + res.status + (e ? " " + e.code + ": " + e.message : "");
}

function authProblem(res) {
  if (res.status !== 401 && res.status !== 403) return false;
  show("banner-auth", true);
  $("auth-detail").textContent = res.status === 401
    ? "This node requires a token: use the Token button (top right)."
    : "The token may not read this: " + errText(res);
  return true;
}

// ---------- time ----------

// Lease times are the cluster's log time. The browser's clock may differ,
// so countdowns use the log time the node reports, carried forward by the
// browser's clock. Log time lags the leader's clock a little when idle, so
// the largest recent sample is the best one.
// Without a leader log time stands still, and so do leases (a new leader
// adds the time without one to every deadline): countdowns pause.
function sampleLogTime(logMs) {
  if (!Number.isFinite(logMs)) return;
  st.lastLog = Math.max(st.lastLog || 0, logMs);
  st.offsets.push(logMs - Date.now());
  if (st.offsets.length > 8) st.offsets.shift();
}
function logNow() {
  if (st.own && st.own.leader_id == null && st.lastLog) return st.lastLog;
  const off = st.offsets.length ? Math.max(...st.offsets) : 0;
  return Date.now() + off;
}

function fmtDur(ms) {
  if (ms <= 0) return "0s";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + "s";
  const m = Math.floor(s / 60), ss = Math.floor(s % 60);
  if (m < 60) return m + "m " + String(ss).padStart(2, "0") + "s";
  const h = Math.floor(m / 60), mm = m % 60;
  if (h < 48) return h + "h " + String(mm).padStart(2, "0") + "m";
  return Math.floor(h / 24) + "d " + (h % 24) + "h";
}
function fmtClock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// ---------- cluster ----------

async function pollCluster() {
  const gen = st.generation;
  const res = await api("v1/cluster/nodes", 4000);
  if (gen !== st.generation) return;
  if (res.status === 0) { nodeLost(res); return; }
  if (authProblem(res)) return;
  if (!res.ok || !res.body) return;
  if (st.nodeDown) nodeBack();
  st.nodes = res.body;
  const me = res.body.nodes.find((n) => n.id === res.body.node_id);
  st.own = me ? me.cluster : null;
  st.dirty = true;
}

function leaderCommitted() {
  let c = null;
  for (const n of (st.nodes ? st.nodes.nodes : [])) {
    const v = n.cluster;
    if (v && v.committed_index != null && (c == null || v.committed_index > c)) c = v.committed_index;
  }
  return c;
}

function nodeHealth(n, committed) {
  if (!n.reachable || !n.cluster) return ["bad", "down"];
  const v = n.cluster;
  if (v.state === "Shutdown") return ["bad", "stopping"];
  if (v.leader_id == null) return ["warn", "no leader"];
  const lag = committed != null && v.last_applied_index != null ? committed - v.last_applied_index : null;
  if (lag != null && lag > 100) return ["warn", "lagging"];
  return ["ok", "healthy"];
}

function renderCluster() {
  const own = st.own;
  const body = $("members").tBodies[0];
  const nodes = st.nodes ? st.nodes.nodes : [];
  const committed = leaderCommitted();
  const leaderId = own ? own.leader_id : null;
  const rows = nodes.map((n) => {
    const tr = rowFor(body, "id", String(n.id));
    const v = n.cluster;
    const [cls, word] = nodeHealth(n, committed);
    const lag = v && committed != null && v.last_applied_index != null
      ? Math.max(0, committed - v.last_applied_index) : null;
    const member = own ? own.members.find((m) => m.id === n.id) : null;
    const role = v ? v.state : "–";
    setCells(tr, [
      { text: "node " + n.id, tag: n.id === st.nodes.node_id ? "this node" : null },
      { text: word, dot: cls, cls: "health", title: n.error || "" },
      { text: n.id === leaderId ? "Leader" : (member && !member.voter ? "Learner" : role),
        cls: "role", pill: n.id === leaderId },
      { text: n.client_addr || "(not recorded yet)", cls: "mono" },
      { text: member ? member.peer_addr : "", cls: "mono" },
      { text: v ? v.term : "–", cls: "num" },
      { text: v && v.committed_index != null ? v.committed_index : "–", cls: "num" },
      { text: v && v.last_applied_index != null ? v.last_applied_index : "–", cls: "num" },
      { text: lag == null ? "–" : String(lag), cls: "num " + (lag > 100 ? "warn" : "") },
    ]);
    return tr;
  });
  placeRows(body, rows);

  const up = nodes.filter((n) => n.reachable).length;
  $("c-leader").textContent = leaderId != null ? "node " + leaderId : "none";
  $("c-leader").className = "value" + (leaderId == null && own ? " bad" : "");
  $("c-term").textContent = own ? own.term : "–";
  $("c-commit").textContent = committed != null ? committed : "–";
  $("c-applied").textContent = own && own.last_applied_index != null ? own.last_applied_index : "–";
  $("c-up").textContent = nodes.length ? up + " / " + nodes.length : "–";
  $("c-up").className = "value" + (nodes.length && up * 2 <= nodes.length ? " bad" : "");
  if (own) {
    const here = own.members.find((m) => m.id === own.node_id);
    $("served").textContent = "node " + own.node_id + (here && here.client_addr ? " · " + here.client_addr : "") + " · " + own.state;
    document.title = "Locker · node " + own.node_id + (leaderId == null ? " · no leader" : "");
  }
  const noLeader = own && leaderId == null;
  show("banner-noleader", !!noLeader);
  if (noLeader) {
    $("noleader-detail").textContent = "Node " + own.node_id + " (" + own.state + ", term " + own.term +
      ") knows of no leader. Writes and linearizable reads answer 503 until one is elected; the tables show this node's replica as of index " +
      (own.last_applied_index != null ? own.last_applied_index : 0) + ". Countdowns are paused: a new leader adds the time without one to every lease.";
  }
}

// ---------- locks and processes ----------

function listUrl(what, prefix) {
  return "v1/" + what + "?stale=true&limit=" + LIST_LIMIT + (prefix ? "&prefix=" + encodeURIComponent(prefix) : "");
}

async function loadLocks() {
  const gen = st.generation;
  const res = await api(listUrl("locks", st.prefix));
  if (gen !== st.generation) return false;
  if (authProblem(res) || !res.ok || !res.body) return false;
  show("banner-auth", false);
  const next = new Map(res.body.locks.map((l) => [l.key, l]));
  for (const k of st.locks.keys()) if (!next.has(k)) st.gone.set(k, Date.now());
  for (const k of next.keys()) st.gone.delete(k);
  st.locks = next;
  $("locks-note").textContent = res.body.locks.length >= LIST_LIMIT ? "showing the first " + LIST_LIMIT : "";
  st.dirty = true;
  return true;
}

async function loadProcs() {
  const gen = st.generation;
  const res = await api(listUrl("processes", ""));
  if (gen !== st.generation || !res.ok || !res.body) return;
  sampleLogTime(res.body.at);
  st.procs = new Map(res.body.processes.map((p) => [p.process_hash, p]));
  st.dirty = true;
}

// The lock's own TTL; a process-bound lock also ends with its process,
// whose time to live is in the processes table.
function lockDeadline(l) {
  return l.expires_at;
}

function shortProcess(h) {
  // {hostname}/{pid}.{nanoseconds} -> hostname/pid
  const m = /^(.*\/\d+)\.\d+$/.exec(h || "");
  return m ? m[1] : (h || "");
}

function renderLocks() {
  const body = $("locks").tBodies[0];
  const now = Date.now();
  for (const [k, t] of st.gone) if (now - t > 1500) st.gone.delete(k);
  const keys = [...new Set([...st.locks.keys(), ...st.gone.keys()])].sort();
  const rows = keys.map((k) => {
    const tr = rowFor(body, "key", k);
    const l = st.locks.get(k);
    tr.classList.toggle("gone", !l);
    if (!l) return tr;
    const sig = l.owner_hash + "|" + l.fencing_token + "|" + l.expires_at;
    if (tr.dataset.sig !== sig) {
      if (tr.dataset.sig) flash(tr);
      tr.dataset.sig = sig;
      tr.dataset.deadline = String(lockDeadline(l));
      tr.dataset.ttl = String(l.ttl_ms);
      tr.dataset.since = String(l.acquired_at);
      setCells(tr, [
        { text: l.key, cls: "mono key", title: l.key },
        { text: l.owner_hash, cls: "mono holder", title: l.owner_hash + (l.trace ? "\ntrace: " + l.trace : "") },
        { text: l.process_hash ? shortProcess(l.process_hash) : "— (ttl only)", cls: "mono process" + (l.process_hash ? "" : " muted"), title: l.process_hash || "no process: lives by its ttl alone" },
        { text: String(l.fencing_token), cls: "num token" },
        { countdown: true },
        { text: fmtDur(l.ttl_ms), cls: "num" },
        { text: "", cls: "num held" },
      ]);
    }
    tr.dataset.deadline = String(lockDeadline(l));
    return tr;
  });
  placeRows(body, rows);
  $("locks-empty").hidden = keys.length > 0;
  $("c-locks").textContent = st.locks.size;
}

function renderProcs() {
  const body = $("procs").tBodies[0];
  const held = new Map();
  for (const l of st.locks.values()) if (l.process_hash) held.set(l.process_hash, (held.get(l.process_hash) || 0) + 1);
  const rows = [...st.procs.keys()].sort().map((h) => {
    const p = st.procs.get(h);
    const tr = rowFor(body, "proc", h);
    const info = p.info == null ? "" : JSON.stringify(p.info);
    if (tr.dataset.sig !== h + "|" + p.since) {
      tr.dataset.sig = h + "|" + p.since;
      setCells(tr, [
        { text: h, cls: "mono", title: h },
        { text: "", cls: "num locks" },
        { countdown: true },
        { text: fmtDur(p.ttl_ms), cls: "num ttl" },
        { text: "", cls: "num held" },
        { text: "", cls: "mono info" },
      ]);
    }
    tr.dataset.deadline = String(p.alive_until);
    tr.dataset.ttl = String(p.ttl_ms);
    tr.dataset.since = String(p.since);
    tr.querySelector(".locks").textContent = held.get(h) || 0;
    const inf = tr.querySelector(".info");
    if (inf.textContent !== info) { inf.textContent = info; inf.title = info; }
    return tr;
  });
  placeRows(body, rows);
  $("procs-empty").hidden = rows.length > 0;
  $("c-procs").textContent = st.procs.size;
}

// Countdowns: only text and a transform change, every frame-ish.
function tick() {
  const now = logNow();
  for (const tr of document.querySelectorAll("tr[data-deadline]")) {
    const left = Number(tr.dataset.deadline) - now;
    const ttl = Number(tr.dataset.ttl) || 1;
    const cell = tr.querySelector(".left");
    if (!cell) continue;
    const t = cell.querySelector(".t");
    const txt = left > 0 ? fmtDur(left) : "expiring";
    if (t.textContent !== txt) t.textContent = txt;
    const frac = Math.max(0, Math.min(1, left / ttl));
    cell.querySelector("i").style.transform = "scaleX(" + frac.toFixed(4) + ")";
    cell.classList.toggle("low", frac < 0.15);
    const held = tr.querySelector(".held");
    if (held) { const h = fmtDur(now - Number(tr.dataset.since)); if (held.textContent !== h) held.textContent = h; }
  }
}

// ---------- the watch stream ----------

function watchUrl(since) {
  const q = [];
  if (st.prefix) q.push("prefix=" + encodeURIComponent(st.prefix));
  if (since != null) q.push("since=" + since);
  return "v1/watch" + (q.length ? "?" + q.join("&") : "");
}

// Ids are "<index>.<n>" (the n-th event of an entry) or "<index>" (the
// whole entry, after all its events): compare as pairs.
function idKey(id) {
  const [a, b] = String(id).split(".");
  return [Number(a) || 0, b === undefined ? Infinity : Number(b)];
}
function newer(id, than) {
  if (than == null) return true;
  const [a, b] = idKey(id), [c, d] = idKey(than);
  return a > c || (a === c && b > d);
}

function onEvent(kind, id, raw) {
  let data;
  try { data = JSON.parse(raw); } catch (_) { return; }
  if (kind === "start") { st.stream = data; if (id) st.lastId = id; st.dirty = true; return; }
  if (id && !newer(id, st.lastId)) return; // a replay after a resume
  if (id) st.lastId = id;
  if (kind === "message" && data.kind) kind = data.kind;
  if (data.time_ms) sampleLogTime(data.time_ms);
  if (kind === "closed") { addEvent(kind, id, data); restart("the node closed the stream: " + (data.reason || "")); return; }
  if (kind === "deadlines_shifted") {
    loadLocks(); loadProcs();
  } else if (kind.startsWith("process_")) {
    if (data.process) st.procs.set(data.process.process_hash, data.process);
    else if (data.process_hash) st.procs.delete(data.process_hash);
  }
  if (data.key != null && data.key.startsWith(st.prefix)) {
    if (data.lock) { st.locks.set(data.key, data.lock); st.gone.delete(data.key); }
    else if (st.locks.delete(data.key)) st.gone.set(data.key, Date.now());
  }
  if (!QUIET.has(kind)) addEvent(kind, id, data);
  st.dirty = true;
}

function addEvent(kind, id, d) {
  st.events.unshift({ kind, id: id || (d.index != null ? String(d.index) : ""), d });
  if (st.events.length > MAX_EVENTS) st.events.length = MAX_EVENTS;
  const body = $("events").tBodies[0];
  const tr = document.createElement("tr");
  const l = d.lock;
  const detail = [];
  if (l) detail.push("token " + l.fencing_token, l.owner_hash);
  else if (d.previous) detail.push("was token " + d.previous.fencing_token, d.previous.owner_hash);
  if (d.reason) detail.push("reason: " + d.reason);
  if (d.cause) detail.push("by " + d.cause);
  if (d.gap_ms != null) detail.push("deadlines moved " + fmtDur(d.gap_ms));
  if (d.keys && d.keys.length) detail.push("locks: " + d.keys.join(", "));
  setCells(tr, [
    { text: d.time_ms ? fmtClock(d.time_ms) : "", cls: "mono" },
    { text: id || "", cls: "num mono" },
    { text: kind.replaceAll("_", " "), kindTag: kind },
    { text: d.key != null ? d.key : (d.process_hash || ""), cls: "mono", title: d.key || d.process_hash || "" },
    { text: detail.join(" · "), cls: "mono muted", title: detail.join("\n") },
  ]);
  body.insertBefore(tr, body.firstChild);
  while (body.rows.length > MAX_EVENTS) body.deleteRow(-1);
  $("events-empty").hidden = true;
}

function stopWatch() {
  if (st.es) { st.es.close(); st.es = null; }
  if (st.fetchWatch) { st.fetchWatch.abort(); st.fetchWatch = null; }
  clearTimeout(st.retryTimer);
  clearInterval(st.pollTimer);
  st.pollTimer = null;
}

// Follows the stream from the last event seen, or from where the tables
// were read. A new EventSource sends no Last-Event-ID on its first request
// (only on its own reconnects), so the position also goes in `since`;
// events seen already are skipped by id.
function startWatch() {
  stopWatch();
  const url = watchUrl(st.lastId != null ? st.lastId : st.from);
  // EventSource cannot send a header: with a token, read the stream with fetch.
  if (st.token || !window.EventSource) { fetchWatch(url); return; }
  const es = new EventSource(url);
  st.es = es;
  es.onopen = () => { st.backoff = 1000; setMode("live"); };
  for (const k of KINDS) es.addEventListener(k, (e) => onEvent(k, e.lastEventId, e.data));
  es.onmessage = (e) => onEvent("message", e.lastEventId, e.data);
  es.onerror = () => {
    if (st.es !== es) return;
    if (es.readyState === EventSource.CONNECTING) { setMode("reconnecting"); return; } // resumes with Last-Event-ID itself
    es.close();
    st.es = null;
    probeWatch(url); // closed for good: find out why
  };
}

async function probeWatch(url) {
  const ctrl = new AbortController();
  let status = 0;
  try {
    const r = await fetch(url, { headers: headers({ Accept: "text/event-stream" }), signal: ctrl.signal, cache: "no-store" });
    status = r.status;
  } catch (_) { status = 0; }
  ctrl.abort();
  watchFailed(status);
}

// Reads the SSE stream with fetch (needed to send Authorization).
async function fetchWatch(url) {
  const ctrl = new AbortController();
  st.fetchWatch = ctrl;
  const h = headers({ Accept: "text/event-stream" });
  if (st.lastId != null) h["Last-Event-ID"] = st.lastId;
  let r;
  try { r = await fetch(url, { headers: h, signal: ctrl.signal, cache: "no-store" }); } catch (_) {
    if (st.fetchWatch === ctrl) watchFailed(0);
    return;
  }
  if (!r.ok || !r.body) { watchFailed(r.status); return; }
  st.backoff = 1000;
  setMode("live");
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "", ev = { event: "", data: [], id: null };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      const lines = buf.split(/\r\n|\r|\n/);
      buf = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (ev.data.length) onEvent(ev.event || "message", ev.id, ev.data.join("\n"));
          ev = { event: "", data: [], id: null };
          continue;
        }
        if (line.startsWith(":")) continue; // heartbeat comment
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        let val = i < 0 ? "" : line.slice(i + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "data") ev.data.push(val);
        else if (field === "event") ev.event = val;
        else if (field === "id") ev.id = val;
      }
    }
  } catch (_) { /* dropped */ }
  if (st.fetchWatch === ctrl) watchFailed(200); // ended: resume
}

function watchFailed(status) {
  if (status === 401 || status === 403) { authProblem({ status }); setMode("offline"); return; }
  if (status === 404 || status === 405 || status === 501) { startPolling("this node has no watch stream"); return; }
  if (status === 410) { restart("the stream's start was compacted away"); return; }
  // The node is down or without a leader for a moment: try again, backing off.
  setMode(status === 0 ? "offline" : "reconnecting");
  clearTimeout(st.retryTimer);
  st.retryTimer = setTimeout(startWatch, st.backoff);
  st.backoff = Math.min(st.backoff * 2, 15000);
}

function startPolling(why) {
  stopWatch();
  setMode("polling");
  $("poll-detail").textContent = "Polling every " + POLL_EVERY_MS / 1000 + " s (" + why + ").";
  st.pollTimer = setInterval(loadLocks, POLL_EVERY_MS);
  // Try the stream again now and then.
  st.retryTimer = setTimeout(() => restart("retrying the stream"), 60000);
}

// Reload the tables, then follow the stream from the index they were read at.
async function restart(_why) {
  const gen = ++st.generation;
  stopWatch();
  st.lastId = null;
  const c = await api("v1/cluster", 4000);
  if (gen !== st.generation) return;
  if (!c.ok || !c.body) {
    if (c.status === 0) nodeLost(c);
    authProblem(c);
    st.retryTimer = setTimeout(() => restart("retry"), st.backoff);
    st.backoff = Math.min(st.backoff * 2, 15000);
    return;
  }
  st.from = c.body.last_applied_index != null ? c.body.last_applied_index : 0;
  await Promise.all([loadLocks(), loadProcs()]);
  if (gen !== st.generation) return;
  startWatch();
}

// ---------- connection state ----------

function setMode(m) {
  if (st.nodeDown && m === "reconnecting") m = "offline";
  st.mode = m;
  const pill = $("conn");
  pill.dataset.state = m;
  pill.textContent = { live: "live", polling: "polling", reconnecting: "reconnecting", offline: "offline", connecting: "connecting" }[m] || m;
  show("banner-poll", m === "polling");
}

function nodeLost(res) {
  st.nodeDown = true;
  setMode("offline");
  show("banner-lost", true);
  $("lost-detail").textContent = "The node that served this page does not answer (" + errText(res) +
    "). Retrying every " + CLUSTER_EVERY_MS / 1000 + " s; the tables show the last state seen. Another node serves the same dashboard at its own /ui.";
  for (const n of (st.nodes ? st.nodes.nodes : [])) if (st.nodes && n.id === st.nodes.node_id) { n.reachable = false; n.cluster = null; n.error = "this page's node"; }
  st.dirty = true;
}

function nodeBack() {
  st.nodeDown = false;
  show("banner-lost", false);
  st.backoff = 1000;
  if (st.mode === "offline") restart("the node is back");
}

// ---------- DOM helpers ----------

function show(id, on) { $(id).hidden = !on; }

function rowFor(body, attr, value) {
  for (const tr of body.rows) if (tr.dataset[attr] === value) return tr;
  const tr = document.createElement("tr");
  tr.dataset[attr] = value;
  return tr;
}

function placeRows(body, rows) {
  const keep = new Set(rows);
  for (const tr of [...body.rows]) if (!keep.has(tr)) tr.remove();
  rows.forEach((tr, i) => { if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null); });
}

function setCells(tr, cells) {
  while (tr.cells.length < cells.length) tr.insertCell(-1);
  cells.forEach((c, i) => {
    const td = tr.cells[i];
    if (c.countdown) {
      if (!td.querySelector(".left")) {
        td.className = "left-cell";
        td.replaceChildren();
        const wrap = document.createElement("div");
        wrap.className = "left";
        const t = document.createElement("span");
        t.className = "t";
        const bar = document.createElement("span");
        bar.className = "bar";
        bar.appendChild(document.createElement("i"));
        wrap.append(t, bar);
        td.appendChild(wrap);
      }
      return;
    }
    td.className = c.cls || "";
    td.title = c.title || "";
    td.replaceChildren();
    if (c.kindTag) {
      const s = document.createElement("span");
      s.className = "tag kind-" + c.kindTag;
      s.textContent = c.text;
      td.appendChild(s);
    } else if (c.dot) {
      const s = document.createElement("span");
      s.className = "dot " + c.dot;
      s.textContent = c.text;
      td.appendChild(s);
    } else if (c.pill) {
      const s = document.createElement("span");
      s.className = "tag leader";
      s.textContent = c.text;
      td.appendChild(s);
    } else {
      td.append(String(c.text));
    }
    if (c.tag) {
      const s = document.createElement("span");
      s.className = "tag here";
      s.textContent = c.tag;
      td.appendChild(s);
    }
  });
}

function flash(tr) {
  tr.classList.remove("flash");
  void tr.offsetWidth; // restart the animation
  tr.classList.add("flash");
}

function renderFoot() {
  const own = st.own;
  $("foot").textContent = own
    ? "Tables show node " + own.node_id + "'s replica (applied index " + (own.last_applied_index ?? 0) + ")" +
      (st.stream && st.mode === "live" ? ", live from its watch stream since index " + st.stream.applied_index : "") +
      ". Times are the cluster's log time (" + fmtClock(logNow()) + "), not this browser's clock."
    : "";
}

function frame() {
  if (st.dirty) {
    st.dirty = false;
    renderCluster();
    renderLocks();
    renderProcs();
    renderFoot();
  }
  tick();
}

// ---------- controls ----------

function readPrefixFromHash() {
  const m = /(?:^#|&)prefix=([^&]*)/.exec(location.hash);
  try { return m ? decodeURIComponent(m[1]) : ""; } catch (_) { return ""; }
}

function setPrefix(p) {
  if (p === st.prefix) return;
  st.prefix = p;
  history.replaceState(null, "", p ? "#prefix=" + encodeURIComponent(p) : location.pathname + location.search);
  st.locks = new Map();
  st.gone = new Map();
  st.dirty = true;
  restart("new prefix");
}

function wireControls() {
  const input = $("prefix");
  input.value = st.prefix;
  let t = null;
  input.addEventListener("input", () => { clearTimeout(t); t = setTimeout(() => setPrefix(input.value), 300); });
  $("prefix-form").addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(t); setPrefix(input.value); });
  $("retry-now").addEventListener("click", () => { pollCluster(); restart("retry now"); });
  const btn = $("token-btn"), dlg = $("token-dialog");
  const label = () => { btn.textContent = st.token ? "Token ✓" : "Token"; btn.dataset.on = String(!!st.token); };
  label();
  btn.addEventListener("click", () => { $("token-input").value = ""; dlg.showModal(); });
  dlg.addEventListener("close", () => {
    if (dlg.returnValue === "save" && $("token-input").value.trim()) {
      st.token = $("token-input").value.trim();
      sessionStorage.setItem(TOKEN_KEY, st.token);
    } else if (dlg.returnValue === "clear") {
      st.token = "";
      sessionStorage.removeItem(TOKEN_KEY);
    } else return;
    label();
    show("banner-auth", false);
    pollCluster();
    restart("new token");
  });
  window.addEventListener("hashchange", () => { const p = readPrefixFromHash(); input.value = p; setPrefix(p); });
}

function start() {
  st.prefix = readPrefixFromHash();
  wireControls();
  setMode("connecting");
  pollCluster();
  restart("start");
  setInterval(pollCluster, CLUSTER_EVERY_MS);
  setInterval(loadProcs, PROCS_EVERY_MS);
  // A full reload now and then keeps the page honest whatever it missed.
  setInterval(() => { if (st.mode === "live") loadLocks(); }, RESYNC_EVERY_MS);
  setInterval(frame, 250);
  frame();
}

start();

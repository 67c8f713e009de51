// The Samos operator dashboard: one page, routed on its URL, fed by the JSON API and the live
// stream (/api/v1/live, server-sent events). Every string from the server is set as text,
// never parsed as HTML. Live views keep bounded buffers and redraw at most twice a second.
"use strict";

const MAX_LIVE_POINTS = 2000; // per series on a node's charts
const MAX_LIVE_ROWS = 500; // rows a live table keeps
const RATE_WINDOW = 300; // seconds of rates on the overview chart

let session = { role: null, csrf: null, name: null };
// What the page spends on live updates (read by the browser tests): milliseconds in event
// handlers and the renders they cause, events handled, and the browser's long tasks (> 50 ms).
const perf = { busyMs: 0, events: 0, longTasks: 0, longTasksMs: 0, since: performance.now() };
window.__samosPerf = perf;
if (window.PerformanceObserver && PerformanceObserver.supportedEntryTypes.includes("longtask")) {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) { perf.longTasks++; perf.longTasksMs += e.duration; }
  }).observe({ type: "longtask" });
}

function timed(f) {
  return (...args) => {
    const t0 = performance.now();
    try { return f(...args); } finally { perf.busyMs += performance.now() - t0; }
  };
}
let page = null; // the current page: { stats, event, refused, readings, lagged, stop }
let stream = null;
let streamNode = null;

// ---------- small helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const main = () => document.getElementById("main");
const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const num = (v) => (v === null || v === undefined ? "–" : fmt.format(v));
const time = (ms) => (ms ? new Date(ms).toLocaleString() : "–");

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function duration(s) {
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${m}m` : `${m}m ${s % 60}s`;
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", headers: {}, ...options };
  if (init.body !== undefined) {
    init.method = init.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(init.body);
  }
  if (init.method === "POST" && session.csrf) init.headers["X-Samos-CSRF"] = session.csrf;
  const r = await fetch(path, init);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error(body.error || `${r.status} ${r.statusText}`);
    e.status = r.status;
    throw e;
  }
  return body;
}

function badge(cls, text) {
  return h("span", { class: `badge ${cls}` }, text);
}

function table(columns, rows, rowFn) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([label, cls]) => h("th", { class: cls }, label)))),
    h("tbody", {}, rows.map(rowFn)));
}

function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, e.message || String(e));
}

function isAdmin() {
  return session.role === "admin";
}

// ---------- routing ----------

const routes = [
  [/^\/$/, overviewPage],
  [/^\/nodes$/, nodesPage],
  [/^\/nodes\/([^/]+)\/([^/]+)$/, nodePage],
  [/^\/alerts$/, alertsPage],
  [/^\/quarantine$/, quarantinePage],
  [/^\/sql$/, sqlPage],
  [/^\/patterns$/, patternsPage],
];

function go(url) {
  history.pushState(null, "", url);
  route();
}

function route() {
  if (page && page.stop) page.stop();
  page = null;
  const path = location.pathname;
  for (const a of document.querySelectorAll("#nav a")) {
    const href = a.getAttribute("href");
    a.classList.toggle("here", href === "/" ? path === "/" : path.startsWith(href));
  }
  if (!session.role) {
    loginPage();
    return;
  }
  for (const [re, render] of routes) {
    const m = path.match(re);
    if (m) {
      page = render(...m.slice(1).map(decodeURIComponent)) || {};
      connectStream(page.watch || null);
      return;
    }
  }
  main().replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "/", "data-link": true }, "Overview")));
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-link]");
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", route);

// ---------- the live stream ----------

function connectStream(node) {
  if (stream && streamNode === node) return;
  if (stream) stream.close();
  streamNode = node;
  stream = new EventSource(node ? `/api/v1/live?${node}` : "/api/v1/live");
  const dot = document.getElementById("live");
  stream.onopen = () => dot.classList.add("on");
  stream.onerror = () => dot.classList.remove("on");
  for (const kind of ["stats", "event", "refused", "readings", "lagged", "mining"]) {
    stream.addEventListener(kind, timed((m) => {
      perf.events++;
      if (page && page[kind]) page[kind](JSON.parse(m.data));
    }));
  }
}

// ---------- login ----------

function loginPage() {
  const token = h("input", { type: "password", placeholder: "token", autocomplete: "current-password", id: "login-token" });
  const name = h("input", { type: "text", placeholder: "your name (recorded with your actions)", id: "login-name" });
  const msg = h("p", { class: "error" });
  const form = h("form", { class: "login panel" },
    h("h1", {}, "Log in"),
    h("p", { class: "muted" }, "Give the viewer or admin token of this server (api.token, api.admin_token)."),
    name, token, h("button", { class: "primary", type: "submit", id: "login-submit" }, "Log in"), msg);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      session = await api("/api/v1/login", { body: { token: token.value, name: name.value } });
      showWho();
      route();
    } catch (err) {
      msg.textContent = err.message;
    }
  });
  main().replaceChildren(form);
}

function showWho() {
  document.getElementById("who").textContent = session.role ? `${session.name} · ${session.role}` : "";
  document.getElementById("logout").hidden = !session.role || !session.csrf || session.name === "local operator";
}

// ---------- overview ----------

function overviewPage() {
  const cards = h("div", { class: "cards" });
  const chartBox = h("div", { class: "chart" });
  const reasons = h("div");
  main().replaceChildren(h("h1", {}, "Overview"), cards,
    h("div", { class: "panel" }, h("h2", {}, "Rates (per second, last 5 minutes)"), chartBox),
    h("div", { class: "panel" }, h("h2", {}, "Refusals by reason"), reasons));
  const data = [[], [], []];
  let chart = null;
  const card = (label, value, id) => h("div", { class: "card", id }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
  function render(s) {
    cards.replaceChildren(
      card("Uptime", duration(s.uptime_s), "card-uptime"),
      card("Connections", num(s.connections), "card-connections"),
      card("Nodes active", `${s.nodes.active} / ${s.nodes.total}`, "card-active"),
      card("Nodes blocked", num(s.nodes.blocked), "card-blocked"),
      card("Readings stored", num(s.readings_committed), "card-readings"),
      card("Readings/s", num(s.readings_per_s), "card-rate"),
      card("Refusals/s", num(s.refusals_per_s), "card-refusal-rate"),
      card("Alerts", num(s.alerts_total), "card-alerts"),
      card("Parquet lag (rows)", num(s.parquet_lag_rows), "card-parquet-lag"),
      card("PostgreSQL lag (batches)", num(s.postgres_lag_batches), "card-pg-lag"),
      card("Object store lag (batches)", num(s.object_store_lag_batches), "card-lake-lag"),
      ...(s.bridges || []).map((b) => card(`Bridge ${b.name} lag (batches)`,
        h("span", { class: b.connected ? "" : "error", title: b.connected ? `${num(b.messages)} messages forwarded` : "not connected to its broker" },
          b.connected ? num(b.lag_batches) : `${num(b.lag_batches)}, down`), `card-bridge-${b.name}`)));
    const rows = Object.entries(s.refusals || {}).sort((a, b) => b[1] - a[1]);
    reasons.replaceChildren(rows.length
      ? table([["reason"], ["count", "num"]], rows, ([r, n]) => h("tr", {}, h("td", {}, r), h("td", { class: "num" }, num(n))))
      : h("p", { class: "muted" }, "No refusals."));
  }
  api("/api/v1/overview").then(render).catch((e) => cards.replaceChildren(errorBox(e)));
  return {
    stats(s) {
      render(s);
      if (s.readings_per_s === undefined) return;
      data[0].push(s.time_ms / 1000);
      data[1].push(s.readings_per_s);
      data[2].push(s.refusals_per_s);
      if (data[0].length > RATE_WINDOW) data.forEach((a) => a.shift());
      chartBox.setAttribute("data-points", data[0].length);
      if (!chart && window.uPlot) {
        chart = new uPlot({ width: chartBox.clientWidth || 600, height: 220,
          scales: { x: { time: true, range: (u, min, max) => [Math.min(min, max - RATE_WINDOW), max] } },
          series: [{}, { label: "readings/s", stroke: "#2f6fde" }, { label: "refusals/s", stroke: "#c0342b" }] }, data, chartBox);
      } else if (chart) chart.setData(data);
    },
    stop() { if (chart) chart.destroy(); },
  };
}

// ---------- nodes ----------

function locationPath(n) {
  const l = n.location || {};
  return [l.country, l.district_state, l.city, l.area_description, l.area, l.building, l.room].filter(Boolean).join(" › ") || "(no location)";
}

function nodesPage() {
  const params = new URLSearchParams(location.search);
  const search = h("input", { type: "search", placeholder: "filter: node, room, mode…", value: params.get("q") || "", id: "node-filter" });
  const body = h("div", { class: "panel" }, h("p", { class: "muted" }, "Loading…"));
  main().replaceChildren(h("h1", {}, "Nodes"), h("div", { class: "toolbar" }, search), body);
  let nodes = [];
  const render = timed(() => {
    const q = search.value.trim().toLowerCase();
    const shown = nodes.filter((n) => !q || [n.node_id, n.network, n.functional_mode, n.severity, n.assessed_severity, n.address, locationPath(n)]
      .some((f) => String(f || "").toLowerCase().includes(q)));
    const groups = new Map();
    for (const n of shown) {
      const k = locationPath(n);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(n);
    }
    const rows = [];
    for (const [place, members] of [...groups.entries()].sort()) {
      rows.push(h("tr", { class: "group" }, h("td", { colspan: 8 }, place)));
      for (const n of members) {
        rows.push(h("tr", { "data-node": n.node_id },
          h("td", {}, h("a", { href: `/nodes/${encodeURIComponent(n.network)}/${encodeURIComponent(n.node_id)}`, "data-link": true }, n.node_id)),
          h("td", {}, badge(`mode-${n.functional_mode}`, n.functional_mode)),
          h("td", {}, badge(`sev-${n.severity}`, n.severity)),
          h("td", {}, badge(`sev-${n.assessed_severity}`, n.assessed_severity)),
          h("td", {}, n.connected ? "connected" : ago(n.last_seen_ms)),
          h("td", { class: "hide-narrow" }, n.address || "–"),
          h("td", { class: "num" }, num(n.readings_accepted)),
          h("td", { class: "num" }, num(n.readings_rejected))));
      }
    }
    body.replaceChildren(
      h("p", { class: "muted", id: "node-count" }, `${shown.length} of ${nodes.length} nodes`),
      h("table", { id: "nodes" },
        h("thead", {}, h("tr", {}, ["node", "mode", "declared", "assessed", "last seen", "address", "accepted", "rejected"]
          .map((c, i) => h("th", { class: i >= 6 ? "num" : i === 5 ? "hide-narrow" : null }, c)))),
        h("tbody", {}, rows)));
  });
  let pending = null;
  async function load() {
    try {
      nodes = (await api("/api/v1/network")).nodes;
      render();
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  }
  const later = () => { if (!pending) pending = setTimeout(() => { pending = null; load(); }, 300); };
  search.addEventListener("input", () => {
    const u = new URL(location.href);
    if (search.value) u.searchParams.set("q", search.value); else u.searchParams.delete("q");
    history.replaceState(null, "", u);
    render();
  });
  load();
  let ticks = 0;
  return {
    event: later,
    stats() { if (++ticks % 5 === 0) later(); },
    lagged: later,
    stop() { clearTimeout(pending); },
  };
}

// ---------- one node ----------

function nodePage(network, nodeId) {
  const head = h("div");
  const charts = h("div", { class: "charts" });
  const events = h("div");
  const refused = h("div");
  const config = h("pre", { id: "config" });
  const push = h("div");
  main().replaceChildren(head,
    h("h2", {}, "Sensors"), charts,
    h("div", { class: "panel" }, h("h2", {}, "Events"), events),
    h("div", { class: "panel" }, h("h2", {}, "Refused readings"), refused),
    h("div", { class: "panel" }, h("h2", {}, "Configuration"), push, config));
  let editor = null;
  const series = new Map(); // sensor -> { data, chart, dirty }
  let node = null;

  async function loadNode() {
    try {
      node = await api(`/api/v1/network/${encodeURIComponent(network)}/${encodeURIComponent(nodeId)}`);
    } catch (e) {
      head.replaceChildren(h("h1", {}, nodeId), errorBox(e));
      return;
    }
    const actions = [];
    if (isAdmin()) {
      const blocked = node.functional_mode === "blocked";
      actions.push(h("button", { id: "mode-action", class: blocked ? "primary" : "danger", type: "button",
        onclick: async () => {
          try {
            await api(`/api/v1/network/${encodeURIComponent(network)}/${encodeURIComponent(nodeId)}/mode`, { body: { mode: blocked ? "active" : "blocked" } });
            loadNode();
          } catch (e) { head.append(errorBox(e)); }
        } }, blocked ? "Unblock" : "Block"));
      if (node.client_id) {
        actions.push(h("button", { id: "disconnect", class: "danger", type: "button",
          onclick: async () => {
            try {
              await api(`/api/v1/clients/${encodeURIComponent(node.client_id)}/disconnect`, { method: "POST" });
              setTimeout(loadNode, 300);
            } catch (e) { head.append(errorBox(e)); }
          } }, `Disconnect ${node.client_id}`));
      }
    }
    head.replaceChildren(
      h("h1", {}, `${node.node_id} `, badge(`mode-${node.functional_mode}`, node.functional_mode)),
      h("p", { class: "muted" }, `${node.network} · ${locationPath(node)} · declared `, badge(`sev-${node.severity}`, node.severity),
        " assessed ", badge(`sev-${node.assessed_severity}`, node.assessed_severity),
        ` · ${node.connected ? "connected" : "last seen " + ago(node.last_seen_ms)} · ${node.address || "no address"}`,
        node.blocked_by ? ` · blocked by ${node.blocked_by}` : ""),
      h("div", { class: "toolbar" }, actions));
    config.textContent = node.config ? JSON.stringify(node.config, null, 2) : (node.config_xml || "no configuration");
    if (isAdmin() && node.functional_mode === "active" && !editor) {
      // The paper's over-the-air update: checked like a join on the server, then sent.
      editor = h("textarea", { id: "config-editor", spellcheck: "false" }, node.config_xml || "");
      const status = h("span", { id: "config-status", class: "muted" });
      const send = h("button", { id: "config-send", class: "primary", type: "button", onclick: async () => {
        status.textContent = "sending…";
        try {
          await api(`/api/v1/network/${encodeURIComponent(network)}/${encodeURIComponent(nodeId)}/config`, { body: { document: editor.value } });
          status.textContent = "sent: waiting for the node to join with it";
        } catch (e) { status.textContent = e.message; }
      } }, "Send to the node");
      push.replaceChildren(h("p", { class: "muted" }, "Edit the node's configuration document and send it over the air (SET_CN_CONFIG_FILE)."),
        editor, h("div", { class: "toolbar" }, send, status));
    }
    if (!series.size) for (const s of node.sensors || []) if (s.data_type !== "string") addChart(s);
  }

  async function addChart(sensor) {
    const box = h("div", { class: "chart panel", "data-sensor": sensor.name }, h("div", { class: "muted" }, `${sensor.name} (${sensor.units})`));
    charts.append(box);
    const entry = { data: [[], []], chart: null, dirty: false };
    series.set(sensor.name, entry);
    const to = Date.now() + 1000, from = to - 3600 * 1000;
    const width = box.clientWidth || 420;
    try {
      const r = await api(`/api/v1/series?network=${encodeURIComponent(network)}&node=${encodeURIComponent(nodeId)}&sensor=${encodeURIComponent(sensor.name)}&from=${new Date(from).toISOString()}&to=${new Date(to).toISOString()}&points=${Math.max(50, Math.floor(width / 2))}`);
      // A live point may already have arrived: history goes first.
      const live = entry.data;
      entry.data = [r.points.map((p) => p[0] / 1000).concat(live[0]), r.points.map((p) => p[3]).concat(live[1])];
    } catch (e) {
      box.append(errorBox(e));
    }
    if (window.uPlot) {
      // The window is the backfilled hour, growing with live points.
      const range = (u, min, max) => [from / 1000, Math.max(max || 0, Date.now() / 1000)];
      entry.chart = new uPlot({ width, height: 200, scales: { x: { time: true, range } },
        series: [{}, { label: sensor.name, stroke: "#2f6fde", points: { show: false } }] }, entry.data, box);
    }
    box.setAttribute("data-points", entry.data[0].length);
  }

  async function loadLists() {
    try {
      const [ev, rq] = await Promise.all([
        api(`/api/v1/events?network=${encodeURIComponent(network)}&node=${encodeURIComponent(nodeId)}&limit=50`),
        api(`/api/v1/quarantine?node=${encodeURIComponent(nodeId)}&limit=50`)]);
      const last = ev.events.find((e) => e.kind.startsWith("config_"));
      const status = document.getElementById("config-status");
      if (status && last) {
        status.textContent = { config_pushed: "sent: waiting for the node to join with it",
          config_applied: "applied: the node joined with it", config_refused: "refused by the server's checks of the node's join" }[last.kind]
          + ` (${last.detail.by}, ${time(last.time_ms)})`;
        status.dataset.state = last.kind;
      }
      events.replaceChildren(ev.events.length ? table([["time"], ["kind"], ["detail"]], ev.events,
        (e) => h("tr", {}, h("td", {}, time(e.time_ms)), h("td", {}, e.kind), h("td", {}, h("pre", {}, JSON.stringify(e.detail))))) : h("p", { class: "muted" }, "No events."));
      refused.replaceChildren(rq.refused.length ? refusedTable(rq.refused) : h("p", { class: "muted" }, "No refused readings."));
    } catch (e) {
      events.replaceChildren(errorBox(e));
    }
  }

  loadNode();
  loadLists();
  const flush = setInterval(() => {
    for (const [name, s] of series) {
      if (!s.dirty) continue;
      s.dirty = false;
      if (s.chart) s.chart.setData(s.data);
      const box = charts.querySelector(`[data-sensor="${CSS.escape(name)}"]`);
      if (box) box.setAttribute("data-points", s.data[0].length);
    }
  }, 500);
  return {
    watch: new URLSearchParams({ network, node: nodeId }).toString(),
    readings(batch) {
      for (const r of batch.readings) {
        const s = series.get(r.sensor);
        if (!s || typeof r.value !== "number") continue;
        s.data[0].push(r.time_ms / 1000);
        s.data[1].push(r.value);
        if (s.data[0].length > MAX_LIVE_POINTS) { s.data[0].shift(); s.data[1].shift(); }
        s.dirty = true;
      }
    },
    event(e) { if (e.node_id === nodeId) { loadNode(); loadLists(); } },
    refused(r) { if ((r.topic || "").split("/")[1] === nodeId) loadLists(); },
    stop() { clearInterval(flush); for (const [, s] of series) if (s.chart) s.chart.destroy(); },
  };
}

function refusedTable(rows) {
  return table([["time"], ["reason"], ["client"], ["topic", "hide-narrow"], ["payload"], ["detail", "hide-narrow"]], rows,
    (r) => h("tr", {}, h("td", {}, time(r.time_ms)), h("td", {}, r.reason), h("td", {}, r.client_id),
      h("td", { class: "hide-narrow topic" }, r.topic), h("td", { class: "payload" }, h("pre", {}, r.payload)), h("td", { class: "hide-narrow" }, r.detail)));
}

// ---------- alerts ----------

function alertsPage() {
  const rulesBody = h("div", { class: "panel" }, h("p", { class: "muted" }, "Loading…"));
  const body = h("div", { class: "panel" }, h("p", { class: "muted" }, "Loading…"));
  main().replaceChildren(h("h1", {}, "Alerts"),
    h("h2", {}, "Alert rules"),
    h("p", { class: "muted" }, "Raised by the configured rules ([[alerts.rule]]): firing, acknowledged by an operator, resolved when the condition stops holding."),
    rulesBody,
    h("h2", {}, "Severity cross-check"),
    h("p", { class: "muted" }, "Raised when a node's readings are more severe than the mode it declares (the server's cross-check)."), body);
  const ackButton = (payload, where) => h("button", { type: "button", class: "ack", onclick: async (e) => {
    e.target.disabled = true;
    try {
      await api("/api/v1/alerts/ack", { body: payload });
    } catch (err) { where.prepend(errorBox(err)); }
    load();
  } }, "Acknowledge");
  async function load() {
    try {
      const { alerts, rules } = await api("/api/v1/alerts");
      rulesBody.replaceChildren(rules.length ? h("table", { id: "rule-alerts" },
        h("thead", {}, h("tr", {}, ["started", "rule", "severity", "node", "sensor", "value", "state", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, rules.map((a) => h("tr", { "data-id": a.id, "data-node": a.node_id, class: `state-${a.state}` },
          h("td", {}, time(a.started_ms)),
          h("td", { title: a.summary }, a.rule),
          h("td", {}, badge(`alert-${a.severity}`, a.severity)),
          h("td", {}, h("a", { href: `/nodes/${encodeURIComponent(a.network)}/${encodeURIComponent(a.node_id)}`, "data-link": true }, a.node_id)),
          h("td", {}, a.sensor), h("td", { class: "num" }, a.value == null ? "" : num(a.value)),
          h("td", { class: "state" }, a.state === "acknowledged" ? `acknowledged by ${a.acknowledged_by}`
            : a.state === "resolved" ? `resolved ${time(a.resolved_ms)}` : "firing"),
          h("td", {}, a.state === "firing" && isAdmin() ? ackButton({ id: a.id }, rulesBody) : ""))))) :
        h("p", { class: "muted" }, "No rule alerts."));
      body.replaceChildren(alerts.length ? h("table", { id: "alerts" },
        h("thead", {}, h("tr", {}, ["time", "node", "declared", "assessed", "sensor", "value", "acknowledged"].map((c) => h("th", {}, c)))),
        h("tbody", {}, alerts.map((a) => h("tr", { "data-node": a.node_id, class: a.acknowledged ? "acked" : "open" },
          h("td", {}, time(a.time_ms)),
          h("td", {}, h("a", { href: `/nodes/${encodeURIComponent(a.network)}/${encodeURIComponent(a.node_id)}`, "data-link": true }, a.node_id)),
          h("td", {}, badge(`sev-${a.detail.declared}`, a.detail.declared)),
          h("td", {}, badge(`sev-${a.detail.assessed}`, a.detail.assessed)),
          h("td", {}, a.detail.sensor), h("td", { class: "num" }, num(a.detail.value)),
          h("td", {}, a.acknowledged ? `${a.acknowledged.by}, ${time(a.acknowledged.time_ms)}`
            : isAdmin() ? ackButton({ network: a.network, node_id: a.node_id, alert_time_ms: a.time_ms }, body) : "open"))))) : h("p", { class: "muted" }, "No alerts."));
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  }
  load();
  return { event(e) { if (e.kind === "alert" || e.kind.startsWith("alert_")) load(); }, lagged: load };
}

// ---------- quarantine ----------

function quarantinePage() {
  const params = new URLSearchParams(location.search);
  const reason = h("input", { type: "search", placeholder: "reason", value: params.get("reason") || "" });
  const node = h("input", { type: "search", placeholder: "node", value: params.get("node") || "" });
  const body = h("div", { class: "panel", id: "quarantine" }, h("p", { class: "muted" }, "Loading…"));
  main().replaceChildren(h("h1", {}, "Quarantine"),
    h("p", { class: "muted" }, "Messages Samos refused, with the reason, as kept in rejected.jsonl. Nothing here was stored."),
    h("div", { class: "toolbar" }, reason, node), body);
  let rows = [];
  const render = () => body.replaceChildren(rows.length ? refusedTable(rows) : h("p", { class: "muted" }, "Nothing refused."));
  async function load() {
    const q = new URLSearchParams({ limit: MAX_LIVE_ROWS });
    if (reason.value) q.set("reason", reason.value);
    if (node.value) q.set("node", node.value);
    const u = new URL(location.href);
    u.search = "";
    if (reason.value) u.searchParams.set("reason", reason.value);
    if (node.value) u.searchParams.set("node", node.value);
    history.replaceState(null, "", u);
    try {
      rows = (await api(`/api/v1/quarantine?${q}`)).refused;
      render();
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  }
  reason.addEventListener("change", load);
  node.addEventListener("change", load);
  load();
  return {
    refused(r) {
      if (reason.value && r.reason !== reason.value) return;
      if (node.value && (r.topic || "").split("/")[1] !== node.value) return;
      rows.unshift(r);
      rows.length = Math.min(rows.length, MAX_LIVE_ROWS);
      render();
    },
    lagged: load,
  };
}

// ---------- SQL ----------

const RANGES = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, "30d": 2592000 };

function sqlPage() {
  const params = new URLSearchParams(location.search);
  const editor = h("textarea", { id: "sql", spellcheck: "false" },
    params.get("q") || "SELECT node_id, sensor, count(*) AS readings, avg(value) AS mean\nFROM readings\nWHERE ingest_time >= $from AND ingest_time < $to\nGROUP BY node_id, sensor\nORDER BY node_id, sensor");
  const range = h("select", { id: "range" }, Object.keys(RANGES).map((r) => h("option", { value: r, selected: (params.get("range") || "1h") === r }, `last ${r}`)));
  const csv = h("a", { id: "csv", download: "samos-query.csv" }, "CSV");
  const parquet = h("a", { id: "parquet", download: "samos-query.parquet" }, "Parquet");
  const out = h("div", { class: "panel", id: "result" }, h("p", { class: "muted" }, "$from and $to stand for the chosen range."));
  const chartBox = h("div", { class: "chart" });
  main().replaceChildren(h("h1", {}, "SQL"), editor,
    h("div", { class: "toolbar" }, h("button", { class: "primary", id: "run", type: "button", onclick: run }, "Run"), range,
      h("span", { class: "muted" }, "download:"), csv, parquet),
    out, chartBox);
  let chart = null;
  function statement() {
    const to = Date.now(), from = to - RANGES[range.value] * 1000;
    const ts = (ms) => `TIMESTAMP '${new Date(ms).toISOString()}'`;
    return editor.value.replaceAll("$from", ts(from)).replaceAll("$to", ts(to));
  }
  async function run() {
    const u = new URL(location.href);
    u.searchParams.set("q", editor.value);
    u.searchParams.set("range", range.value);
    history.replaceState(null, "", u);
    const sql = statement();
    csv.href = `/api/v1/query?format=csv&sql=${encodeURIComponent(sql)}`;
    parquet.href = `/api/v1/query?format=parquet&sql=${encodeURIComponent(sql)}`;
    out.replaceChildren(h("p", { class: "muted" }, "Running…"));
    if (chart) { chart.destroy(); chart = null; }
    try {
      const r = await api(`/api/v1/query?sql=${encodeURIComponent(sql)}`);
      const cols = r.columns.map((c) => c.name);
      out.replaceChildren(
        h("p", { class: "muted", id: "row-count" }, `${r.row_count} rows${r.truncated ? " (cut at api.max_rows: download for all)" : ""} in ${num(r.elapsed_ms)} ms`),
        table(cols.map((c) => [c]), r.rows, (row) => h("tr", {}, cols.map((c) => h("td", {}, row[c] === null || row[c] === undefined ? "" : typeof row[c] === "object" ? JSON.stringify(row[c]) : String(row[c]))))));
      // A chart when the first column is a time and others are numbers.
      const t = r.columns[0];
      const numeric = r.columns.slice(1).filter((c) => /Int|Float|Decimal/.test(c.type)).map((c) => c.name);
      if (t && /Timestamp/.test(t.type) && numeric.length && window.uPlot && r.rows.length > 1) {
        const data = [r.rows.map((row) => Date.parse(row[t.name]) / 1000), ...numeric.map((c) => r.rows.map((row) => row[c]))];
        chart = new uPlot({ width: chartBox.clientWidth || 800, height: 260, series: [{}, ...numeric.map((c) => ({ label: c, stroke: "#2f6fde" }))] }, data, chartBox);
      }
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  }
  if (params.get("q")) run();
  return { stop() { if (chart) chart.destroy(); } };
}

// ---------- patterns ----------

const sqlText = (s) => `'${String(s).replaceAll("'", "''")}'`;

async function query(sql) {
  return api(`/api/v1/query?sql=${encodeURIComponent(sql)}`);
}

function patternsPage() {
  const params = new URLSearchParams(location.search);
  const jobs = h("div", { id: "mining-jobs" });
  const runs = h("div", { id: "mining-runs" }, h("p", { class: "muted" }, "Loading…"));
  const detail = h("div", { id: "mining-run" });
  const form = h("div");
  main().replaceChildren(h("h1", {}, "Patterns"),
    h("p", { class: "muted" }, "Motifs (the closest pairs of windows) and discords (the windows least like any other) that samos mine found in a sensor's series, drawn on it."),
    form, jobs, h("div", { class: "panel" }, h("h2", {}, "Stored runs"), runs), detail);

  if (isAdmin()) {
    const node = h("input", { id: "mine-node", list: "mine-nodes", placeholder: "node", value: params.get("node") || "" });
    const nodesList = h("datalist", { id: "mine-nodes" });
    const sensor = h("select", { id: "mine-sensor" });
    const windowInput = h("input", { id: "mine-window", type: "number", min: 3, value: 16 });
    const backend = h("select", { id: "mine-backend" }, ["cpu", "auto", "gpu", "fpga-sim"].map((b) => h("option", { value: b }, b)));
    const msg = h("span", { class: "muted" });
    let known = [];
    const fillSensors = () => {
      const n = known.find((k) => k.node_id === node.value);
      sensor.replaceChildren(...((n && n.sensors) || []).filter((s) => s.data_type !== "string").map((s) => h("option", { value: s.name }, s.name)));
    };
    node.addEventListener("change", fillSensors);
    node.addEventListener("input", fillSensors);
    api("/api/v1/network").then((r) => {
      known = r.nodes;
      nodesList.replaceChildren(...known.map((n) => h("option", { value: n.node_id })));
      fillSensors();
    }).catch(() => {});
    const startRun = async () => {
      msg.textContent = "starting…";
      try {
        await api("/api/v1/mining/runs", { body: { node: node.value, sensor: sensor.value, window: Number(windowInput.value), backend: backend.value } });
        msg.textContent = "";
        loadJobs();
      } catch (e) { msg.textContent = e.message; }
    };
    form.replaceChildren(h("div", { class: "panel" }, h("h2", {}, "Mine a series"),
      h("div", { class: "toolbar" }, node, nodesList, sensor, h("label", {}, "window ", windowInput), backend,
        h("button", { class: "primary", type: "button", id: "mine-start", onclick: startRun }, "Start"), msg)));
  }

  function renderJobs(list) {
    jobs.replaceChildren(list.length ? h("div", { class: "panel" }, h("h2", {}, "Runs started here"),
      table([["#"], ["node"], ["sensor"], ["window", "num"], ["backend"], ["state"], ["by"], ["progress"]], list,
        (j) => h("tr", { "data-job": j.id, "data-state": j.state }, h("td", {}, j.id), h("td", {}, j.node), h("td", {}, j.sensor),
          h("td", { class: "num" }, j.window), h("td", {}, j.backend), h("td", {}, j.state), h("td", {}, j.by),
          h("td", {}, j.run ? h("a", { href: `/patterns?run=${encodeURIComponent(j.run)}`, "data-link": true }, j.run) : (j.output[j.output.length - 1] || "…"))))) : "");
  }
  let jobList = [];
  async function loadJobs() {
    try {
      jobList = (await api("/api/v1/mining/runs")).jobs;
      renderJobs(jobList);
    } catch (e) { jobs.replaceChildren(errorBox(e)); }
  }

  async function loadRuns() {
    try {
      const r = await query('SELECT run, max(mined_at) AS mined_at, node_id, sensor, max("window") AS "window", max(backend) AS backend FROM discords GROUP BY run, node_id, sensor ORDER BY mined_at DESC LIMIT 50');
      runs.replaceChildren(r.rows.length ? table([["run"], ["mined"], ["node"], ["sensor"], ["window", "num"], ["backend"]], r.rows,
        (row) => h("tr", { "data-run": row.run }, h("td", {}, h("a", { href: `/patterns?run=${encodeURIComponent(row.run)}`, "data-link": true }, row.run)),
          h("td", {}, time(Date.parse(row.mined_at))), h("td", {}, row.node_id || "(file)"), h("td", {}, row.sensor || ""),
          h("td", { class: "num" }, row.window), h("td", {}, row.backend))) : h("p", { class: "muted" }, "No runs stored yet."));
    } catch (e) { runs.replaceChildren(errorBox(e)); }
  }

  let chart = null;
  async function showRun(run) {
    detail.replaceChildren(h("p", { class: "muted" }, "Loading the run…"));
    try {
      const [motifs, discords] = await Promise.all([
        query(`SELECT * FROM motifs WHERE run = ${sqlText(run)} ORDER BY rank`),
        query(`SELECT * FROM discords WHERE run = ${sqlText(run)} ORDER BY rank`)]);
      const first = discords.rows[0] || motifs.rows[0];
      if (!first) { detail.replaceChildren(h("p", { class: "muted" }, `No results for run ${run}.`)); return; }
      const box = h("div", { class: "chart", id: "pattern-chart" });
      detail.replaceChildren(h("div", { class: "panel" },
        h("h2", {}, `Run ${run}: ${first.node_id || first.source} ${first.sensor || ""}, window ${first.window}`), box,
        h("h2", {}, "Motifs"), table([["rank"], ["first"], ["second"], ["distance", "num"]], motifs.rows,
          (m) => h("tr", { class: "motif" }, h("td", {}, m.rank), h("td", {}, `#${m.first_index} ${m.first_time || ""}`), h("td", {}, `#${m.second_index} ${m.second_time || ""}`), h("td", { class: "num" }, num(m.distance)))),
        h("h2", {}, "Discords"), table([["rank"], ["start"], ["distance", "num"]], discords.rows,
          (d) => h("tr", { class: "discord" }, h("td", {}, d.rank), h("td", {}, `#${d.start_index} ${d.start_time || ""}`), h("td", { class: "num" }, num(d.distance))))));
      if (!first.node_id || !window.uPlot) return;
      // The mined series is the node's sensor readings in time order: indexes are positions in it.
      const rs = await api(`/api/v1/readings?node=${encodeURIComponent(first.node_id)}&sensor=${encodeURIComponent(first.sensor)}`);
      const xs = rs.rows.map((r) => Date.parse(r.ingest_time) / 1000), ys = rs.rows.map((r) => r.value);
      const w = Number(first.window);
      const spans = [
        ...motifs.rows.flatMap((m) => [[m.first_index, "rgba(47,111,222,0.18)"], [m.second_index, "rgba(47,111,222,0.18)"]]),
        ...discords.rows.map((d) => [d.start_index, "rgba(192,52,43,0.22)"])];
      const shade = (u) => {
        const ctx = u.ctx;
        ctx.save();
        for (const [i, color] of spans) {
          if (i >= xs.length) continue;
          const x0 = u.valToPos(xs[i], "x", true), x1 = u.valToPos(xs[Math.min(i + w - 1, xs.length - 1)], "x", true);
          ctx.fillStyle = color;
          ctx.fillRect(x0, u.bbox.top, Math.max(2, x1 - x0), u.bbox.height);
        }
        ctx.restore();
      };
      chart = new uPlot({ width: box.clientWidth || 800, height: 260, hooks: { draw: [shade] },
        series: [{}, { label: first.sensor, stroke: "#2f6fde", points: { show: false } }] }, [xs, ys], box);
      box.setAttribute("data-marks", spans.length);
    } catch (e) { detail.replaceChildren(errorBox(e)); }
  }

  loadJobs();
  loadRuns();
  if (params.get("run")) showRun(params.get("run"));
  return {
    mining(m) {
      const i = jobList.findIndex((j) => j.id === m.job.id);
      if (i >= 0) jobList[i] = m.job; else jobList.unshift(m.job);
      renderJobs(jobList);
      if (m.job.state !== "running") loadRuns();
    },
    stop() { if (chart) chart.destroy(); },
  };
}

// ---------- start ----------

function applyTheme(t) {
  document.documentElement.dataset.theme = t;
  localStorage.setItem("samos-theme", t);
}

document.getElementById("theme").addEventListener("click", () =>
  applyTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark"));
document.getElementById("logout").addEventListener("click", async () => {
  await api("/api/v1/logout", { method: "POST" }).catch(() => {});
  session = { role: null };
  if (stream) { stream.close(); stream = null; }
  showWho();
  route();
});
applyTheme(localStorage.getItem("samos-theme") || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));

api("/api/v1/session").then((s) => {
  session = s;
  showWho();
  route();
}).catch((e) => main().replaceChildren(errorBox(e)));

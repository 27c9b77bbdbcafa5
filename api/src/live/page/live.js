// The live operations page: fleet counters, a live chart of one meter or feeder, and the alert
// feed with acknowledge buttons. It talks to /api/v1/live (protocol in api/src/live/protocol.rs)
// and to the REST API with the same key, and reconnects by itself.
"use strict";

const KEY = "meterstack.key";
const WINDOW_MS = 6 * 3600 * 1000; // the chart shows six hours of meter time
const $ = (id) => document.getElementById(id);

const state = {
  key: localStorage.getItem(KEY) || "",
  ws: null,
  retry: 500,
  alertCursor: null, // the cursor of the last alert event received
  watch: null, // {kind: "meter"|"feeder", id}
  points: [], // {t (reading time, ms), power, voltage}, by t
  lastMessage: 0,
  alerts: new Map(),
};

function setConnection(text, cls) {
  const el = $("connection");
  el.textContent = text;
  el.className = cls;
}

function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + state.key }, options.headers || {});
  return fetch(path, Object.assign({}, options, { headers })).then(async (r) => {
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      const message = (body.error && body.error.message) || r.statusText;
      throw Object.assign(new Error(message), { status: r.status });
    }
    return body;
  });
}

// ---- connection ----

function connect() {
  if (!state.key) return showLogin();
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/live";
  setConnection("connecting…", "state-wait");
  let ws;
  try {
    ws = new WebSocket(url, ["meterstack.v1", "bearer." + state.key]);
  } catch (e) {
    return scheduleReconnect();
  }
  state.ws = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    state.retry = 500;
    state.lastMessage = Date.now();
    setConnection("live", "state-on");
    send({ op: "subscribe", channel: "stats" });
    const alerts = { op: "subscribe", channel: "alerts" };
    if (state.alertCursor !== null) alerts.after = state.alertCursor;
    send(alerts);
    if (state.watch) subscribeWatch(state.watch);
    if (state.alertCursor === null) loadOpenAlerts();
  };
  ws.onmessage = (e) => {
    state.lastMessage = Date.now();
    let m;
    try {
      m = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    handle(m);
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = null;
    if (!opened) {
      // Refused before opening: most likely the key. Check it over REST to say why.
      api("/api/v1/alerts?limit=1").then(scheduleReconnect, (err) => {
        if (err.status === 401) {
          localStorage.removeItem(KEY);
          state.key = "";
          showLogin("The API key was refused: " + err.message);
        } else {
          scheduleReconnect();
        }
      });
      return;
    }
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  setConnection("reconnecting…", "state-off");
  const wait = state.retry;
  state.retry = Math.min(state.retry * 2, 10000);
  setTimeout(connect, wait);
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

// A heartbeat of our own: browsers answer the server's pings but cannot send any.
setInterval(() => {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  if (Date.now() - state.lastMessage > 30000) {
    state.ws.close(); // silent for too long: onclose reconnects
    return;
  }
  send({ op: "ping", id: Date.now() });
}, 10000);

// ---- messages ----

function handle(m) {
  switch (m.type) {
    case "stats":
      return showStats(m.data);
    case "reading":
      return addReading(m.data);
    case "alert":
      state.alertCursor = m.cursor;
      return upsertAlert(m.data.data.alert);
    case "lagged":
      $("notice").textContent = m.dropped + " messages were dropped (the page fell behind)";
      return;
    case "error":
      if (m.code === "alerts_gap") loadOpenAlerts();
      $("notice").textContent = m.message;
      return;
    default:
      return;
  }
}

function fmt(n, digits = 0) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString(undefined, { maximumFractionDigits: digits });
}

function showStats(s) {
  $("stat-rate").textContent = fmt(s.readings_per_s);
  $("stat-online").textContent = fmt(s.meters_online);
  $("stat-registered").textContent = fmt(s.meters_registered);
  $("stat-open").textContent = fmt(s.open_alerts);
  const c = s.completeness;
  $("stat-completeness").textContent = c && c.ratio !== null ? fmt(c.ratio * 100, 1) + " %" : "–";
  if (c && c.interval_start) {
    $("stat-completeness-label").textContent =
      "completeness, " + new Date(c.interval_start).toLocaleTimeString() + " (" + c.received + "/" + c.expected + ")";
  }
}

// ---- the chart ----

function subscribeWatch(w) {
  const m = { op: "subscribe", channel: "readings" };
  if (w.kind === "meter") m.meters = [w.id];
  else m.feeder = w.id;
  send(m);
}

$("watch-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const kind = $("watch-kind").value;
  const id = $("watch-id").value.trim();
  if (!id) return;
  if (state.watch) send({ op: "unsubscribe", channel: "readings" });
  state.watch = { kind, id };
  state.points = [];
  $("latest").textContent = "waiting for " + kind + " " + id + "…";
  subscribeWatch(state.watch);
  draw();
});

function addReading(r) {
  $("latest").textContent =
    r.meter_id + " at " + r.ts + ": " + fmt(r.power_w) + " W, " + fmt(r.voltage_v, 1) + " V, " +
    fmt(r.import_wh) + " Wh (" + r.quality + ")";
  $("latest").dataset.meter = r.meter_id;
  $("latest").dataset.ts = r.ts;
  const t = Date.parse(r.ts);
  if (!isFinite(t)) return;
  // One point per reading time; for a feeder, its meters' total power and mean voltage.
  let p = state.points.find((q) => q.t === t);
  if (!p) {
    p = { t, power: null, voltage: null, psum: 0, pn: 0, vsum: 0, vn: 0 };
    state.points.push(p);
    state.points.sort((a, b) => a.t - b.t);
  }
  const feeder = state.watch && state.watch.kind === "feeder";
  if (r.power_w !== undefined && r.power_w !== null) {
    p.psum += r.power_w;
    p.pn += 1;
    p.power = feeder ? p.psum : p.psum / p.pn;
  }
  if (r.voltage_v !== undefined && r.voltage_v !== null) {
    p.vsum += r.voltage_v;
    p.vn += 1;
    p.voltage = p.vsum / p.vn;
  }
  const cutoff = state.points[state.points.length - 1].t - WINDOW_MS;
  while (state.points.length && state.points[0].t < cutoff) state.points.shift();
  scheduleDraw();
}

let drawPending = false;
function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    draw();
  });
}

function range(values) {
  const v = values.filter((x) => x !== null && x !== undefined && isFinite(x));
  if (!v.length) return null;
  let lo = Math.min(...v), hi = Math.max(...v);
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.1;
  return [lo - pad, hi + pad];
}

function draw() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, left = 60, right = 60, top = 10, bottom = 24;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  // Meter time: the window ends at the newest reading (or now, before any).
  const now = state.points.length ? state.points[state.points.length - 1].t : Date.now();
  const x = (t) => left + ((t - (now - WINDOW_MS)) / WINDOW_MS) * (w - left - right);
  ctx.strokeStyle = "#26313c";
  ctx.fillStyle = "#8b98a5";
  for (let i = 0; i <= 10; i += 2) {
    const t = now - WINDOW_MS + (i * WINDOW_MS) / 10;
    ctx.beginPath(); ctx.moveTo(x(t), top); ctx.lineTo(x(t), h - bottom); ctx.stroke();
    ctx.fillText(new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }), x(t) - 16, h - 8);
  }
  const series = [
    ["power", "#4aa3ff", left - 56],
    ["voltage", "#f5b942", w - right + 4],
  ];
  for (const [key, color, labelX] of series) {
    const r = range(state.points.map((p) => p[key]));
    if (!r) continue;
    const y = (v) => h - bottom - ((v - r[0]) / (r[1] - r[0])) * (h - top - bottom);
    ctx.fillStyle = color;
    ctx.fillText(fmt(r[1], 1), labelX, top + 10);
    ctx.fillText(fmt(r[0], 1), labelX, h - bottom);
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    for (const p of state.points) {
      const v = p[key];
      if (v === null || v === undefined) continue;
      if (started) ctx.lineTo(x(p.t), y(v));
      else { ctx.moveTo(x(p.t), y(v)); started = true; }
      if (state.points.length < 60) ctx.fillRect(x(p.t) - 2, y(v) - 2, 4, 4);
    }
    ctx.stroke();
  }
  if (!state.points.length) {
    ctx.fillStyle = "#8b98a5";
    ctx.fillText(state.watch ? "waiting for readings…" : "choose a meter or feeder to watch", w / 2 - 80, h / 2);
  }
}

// ---- alerts ----

function loadOpenAlerts() {
  api("/api/v1/alerts?state=open&limit=200")
    .then((body) => body.alerts.forEach(upsertAlert))
    .catch((err) => { $("alert-error").textContent = "Cannot list alerts: " + err.message; });
}

function upsertAlert(a) {
  state.alerts.set(a.alert_id, a);
  const tbody = $("alerts").querySelector("tbody");
  let row = tbody.querySelector('tr[data-alert-id="' + CSS.escape(a.alert_id) + '"]');
  if (!row) {
    row = document.createElement("tr");
    row.dataset.alertId = a.alert_id;
    tbody.prepend(row);
  }
  row.className = "sev-" + a.severity + " state-" + a.state;
  row.dataset.state = a.state;
  row.replaceChildren(
    cell(new Date(a.opened_at).toLocaleString()),
    cell(a.severity),
    cell(a.type),
    cell(a.meter_id || a.feeder || ""),
    cell(a.state + (a.acknowledged_by ? " by " + a.acknowledged_by : "")),
    ackCell(a),
  );
  while (tbody.rows.length > 500) tbody.deleteRow(-1);
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function ackCell(a) {
  const td = document.createElement("td");
  if (a.state !== "open") return td;
  const b = document.createElement("button");
  b.type = "button";
  b.className = "ack";
  b.textContent = "Acknowledge";
  b.addEventListener("click", () => {
    b.disabled = true;
    api("/api/v1/alerts/" + encodeURIComponent(a.alert_id) + "/ack", { method: "POST" })
      .then((body) => { $("alert-error").textContent = ""; upsertAlert(body.alert); })
      .catch((err) => { b.disabled = false; $("alert-error").textContent = "Cannot acknowledge: " + err.message; });
  });
  td.append(b);
  return td;
}

// ---- the key ----

function showLogin(error) {
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = error || "";
  setConnection("disconnected", "state-off");
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.key = $("key").value.trim();
  localStorage.setItem(KEY, state.key);
  start();
});

$("logout").addEventListener("click", () => {
  localStorage.removeItem(KEY);
  state.key = "";
  if (state.ws) { const ws = state.ws; state.ws = null; ws.close(); }
  showLogin();
});

function start() {
  if (!state.key) return showLogin();
  $("login").hidden = true;
  $("app").hidden = false;
  draw();
  connect();
}

start();

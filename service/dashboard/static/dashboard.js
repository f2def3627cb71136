// Live dashboard of the decoding daemon: reads the SSE feed (/api/v1/feed) and the REST
// API; controls send the bearer token kept in sessionStorage. Plain canvas, no libraries.
"use strict";

const API = "/api/v1";
const WINDOW_BINS = 200; // bins shown in the traces and the raster
const TOKEN_KEY = "bci-token";
const COLORS = { decoded: "#1f77b4", target: "#e8720c", grid: "#e3e3e3", text: "#555" };

const $ = (id) => document.getElementById(id);
const view = {
  bins: [], // {seq, t, values, target, spikes}, oldest first
  labels: [],
  binS: 0.05,
  modelId: null,
  cursor: { decoded: [0, 0], target: [0, 0], trail: [] },
};

// -- formatting --------------------------------------------------------------------------
function fmt(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    return Number.isInteger(value) ? String(value) : value.toPrecision(4);
  }
  if (Array.isArray(value)) return value.length ? value.map(fmt).join(", ") : "none";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function flatten(object, prefix = "", rows = []) {
  for (const [key, value] of Object.entries(object || {})) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (value && typeof value === "object" && !Array.isArray(value)) {
      flatten(value, name, rows);
    } else {
      rows.push([name, value]);
    }
  }
  return rows;
}

function fillTable(table, rows, empty = "none") {
  table.replaceChildren(
    ...(rows.length ? rows : [[empty, null]]).map(([name, value]) => {
      const row = document.createElement("tr");
      for (const text of [name, fmt(value)]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    }),
  );
}

// -- drawing -----------------------------------------------------------------------------
function clear(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "11px system-ui, sans-serif";
  return ctx;
}

function polyline(ctx, points, color, dashed = false) {
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.setLineDash(dashed ? [5, 3] : []);
  ctx.beginPath();
  let drawing = false;
  for (const [x, y] of points) {
    if (y === null || Number.isNaN(y)) {
      drawing = false;
    } else if (drawing) {
      ctx.lineTo(x, y);
    } else {
      ctx.moveTo(x, y);
      drawing = true;
    }
  }
  ctx.stroke();
  ctx.setLineDash([]);
}

function traceCanvas(index) {
  let canvas = $(`trace-${index}`);
  if (!canvas) {
    canvas = document.createElement("canvas");
    canvas.id = `trace-${index}`;
    canvas.width = 900;
    canvas.height = 110;
    $("traces").append(canvas);
  }
  return canvas;
}

function drawTraces() {
  const bins = view.bins;
  const dims = bins.length ? bins[bins.length - 1].values.length : view.labels.length;
  const hasTarget = bins.some((b) => b.target);
  for (let d = 0; d < dims; d++) {
    const canvas = traceCanvas(d);
    const ctx = clear(canvas);
    const { width, height } = canvas;
    const series = (key) => bins.map((b) => (b[key] ? b[key][d] : null));
    const decoded = series("values");
    const target = series("target");
    const peak = Math.max(1e-6, ...decoded.concat(target).map((v) => Math.abs(v ?? 0)));
    const x = (i) => (i / (WINDOW_BINS - 1)) * width;
    const y = (v) => (v === null ? null : height / 2 - (v / peak) * (height / 2 - 6));
    ctx.strokeStyle = COLORS.grid;
    ctx.beginPath();
    ctx.moveTo(0, height / 2);
    ctx.lineTo(width, height / 2);
    ctx.stroke();
    const offset = WINDOW_BINS - bins.length;
    polyline(ctx, target.map((v, i) => [x(i + offset), y(v)]), COLORS.target, true);
    polyline(ctx, decoded.map((v, i) => [x(i + offset), y(v)]), COLORS.decoded);
    ctx.fillStyle = COLORS.text;
    ctx.fillText(`${view.labels[d] || `dim ${d}`}  (±${peak.toPrecision(3)})`, 4, 12);
    if (!hasTarget) ctx.fillText("no target stream", width - 100, 12);
  }
  $("target-note").textContent = hasTarget ? "" : "no target stream";
}

function drawCursor() {
  const canvas = $("cursor");
  const ctx = clear(canvas);
  const { width, height } = canvas;
  const trail = view.cursor.trail;
  const extent = Math.max(
    1e-6,
    ...trail.flatMap(([d, t]) => [Math.abs(d[0]), Math.abs(d[1])].concat(
      t ? [Math.abs(t[0]), Math.abs(t[1])] : [],
    )),
  );
  const scale = (width / 2 - 10) / extent;
  const point = (p) => [width / 2 + p[0] * scale, height / 2 - p[1] * scale];
  ctx.strokeStyle = COLORS.grid;
  ctx.beginPath();
  ctx.moveTo(width / 2, 0);
  ctx.lineTo(width / 2, height);
  ctx.moveTo(0, height / 2);
  ctx.lineTo(width, height / 2);
  ctx.stroke();
  const targets = trail.map(([, t]) => (t ? point(t) : [null, null]));
  polyline(ctx, targets, COLORS.target, true);
  polyline(ctx, trail.map(([d]) => point(d)), COLORS.decoded);
  for (const [key, color] of [["target", COLORS.target], ["decoded", COLORS.decoded]]) {
    if (key === "target" && !trail.some(([, t]) => t)) continue;
    const [px, py] = point(view.cursor[key]);
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(px, py, 5, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.fillStyle = COLORS.text;
  ctx.fillText(`half-width ${extent.toPrecision(3)} (velocity units × s)`, 4, height - 4);
}

function drawRaster() {
  const canvas = $("raster");
  const ctx = clear(canvas);
  const bins = view.bins;
  const rows = bins.length ? bins[bins.length - 1].spikes.length : 0;
  if (!rows) return;
  const dx = canvas.width / WINDOW_BINS;
  const dy = canvas.height / rows;
  const offset = WINDOW_BINS - bins.length;
  ctx.fillStyle = "#222";
  bins.forEach((b, i) => {
    b.spikes.forEach((s, r) => {
      if (s) ctx.fillRect((i + offset) * dx, r * dy, Math.max(1, dx - 1), Math.max(1, dy - 1));
    });
  });
}

function drawRates(activity) {
  const canvas = $("rates");
  const ctx = clear(canvas);
  const indices = activity.raster_indices;
  const rates = indices.map((i) => activity.firing_rates_hz[i] ?? 0);
  const peak = Math.max(1, ...rates);
  const w = canvas.width / Math.max(1, rates.length);
  ctx.fillStyle = COLORS.decoded;
  rates.forEach((r, i) => {
    const h = (r / peak) * (canvas.height - 14);
    ctx.fillRect(i * w + 1, canvas.height - h, Math.max(1, w - 2), h);
  });
  ctx.fillStyle = COLORS.text;
  ctx.fillText(`max ${peak.toPrecision(3)} Hz`, 4, 11);
  $("rate-summary").textContent =
    `firing rates (Hz, ${activity.rate_tau_s} s moving average) of neurons ` +
    `${indices.join(", ")}; mean over all ${activity.firing_rates_hz.length}: ` +
    `${fmt(activity.mean_rate_hz)} Hz, silent (< 0.1 Hz): ` +
    `${fmt(100 * activity.silent_fraction)} %`;
}

function drawLatency(histogram, latency) {
  const canvas = $("latency");
  const ctx = clear(canvas);
  const { le_ms: bounds, counts } = histogram;
  const peak = Math.max(1, ...counts);
  const w = canvas.width / counts.length;
  const plot = canvas.height - 30;
  counts.forEach((count, i) => {
    const late = latency.deadline_ms !== null && (bounds[i] ?? Infinity) > latency.deadline_ms;
    const h = (count / peak) * plot;
    ctx.fillStyle = late ? "#c62828" : COLORS.decoded;
    ctx.fillRect(i * w + 2, 14 + plot - h, w - 4, h);
    ctx.fillStyle = COLORS.text;
    ctx.fillText(count, i * w + 4, 12 + plot - h);
    const label = bounds[i] === null ? `>${bounds[i - 1]}` : `≤${bounds[i]}`;
    ctx.fillText(label, i * w + 2, canvas.height - 4);
  });
  ctx.textAlign = "right";
  const future = latency.from_arrival ? `, ${latency.from_arrival} future-stamped (from arrival)` : "";
  ctx.fillText(`ms; p50 ${fmt(latency.p50_ms)}, p99 ${fmt(latency.p99_ms)}, ` +
    `deadline misses ${latency.deadline_misses}${future}`, canvas.width - 4, 11);
  ctx.textAlign = "left";
}

// -- feed --------------------------------------------------------------------------------
function setBanner(element, text, level = "bad") {
  element.hidden = !text;
  element.textContent = text || "";
  element.dataset.level = level;
}

const STATE_BANNERS = {
  "waiting-for-stream": ["Waiting for the neural stream", "warn"],
  "stream-lost": ["Stream lost: the output holds zero velocity until it returns", "bad"],
  "schema-mismatch": ["Schema mismatch: the stream does not fit the model, nothing is decoded",
    "bad"],
  starting: ["Daemon starting", "warn"],
  stopped: ["Daemon stopped", "idle"],
  error: ["Daemon error", "bad"],
};

function showDaemon(status) {
  const badge = $("daemon-state");
  badge.dataset.state = status.state;
  badge.textContent = `daemon: ${status.state}${status.holding ? " (holding)" : ""}`;
  const [text, level] = STATE_BANNERS[status.state] || [null, "bad"];
  setBanner($("state-banner"), text && `${text}. ${status.message}`, level);
  $("bins-decoded").textContent = status.bins_decoded;
  if (status.model_id !== view.modelId) {
    view.modelId = status.model_id;
    $("model-id").textContent = status.model_id || "–";
    loadModel();
  }
}

function onBins(event) {
  const data = JSON.parse(event.data);
  showDaemon(data.status);
  if (!data.bins.length) return;
  for (const b of data.bins) {
    view.bins.push(b);
    const c = view.cursor;
    const step = (p, v) => [p[0] + v[0] * view.binS, p[1] + (v[1] ?? 0) * view.binS];
    c.decoded = step(c.decoded, b.values);
    if (b.target) c.target = step(c.target, b.target);
    c.trail.push([c.decoded, b.target ? c.target : null]);
  }
  view.bins.splice(0, Math.max(0, view.bins.length - WINDOW_BINS));
  view.cursor.trail.splice(0, Math.max(0, view.cursor.trail.length - 4 * WINDOW_BINS));
  const last = view.bins[view.bins.length - 1];
  $("last-seq").textContent = last.seq;
  $("last-seq").dataset.seq = last.seq;
  $("latest-values").textContent = last.values.map((v) => fmt(v)).join(", ");
  drawTraces();
  drawCursor();
  drawRaster();
}

function onStatus(event) {
  const data = JSON.parse(event.data);
  view.labels = data.labels;
  const { counters, info, ...stream } = data.stream;
  fillTable($("stream-table"), flatten(stream).concat(flatten(info, "info"), flatten(counters)));
  fillTable($("latency-table"), flatten(data.latency));
  drawLatency(data.latency_histogram, data.latency);
  showAdaptation(data.adaptation);
  if (data.activity) drawRates(data.activity);
}

function connect() {
  const feed = new EventSource(`${API}/feed`);
  const badge = $("feed-state");
  feed.onopen = () => {
    badge.dataset.state = "live";
    badge.textContent = "feed: live";
    setBanner($("feed-banner"), null);
  };
  feed.onerror = () => {
    badge.dataset.state = "disconnected";
    badge.textContent = "feed: disconnected";
    const closed = feed.readyState === EventSource.CLOSED;
    setBanner($("feed-banner"), "Live feed disconnected: reconnecting…", "idle");
    if (closed) setTimeout(connect, 2000); // refused (e.g. 503): EventSource gave up
  };
  feed.addEventListener("bins", onBins);
  feed.addEventListener("status", onStatus);
}

// -- model and adaptation ----------------------------------------------------------------
async function getJSON(path) {
  const response = await fetch(`${API}${path}`);
  if (!response.ok) throw new Error(`GET ${API}${path}: HTTP ${response.status}`);
  return response.json();
}

async function loadModel() {
  try {
    const model = await getJSON("/model");
    const { config, metrics, swaps, last_swap: lastSwap, ...rest } = model;
    fillTable($("model-table"),
      flatten(rest).concat(flatten(config, "config"), flatten(swaps, "swaps"),
        flatten(lastSwap, "last_swap")));
    fillTable($("metrics-table"), flatten(metrics), "none recorded");
    if (model.bin_s) view.binS = model.bin_s;
    if (model.kinematics_labels) view.labels = model.kinematics_labels;
  } catch (error) {
    fillTable($("model-table"), [["error", error.message]]);
  }
  try {
    const available = await getJSON("/model/available");
    const select = $("model-select");
    select.replaceChildren(...available.models.map((m) => new Option(m.name, m.name)));
    $("models-note").textContent = `${available.models.length} model(s) in the models folder`;
  } catch (error) {
    $("models-note").textContent = `model list unavailable (${error.message})`;
  }
}

function showAdaptation(adaptation) {
  if (!adaptation) {
    fillTable($("adaptation-table"), [["enabled", false]]);
    return;
  }
  fillTable($("adaptation-table"),
    [["enabled", adaptation.enabled]].concat(flatten(adaptation.status)));
}

// -- controls (bearer token) -------------------------------------------------------------
function askToken() {
  const form = $("token-form");
  form.hidden = false;
  $("token-input").value = "";
  $("token-input").focus();
  return new Promise((resolve) => {
    const done = (token) => {
      form.hidden = true;
      form.onsubmit = null;
      $("token-cancel").onclick = null;
      resolve(token);
    };
    form.onsubmit = (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      done(token || null);
    };
    $("token-cancel").onclick = () => done(null);
  });
}

function showAnswer(text, status, ok) {
  const answer = $("answer");
  answer.textContent = text;
  answer.dataset.status = status;
  answer.dataset.ok = ok;
}

async function control(path, body) {
  const token = sessionStorage.getItem(TOKEN_KEY) || (await askToken());
  if (!token) {
    showAnswer(`POST ${API}${path}: not sent (no token)`, "", false);
    return;
  }
  const headers = { Authorization: `Bearer ${token}` };
  if (body) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`${API}${path}`, {
      method: "POST",
      headers,
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch (error) {
    showAnswer(`POST ${API}${path}: no answer (${error.message})`, "", false);
    return;
  }
  const text = await response.text();
  let shown = text;
  try {
    const json = JSON.parse(text);
    shown = json.detail !== undefined ? fmt(json.detail) : JSON.stringify(json, null, 2);
    if (path.startsWith("/adaptation") && response.ok) showAdaptation(json);
  } catch {
    // not JSON: show the body as it came
  }
  showAnswer(`POST ${API}${path} → ${response.status} ${response.statusText}\n${shown}`,
    response.status, response.ok);
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (await askToken()) await control(path, body);
  } else if (path.startsWith("/model")) {
    loadModel();
  }
}

function resetCursor() {
  view.cursor = { decoded: [0, 0], target: [0, 0], trail: [] };
  drawCursor();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("[data-adapt]")) {
    button.addEventListener("click", () => control(`/adaptation/${button.dataset.adapt}`));
  }
  $("rollback").addEventListener("click", () => control("/model/rollback"));
  $("swap").addEventListener("click", () => {
    const name = $("model-select").value;
    if (name) control("/model/swap", { name });
    else showAnswer("no model chosen: the models folder list is empty or unavailable", "", false);
  });
  $("cursor-reset").addEventListener("click", resetCursor);
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showAnswer("token forgotten", "", true);
  });
  drawCursor();
  connect();
});

// The live status page served at GET /: one self-contained HTML document (no external assets)
// that polls /status, /events and /traffic, shows the backends grouped by service, one
// section per service with its figures and a live chart of its last 5 minutes (connections per
// second, p50/p99 backend latency: inline SVG drawn by the page from /traffic), the most recent
// connections that did not end cleanly, and offers drain/enable/disable buttons when no token is set. It also
// reads a balancer older than services: rows without `service` make one table without a heading.
// Each service that terminates TLS lists its certificates with the days they have left (from
// /certificates), highlighted within CERTIFICATE_WARN_DAYS or once expired; the admin API's own below the cards.
// Its inline style and script are allowed by their SHA-256 in the Content-Security-Policy, so no
// other inline code runs; both hashes are computed here from the exact text served.

import { createHash } from 'node:crypto';
import { CERTIFICATE_WARN_DAYS } from '../core/certificate';
import { ADMIN_CERTIFICATE_SERVICE, type BackendRow, type CertificateRow, type ErrorAnswer, type EventRow, type HealthAnswer, type ServiceRow, type StatusAnswer, type TrafficAnswer } from './wire';

type Keys<T> = readonly (keyof T)[];

/**
 * The keys of the admin API's answers that the script reads, by answer. Typed by admin/wire.ts:
 * a key renamed or removed there fails the typecheck here, and a test holds the script to this list.
 */
export const PAGE_READS = {
  status: ['version', 'strategy', 'uptime_seconds', 'admin_token_set', 'config', 'connections', 'backends', 'services'],
  config: ['path', 'generation'],
  connections: ['active', 'total', 'rejected'],
  backend: ['service', 'name', 'address', 'state', 'weight', 'active', 'total', 'latency_ms', 'last_check'],
  lastCheck: ['at', 'ok', 'error'],
  service: ['name', 'listen_address', 'sni', 'algorithm', 'active', 'total', 'rejected', 'usable', 'backends'],
  health: ['status'],
  event: ['at', 'kind', 'message'],
  traffic: ['services', 'terminations'],
  chart: ['name', 'points'],
  termination: ['at', 'service', 'backend', 'client', 'termination', 'duration_ms'],
  certificate: ['service', 'names', 'not_after', 'sha256', 'file'],
  error: ['error'],
} as const satisfies {
  status: Keys<StatusAnswer>;
  config: Keys<StatusAnswer['config']>;
  connections: Keys<StatusAnswer['connections']>;
  backend: Keys<BackendRow>;
  lastCheck: Keys<NonNullable<BackendRow['last_check']>>;
  service: Keys<ServiceRow>;
  health: Keys<HealthAnswer>;
  event: Keys<EventRow>;
  traffic: Keys<TrafficAnswer>;
  chart: Keys<TrafficAnswer['services'][number]>;
  termination: Keys<TrafficAnswer['terminations'][number]>;
  certificate: Keys<CertificateRow>;
  error: Keys<ErrorAnswer>;
};

const STYLE = `
  :root { --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --mute: #57606a; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1f2328; }
  h1 { font-size: 1.3rem; margin: 0 0 .25rem; }
  .sub { color: var(--mute); margin-bottom: 1rem; }
  table { border-collapse: collapse; width: 100%; margin-bottom: 1.5rem; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #d0d7de; white-space: nowrap; }
  th { background: #f6f8fa; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .state { font-weight: 600; }
  .healthy { color: var(--ok); } .unhealthy { color: var(--bad); } .draining, .disabled { color: var(--warn); }
  .bar { background: #54aeff; height: .6rem; display: inline-block; vertical-align: middle; border-radius: 2px; }
  .kind { display: inline-block; min-width: 4.5rem; color: var(--mute); }
  button { font: inherit; padding: .1rem .5rem; margin-right: .25rem; cursor: pointer; }
  #error { color: var(--bad); }
  ul { padding-left: 1.2rem; } li { margin: .15rem 0; }
  .cards { display: flex; gap: 1rem; flex-wrap: wrap; margin-bottom: 1rem; }
  .card { border: 1px solid #d0d7de; border-radius: 6px; padding: .5rem .8rem; min-width: 8rem; }
  .card b { display: block; font-size: 1.2rem; }
  section.service { margin-bottom: 1.5rem; }
  /* the same column widths in every service's table, so that they line up (wider content still widens its column) */
  section.service table { margin-bottom: 0; }
  section.service th:nth-child(1) { width: 10%; } section.service th:nth-child(2) { width: 12%; }
  section.service th:nth-child(3) { width: 7%; } section.service th:nth-child(4) { width: 5%; }
  section.service th:nth-child(5) { width: 5%; } section.service th:nth-child(6) { width: 5%; }
  section.service th:nth-child(7) { width: 14%; } section.service th:nth-child(8) { width: 7%; }
  section.service th:nth-child(9) { width: 21%; } section.service th:nth-child(10) { width: 14%; }
  section.service h2 { font-size: 1.1rem; margin: 0 0 .2rem; }
  .listen { color: var(--mute); font-weight: normal; font-size: .9rem; margin-left: .6rem; }
  .figures { display: flex; gap: 1.2rem; flex-wrap: wrap; color: var(--mute); margin-bottom: .4rem; }
  .figures b { color: #1f2328; font-variant-numeric: tabular-nums; }
  .figures b.healthy { color: var(--ok); } .figures b.unhealthy { color: var(--bad); } .figures b.draining { color: var(--warn); }
  td.none { color: var(--mute); font-style: italic; }
  .chart { display: flex; gap: 1rem; flex-wrap: wrap; margin: .2rem 0 .6rem; }
  .chart figure { margin: 0; }
  .chart figcaption { color: var(--mute); font-size: .85rem; }
  .chart svg { border: 1px solid #d0d7de; border-radius: 4px; background: #fff; display: block; }
  .chart polyline { fill: none; stroke-width: 1.5; }
  .chart text { font-size: 10px; fill: #57606a; }
  polyline.all { stroke: #0969da; } polyline.bad { stroke: #cf222e; } polyline.p50 { stroke: #1a7f37; } polyline.p99 { stroke: #bf8700; }
  span.all { color: #0969da; } span.bad { color: #cf222e; } span.p50 { color: #1a7f37; } span.p99 { color: #bf8700; }
  #terminations td.term { color: var(--bad); font-weight: 600; }
  .certs { margin: 0 0 .5rem; color: var(--mute); }
  #admin-cert .certs { margin-bottom: 1rem; }
  .cert .names { color: #1f2328; }
  .cert .left { font-variant-numeric: tabular-nums; }
  .cert .left.soon { color: var(--warn); font-weight: 600; } .cert .left.expired { color: var(--bad); font-weight: 600; }
`;

const SCRIPT = `
"use strict";
let tokenSet = false;
// the last GET /traffic answer (null: none yet, or a balancer without it)
let traffic = null;
const WINDOW_MS = 300000;
// the last GET /certificates answer (a balancer without it: none)
let certificates = [];
const DAY_MS = 86400000;
const WARN_DAYS = ${CERTIFICATE_WARN_DAYS};
const ADMIN_SERVICE = ${JSON.stringify(ADMIN_CERTIFICATE_SERVICE)};
// the last drain/enable/disable refusal, shown until an action succeeds
let actionError = "";
const $ = (id) => document.getElementById(id);
function esc(s) { return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]); }
function ago(t) { if (!t) return "–"; const s = Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000)); return s + " s ago"; }
// a backend of a named service is acted on through its service's path; a row without one
// (a balancer older than services) through the old path
async function act(service, name, action) {
  const path = (service == null ? "" : "/services/" + encodeURIComponent(service)) + "/backends/" + encodeURIComponent(name) + "/" + action;
  const r = await fetch(path, { method: "POST" });
  const body = r.ok ? null : await r.json().catch(() => null);
  const who = (service == null ? "" : service + "/") + name;
  actionError = r.ok ? "" : action + " " + who + ": HTTP " + r.status + (body && body.error ? ": " + body.error : "");
  refresh();
}
function row(b, sum) {
  const share = sum > 0 ? (100 * b.total / sum) : 0;
  const lc = b.last_check ? (b.last_check.ok ? "ok" : "failed: " + esc(b.last_check.error || "")) + ", " + ago(b.last_check.at) : "–";
  const data = (typeof b.service === "string" ? ' data-service="' + esc(b.service) + '"' : "") + ' data-name="' + esc(b.name) + '"';
  const buttons = tokenSet ? "(token set)" :
    (b.state === "draining" || b.state === "disabled"
      ? '<button data-act="enable"' + data + '>enable</button>'
      : '<button data-act="drain"' + data + '>drain</button><button data-act="disable"' + data + '>disable</button>');
  return '<tr data-backend="' + esc(b.name) + '"' + (typeof b.service === "string" ? ' data-service="' + esc(b.service) + '"' : "") +
    "><td>" + esc(b.name) + "</td><td>" + esc(b.address) +
    '</td><td class="state ' + esc(b.state) + '">' + esc(b.state) + '</td><td class="num">' + b.weight +
    '</td><td class="num">' + b.active + '</td><td class="num">' + b.total +
    '</td><td><span class="bar" data-width="' + share.toFixed(0) + '"></span> ' + share.toFixed(1) + "%" +
    '</td><td class="num">' + (b.latency_ms == null ? "–" : b.latency_ms.toFixed(1) + " ms") +
    "</td><td>" + lc + "</td><td>" + buttons + "</td></tr>";
}
// [{ svc, rows }] in the API's order: from status.services when the balancer sends it, else by the
// rows' own service; svc is null for rows without one (one group, shown without a heading)
function groups(s) {
  const out = [];
  const find = (name) => out.find((g) => (g.svc ? g.svc.name : undefined) === name);
  for (const svc of Array.isArray(s.services) ? s.services : []) out.push({ svc, rows: [] });
  for (const b of s.backends) {
    const name = typeof b.service === "string" ? b.service : undefined;
    let g = find(name);
    if (!g) out.push(g = { svc: name === undefined ? null : { name }, rows: [] });
    g.rows.push(b);
  }
  return out;
}
function fmt(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }
// one inline SVG chart of the columns cols of the points ([at, conns/s, not clean/s, p50, p99]),
// the last 5 minutes to the latest point, scaled to the largest value shown
function chartSvg(points, cols, classes, unit) {
  const W = 560, H = 110, P = 4;
  const end = points.length ? points[points.length - 1][0] : Date.now();
  const start = end - WINDOW_MS;
  let max = 0;
  for (const p of points) for (const c of cols) if (p[c] != null && p[c] > max) max = p[c];
  const top = max > 0 ? max * 1.15 : 1;
  const x = (t) => (P + (W - 2 * P) * (t - start) / WINDOW_MS).toFixed(1);
  const y = (v) => (H - P - (H - 2 * P) * v / top).toFixed(1);
  const lines = cols.map((c, i) => {
    const pts = points.filter((p) => p[c] != null && p[0] >= start).map((p) => x(p[0]) + "," + y(p[c])).join(" ");
    return pts ? '<polyline class="' + classes[i] + '" points="' + pts + '"/>' : "";
  }).join("");
  return '<svg viewBox="0 0 ' + W + " " + H + '" width="' + W + '" height="' + H + '" role="img" aria-label="' + esc(unit) + '">' + lines +
    '<text x="' + (W - P) + '" y="12" text-anchor="end">max ' + esc(fmt(max)) + " " + esc(unit) + '</text><text x="' + P + '" y="' + (H - P) + '">5 min ago</text>' +
    '<text x="' + (W - P) + '" y="' + (H - P) + '" text-anchor="end">now</text></svg>';
}
function charts(name) {
  const chart = traffic && Array.isArray(traffic.services) ? traffic.services.find((c) => c.name === name) : null;
  if (!chart) return "";
  const pts = chart.points;
  return '<div class="chart" data-chart="' + esc(name) + '" data-points="' + pts.length + '">' +
    '<figure><figcaption>connections per second: <span class="all">ended</span>, <span class="bad">not clean</span></figcaption>' + chartSvg(pts, [1, 2], ["all", "bad"], "/s") + "</figure>" +
    '<figure><figcaption>backend latency (connect + first byte): <span class="p50">p50</span>, <span class="p99">p99</span></figcaption>' + chartSvg(pts, [3, 4], ["p50", "p99"], "ms") + "</figure></div>";
}
function terminationRow(r) {
  return '<tr data-termination="' + esc(r.termination) + '"><td>' + esc(new Date(r.at).toLocaleTimeString()) + "</td><td>" + esc(r.service) +
    "</td><td>" + esc(r.backend == null ? "–" : r.backend) + "</td><td>" + esc(r.client == null ? "–" : r.client) +
    '</td><td class="term">' + esc(r.termination) + '</td><td class="num">' + esc(r.duration_ms) + " ms</td></tr>";
}
// one line per certificate: its names, its end and the whole days left (highlighted within WARN_DAYS)
function certLine(crt) {
  const end = Date.parse(crt.not_after);
  const ms = end - Date.now();
  const days = Math.floor(ms / DAY_MS);
  const cls = ms <= 0 ? "expired" : ms <= WARN_DAYS * DAY_MS ? "soon" : "ok";
  const left = ms <= 0 ? "expired" : days + (days === 1 ? " day" : " days") + " left";
  return '<div class="cert" data-sha256="' + esc(crt.sha256) + '" data-days="' + days + '" title="' + esc(crt.file) + '"><span class="names">' +
    esc(crt.names.join(", ") || crt.file) + "</span> · expires " + esc(new Date(end).toISOString().slice(0, 10)) +
    ' · <span class="left ' + cls + '">' + esc(left) + "</span></div>";
}
function certs(service, label) {
  const mine = certificates.filter((crt) => crt.service === service);
  return mine.length ? '<div class="certs" data-certificates="' + esc(service) + '">' + label + mine.map(certLine).join("") + "</div>" : "";
}
function fig(name, label, value, cls) {
  return '<span class="fig" data-fig="' + name + '">' + label + " <b" + (cls ? ' class="' + cls + '"' : "") + ">" + esc(value) + "</b></span>";
}
function section(g) {
  const rows = g.rows;
  const sum = rows.reduce((a, b) => a + b.total, 0);
  const thead = "<thead><tr><th>backend</th><th>address</th><th>state</th><th>weight</th><th>active</th><th>total</th><th>share</th><th>latency</th><th>last check</th><th>actions</th></tr></thead>";
  const tbody = "<tbody>" + (rows.length ? rows.map((b) => row(b, sum)).join("") : '<tr><td class="none" colspan="10">no backends</td></tr>') + "</tbody>";
  if (!g.svc) return '<section class="service"><table>' + thead + tbody + "</table></section>";
  const v = g.svc;
  // a service missing from status.services (an older or racing answer): figures from its rows
  const has = (k) => typeof v[k] === "number";
  const usable = has("usable") ? v.usable : rows.filter((b) => b.state === "healthy").length;
  const count = has("backends") ? v.backends : rows.length;
  const figures = [
    v.algorithm ? fig("algorithm", "algorithm", v.algorithm) : "",
    Array.isArray(v.sni) && v.sni.length ? fig("sni", "sni", v.sni.join(", ")) : "",
    fig("active", "active", has("active") ? v.active : rows.reduce((a, b) => a + b.active, 0)),
    fig("total", "total", has("total") ? v.total : sum),
    fig("rejected", "rejected", has("rejected") ? v.rejected : "–"),
    fig("usable", "usable", usable + " / " + count, usable === 0 ? "unhealthy" : usable < count ? "draining" : "healthy"),
  ].join("");
  return '<section class="service" data-service="' + esc(v.name) + '"><h2><span class="name">' + esc(v.name) + "</span>" +
    (v.listen_address ? '<span class="listen">listen ' + esc(v.listen_address) + "</span>" : "") + "</h2>" +
    '<div class="figures">' + figures + "</div>" + certs(v.name, "certificates") + charts(v.name) + "<table>" + thead + tbody + "</table></section>";
}
async function refresh() {
  try {
    const [st, ev, h] = await Promise.all([fetch("/status"), fetch("/events"), fetch("/health")]);
    const s = await st.json();
    const events = await ev.json();
    const health = await h.json();
    // a balancer without /traffic (older) answers 404: the page then shows no chart
    traffic = await fetch("/traffic").then((r) => (r.ok ? r.json() : null)).catch(() => null);
    const cr = await fetch("/certificates").then((r) => (r.ok ? r.json() : [])).catch(() => []);
    certificates = Array.isArray(cr) ? cr : [];
    tokenSet = !!s.admin_token_set;
    $("error").textContent = actionError;
    $("summary").textContent = "version " + s.version + (s.strategy === null ? "" : " · strategy " + s.strategy) + " · up " + s.uptime_seconds + " s · config " + s.config.path;
    $("health").textContent = health.status;
    $("health").className = health.status === "healthy" ? "healthy" : health.status === "degraded" ? "draining" : "unhealthy";
    $("active").textContent = s.connections.active;
    $("total").textContent = s.connections.total;
    $("rejected").textContent = s.connections.rejected;
    $("generation").textContent = s.config.generation;
    $("backends").innerHTML = groups(s).map(section).join("");
    $("admin-cert").innerHTML = certs(ADMIN_SERVICE, "admin API certificate");
    // set through the DOM: the CSP refuses inline style attributes
    for (const bar of document.querySelectorAll(".bar")) bar.style.width = bar.dataset.width + "px";
    const recent = traffic && Array.isArray(traffic.terminations) ? traffic.terminations.slice(0, 20) : [];
    $("terminations").innerHTML = recent.length ? recent.map(terminationRow).join("") : '<tr><td class="none" colspan="6">none yet</td></tr>';
    $("events").innerHTML = events.slice(-15).reverse().map((e) =>
      "<li>" + esc(new Date(e.at).toLocaleTimeString()) + ' <span class="kind">' + esc(e.kind || "") + "</span> " + esc(e.message) + "</li>").join("");
  } catch (e) {
    $("error").textContent = "cannot reach the admin API: " + e;
  }
}
document.addEventListener("click", (ev) => {
  const t = ev.target;
  if (t instanceof HTMLButtonElement && t.dataset.act) act(t.dataset.service, t.dataset.name, t.dataset.act);
});
refresh();
setInterval(refresh, 1000);
`;

export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lemonade-lb status</title>
<style>${STYLE}</style>
</head>
<body>
<h1>lemonade-lb</h1>
<div class="sub" id="summary">loading…</div>
<div id="error"></div>
<div class="cards">
  <div class="card">health<b id="health">–</b></div>
  <div class="card">active connections<b id="active">–</b></div>
  <div class="card">total connections<b id="total">–</b></div>
  <div class="card">rejected<b id="rejected">–</b></div>
  <div class="card">config generation<b id="generation">–</b></div>
</div>
<div id="admin-cert"></div>
<div id="backends"></div>
<h2>Recent connections that did not end cleanly</h2>
<table><thead><tr><th>time</th><th>service</th><th>backend</th><th>client</th><th>termination</th><th>duration</th></tr></thead><tbody id="terminations"></tbody></table>
<h2>Recent events</h2>
<ul id="events"></ul>
<script>${SCRIPT}</script>
</body>
</html>
`;

const sha256 = (text: string): string => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

/** default-src 'self' (fetches to this API only); the page's own style and script; no framing. */
export const STATUS_PAGE_CSP = [
  "default-src 'self'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

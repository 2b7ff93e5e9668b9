// The live status page served at GET /: one self-contained HTML document (no external assets)
// that polls /status and /events and offers drain/enable/disable buttons when no token is set.
// Its inline style and script are allowed by their SHA-256 in the Content-Security-Policy, so no
// other inline code runs (SPEC §6); both hashes are computed here from the exact text served.

import { createHash } from 'node:crypto';

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
`;

const SCRIPT = `
"use strict";
let tokenSet = false;
// the last drain/enable/disable refusal, shown until an action succeeds
let actionError = "";
const $ = (id) => document.getElementById(id);
function esc(s) { return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]); }
function ago(t) { if (!t) return "–"; const s = Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000)); return s + " s ago"; }
async function act(name, action) {
  const r = await fetch("/backends/" + encodeURIComponent(name) + "/" + action, { method: "POST" });
  const body = r.ok ? null : await r.json().catch(() => null);
  actionError = r.ok ? "" : action + " " + name + ": HTTP " + r.status + (body && body.error ? ": " + body.error : "");
  refresh();
}
function row(b, sum) {
  const share = sum > 0 ? (100 * b.total / sum) : 0;
  const lc = b.last_check ? (b.last_check.ok ? "ok" : "failed: " + esc(b.last_check.error || "")) + ", " + ago(b.last_check.at) : "–";
  const buttons = tokenSet ? "(token set)" :
    (b.state === "draining" || b.state === "disabled"
      ? '<button data-act="enable" data-name="' + esc(b.name) + '">enable</button>'
      : '<button data-act="drain" data-name="' + esc(b.name) + '">drain</button><button data-act="disable" data-name="' + esc(b.name) + '">disable</button>');
  return '<tr data-backend="' + esc(b.name) + '"><td>' + esc(b.name) + "</td><td>" + esc(b.address) +
    '</td><td class="state ' + esc(b.state) + '">' + esc(b.state) + '</td><td class="num">' + b.weight +
    '</td><td class="num">' + b.active + '</td><td class="num">' + b.total +
    '</td><td><span class="bar" data-width="' + share.toFixed(0) + '"></span> ' + share.toFixed(1) + "%" +
    '</td><td class="num">' + (b.latency_ms == null ? "–" : b.latency_ms.toFixed(1) + " ms") +
    "</td><td>" + lc + "</td><td>" + buttons + "</td></tr>";
}
async function refresh() {
  try {
    const [st, ev, h] = await Promise.all([fetch("/status"), fetch("/events"), fetch("/health")]);
    const s = await st.json();
    const events = await ev.json();
    const health = await h.json();
    tokenSet = !!s.admin_token_set;
    $("error").textContent = actionError;
    $("summary").textContent = "version " + s.version + " · strategy " + s.strategy + " · up " + s.uptime_seconds + " s · config " + s.config.path;
    $("health").textContent = health.status;
    $("health").className = health.status === "healthy" ? "healthy" : health.status === "degraded" ? "draining" : "unhealthy";
    $("active").textContent = s.connections.active;
    $("total").textContent = s.connections.total;
    $("rejected").textContent = s.connections.rejected;
    $("generation").textContent = s.config.generation;
    const sum = s.backends.reduce((a, b) => a + b.total, 0);
    $("backends").innerHTML = s.backends.map((b) => row(b, sum)).join("");
    // set through the DOM: the CSP refuses inline style attributes
    for (const bar of document.querySelectorAll(".bar")) bar.style.width = bar.dataset.width + "px";
    $("events").innerHTML = events.slice(-15).reverse().map((e) =>
      "<li>" + esc(new Date(e.at).toLocaleTimeString()) + ' <span class="kind">' + esc(e.kind || "") + "</span> " + esc(e.message) + "</li>").join("");
  } catch (e) {
    $("error").textContent = "cannot reach the admin API: " + e;
  }
}
document.addEventListener("click", (ev) => {
  const t = ev.target;
  if (t instanceof HTMLButtonElement && t.dataset.act) act(t.dataset.name, t.dataset.act);
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
<table>
  <thead><tr><th>backend</th><th>address</th><th>state</th><th>weight</th><th>active</th><th>total</th><th>share</th><th>latency</th><th>last check</th><th>actions</th></tr></thead>
  <tbody id="backends"></tbody>
</table>
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

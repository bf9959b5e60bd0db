// aislecast HQ console: renders alerts, campaigns and gateways from HQ's JSON, fetched
// again whenever HQ pushes a change (live.js: "aislecast:live" events), never polled.
// Plain DOM, no framework; values are set with textContent only (never innerHTML).
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

const int = (n) => (n ?? 0).toLocaleString();
const pct = (x) => `${((x ?? 0) * 100).toFixed(1)}%`;
// Lift only once both arms have the campaign's minimum of shoppers (HQ says lift_status "ok").
function lift(c) {
  const counts = `offered ${int(c.treated)}, holdout ${int(c.control)}`;
  if (c.lift_status !== "ok" || c.lift === null || c.lift === undefined) {
    return c.treated || c.control ? `not enough data yet (${counts}; ${int(c.min_per_arm)} each needed)` : "–";
  }
  const pp = (x) => `${x >= 0 ? "+" : ""}${(x * 100).toFixed(1)}`;
  return `${pp(c.lift)} pp [${pp(c.lift_lo)}, ${pp(c.lift_hi)}] (${counts})`;
}
function ago(ts, now) {
  if (!ts) return "never";
  const s = Math.max(0, Math.round(now - ts));
  return s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

function notify(text, isError = false) {
  const n = $("#notice");
  n.textContent = text;
  n.classList.toggle("error", isError);
}

// The session cookie is HttpOnly; changes also send the CSRF token from the readable
// aislecast_csrf cookie (double submit), which no other origin can read.
function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)aislecast_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : "";
}

async function api(method, url, body) {
  const headers = body ? { "content-type": "application/json" } : {};
  if (method !== "GET") headers["x-csrf-token"] = csrfToken();
  const r = await fetch(url, {
    method, headers, credentials: "same-origin",
    body: body ? JSON.stringify(body) : undefined,
  });
  if (r.status === 401) {  // no session, or it expired: log in again
    toLogin();
    throw new Error("logged out");
  }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const d = data.detail;
    const err = new Error(Array.isArray(d) ? d.join("; ") : d || `HTTP ${r.status}`);
    err.status = r.status;  // a caller may answer a 403 or 404 its own way
    err.reason = data.reason ?? "";
    throw err;
  }
  return data;
}

// Who is logged in (GET /api/me), fetched once per page: {actor, role, stores, via}.
let mePromise = null;
function whoami() {
  mePromise ??= api("GET", "/api/me").catch((err) => { mePromise = null; throw err; });
  return mePromise;
}

const FIELDS = [
  // reach: different shoppers delivered (HQ's shoppers.deliveries, hq.reach)
  ["impressions", int], ["deliveries", int], ["reach", (c) => int(c.shoppers?.deliveries), true],
  ["opens", int], ["clicks", int],
  ["ctr", pct], ["redemptions", int], ["leads", int], ["lift", (c) => lift(c), true],
];

function setCell(td, text) {
  if (td.textContent !== text) {
    if (td.textContent !== "") {
      td.classList.remove("changed");
      void td.offsetWidth; // restart the highlight animation
      td.classList.add("changed");
    }
    td.textContent = text;
  }
}

// More controls for each campaign's action cell, added by other scripts once they know
// the role may use them (leads.js): fn(tr, actions) with tr.dataset.campaign and .name.
const rowActions = [];
function addRowAction(fn) {
  rowActions.push(fn);
  for (const tr of $("#campaigns tbody").children) fn(tr, tr.querySelector("td.actions"));
}

function campaignRow(c) {
  const cells = FIELDS.map(([f]) => el("td", { class: "num", "data-field": f }));
  const name = el("th", { scope: "row" }, c.name, el("span", { class: "sub" }, `${c.id} · ${c.stores.join(", ")}`));
  const actions = el("td", { class: "actions" }, el("button", { type: "button", class: "secondary", "data-action": "toggle" }));
  const tr = el("tr", { "data-campaign": c.id, "data-name": c.name }, name,
    el("td", {}, el("span", { class: "badge", "data-field": "status" })), ...cells, actions);
  actions.firstChild.addEventListener("click", () => toggle(tr.dataset.campaign, tr.dataset.status));
  for (const fn of rowActions) fn(tr, actions);
  return tr;
}

function renderCampaigns(list) {
  const body = $("#campaigns tbody");
  $("#campaigns-empty").hidden = list.length > 0;
  $("#campaigns").hidden = list.length === 0;
  const seen = new Set();
  for (const c of list) {
    seen.add(c.id);
    let tr = body.querySelector(`tr[data-campaign="${CSS.escape(c.id)}"]`);
    if (!tr) { tr = campaignRow(c); body.append(tr); }
    tr.dataset.status = c.status;
    const badge = tr.querySelector('[data-field="status"]');
    badge.textContent = c.paused_by ? `${c.status} by rule ${c.paused_by.rule.kind}` : c.status;
    badge.title = c.paused_by ? c.paused_by.reason : "";
    badge.className = `badge ${c.status}`;
    for (const [f, fmt, whole] of FIELDS) {
      setCell(tr.querySelector(`td[data-field="${f}"]`), whole ? fmt(c) : fmt(c[f]));
    }
    const btn = tr.querySelector('button[data-action="toggle"]');
    const paused = c.status !== "live" && c.status !== "scheduled";
    btn.textContent = paused ? "Resume" : "Pause";
    btn.setAttribute("aria-label", `${paused ? "Resume" : "Pause"} ${c.name}`);
  }
  for (const tr of [...body.children]) if (!seen.has(tr.dataset.campaign)) tr.remove();
}

function renderStores(data) {
  const box = $("#stores");
  $("#stores-empty").hidden = data.stores.length > 0;
  box.replaceChildren(...data.stores.map((s) => {
    const rows = s.gateways.map((g) => el("tr", { "data-gateway": g.gateway },
      el("th", { scope: "row" }, g.gateway),
      el("td", {}, el("span", { class: `badge ${g.status}`, "data-field": "status" }, g.status)),
      el("td", {}, ago(g.state_at, data.now)), el("td", {}, ago(g.last_event_at, data.now)),
      el("td", { class: "num" }, int(g.bundle_version)), el("td", { class: "num" }, int(g.shoppers_present)),
      el("td", { class: "num" }, int(g.outbox_rows))));
    const head = el("tr", {}, ...["Gateway", "Status", "Last state", "Last event"].map((h) => el("th", { scope: "col" }, h)),
      ...["Bundle", "Shoppers", "Outbox"].map((h) => el("th", { scope: "col", class: "num" }, h)));
    const table = rows.length
      ? el("table", {}, el("caption", { class: "sr-only" }, `Gateways of ${s.name}`), el("thead", {}, head), el("tbody", {}, ...rows))
      : el("p", { class: "muted" }, "No gateway has reported yet.");
    return el("div", { class: "store", "data-store": s.id },
      el("h3", {}, `${s.name} `, el("span", { class: "muted" }, `${s.id} · ${s.tz}`)), table);
  }));
  const fs = $("#flash-stores");
  const have = [...fs.querySelectorAll("input")].map((i) => i.value).join();
  const flashable = data.stores.filter((s) => s.registered); // not stores only a gateway reported
  if (have !== flashable.map((s) => s.id).join()) {
    fs.replaceChildren(el("legend", {}, "Stores"), ...(flashable.length
      ? flashable.map((s) => el("label", {}, el("input", { type: "checkbox", name: "stores", value: s.id }), s.name))
      : [el("p", { class: "muted" }, "No stores registered yet.")]));
  }
}

// Open alerts only (the API also lists recently cleared ones): severity, source,
// the message with its fix, and how long it has been open.
function renderAlerts(data) {
  const open = data.alerts.filter((a) => a.cleared_at === null || a.cleared_at === undefined);
  $("#alerts-empty").hidden = open.length > 0;
  const list = $("#alerts");
  list.hidden = open.length === 0;
  list.replaceChildren(...open.map((a) => el("li", { class: `alert ${a.severity}`, "data-alert": a.id },
    el("span", { class: `badge ${a.severity}`, "data-field": "severity" }, a.severity),
    el("span", { class: "source", "data-field": "source" }, a.source),
    el("span", { class: "message", "data-field": "message" }, a.message),
    el("span", { class: "muted", "data-field": "age" }, `open since ${ago(a.first_seen, data.now)}`))));
}

async function refresh() {
  try {
    const [a, c, s] = await Promise.all([api("GET", "/api/alerts"), api("GET", "/api/console/campaigns"),
      api("GET", "/api/console/stores")]);
    renderAlerts(a);
    renderCampaigns(c.campaigns);
    renderStores(s);
    $("#updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    $("#updated").textContent = `HQ unreachable (${err.message}); waiting for it`;
  }
}
const refreshSoon = coalesced(refresh);  // live.js

async function toggle(id, status) {
  const action = status === "live" || status === "scheduled" ? "pause" : "resume";
  try {
    const c = await api("POST", `/api/campaigns/${encodeURIComponent(id)}/${action}`);
    notify(`${c.name} is now ${c.status}.`);
    renderCampaigns((await api("GET", "/api/console/campaigns")).campaigns);
  } catch (err) { notify(`Could not ${action} ${id}: ${err.message}`, true); }
}

// A marketer may not send a flash (POST /api/flash is for approvers): theirs is saved as
// the draft that POST /api/flash would have made (hq.campaigns.flash_campaign's fields)
// and submitted, for an approver to approve in the Approvals section.
const FLASH_SENDERS = new Set(["admin", "approver"]);

async function proposeFlash(body) {
  const hex = [...crypto.getRandomValues(new Uint8Array(4))].map((b) => b.toString(16).padStart(2, "0"));
  const id = `flash-${hex.join("")}`;
  const draft = { id, name: body.title, stores: body.stores, scenario: "flash", status: "draft",
    trigger: { kind: "flash" }, validity_s: body.validity_s, priority: 100, countdown: true,
    creatives: [{ id: "flash", title: body.title, body: body.body, format: body.format ?? "banner",
      coupon_code: body.coupon_code ?? null }] };
  const c = await api("POST", "/api/campaigns", draft);
  await api("POST", `/api/campaigns/${encodeURIComponent(c.id)}/submit`, { comment: "flash", status: "live" });
  return c;
}

async function sendFlash(ev) {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const stores = f.getAll("stores");
  if (!stores.length) { notify("Choose at least one store.", true); return; }
  const body = { title: f.get("title"), body: f.get("body") || "", stores,
    validity_s: Number(f.get("minutes")) * 60 };
  if (f.get("coupon_code")) { body.coupon_code = f.get("coupon_code"); body.format = "coupon"; }
  try {
    const me = await whoami();
    const c = FLASH_SENDERS.has(me.role) ? await api("POST", "/api/flash", body) : await proposeFlash(body);
    notify(c.status === "draft"
      ? `Flash campaign “${c.name}” (${c.id}) waits for ${FLASH_SENDERS.has(me.role) ? "a second approver (four eyes)" : "an approver"}.`
      : `Flash campaign “${c.name}” (${c.id}) sent to ${c.stores.join(", ")}.`);
    ev.target.reset();
    renderCampaigns((await api("GET", "/api/console/campaigns")).campaigns);
  } catch (err) { notify(`Flash campaign refused: ${err.message}`, true); }
}

async function logout(ev) {
  ev.preventDefault();
  await api("POST", "/console/logout").catch(() => ({}));
  toLogin();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#flash").addEventListener("submit", sendFlash);
  whoami().then((me) => {  // a marketer's flash is a proposal (see proposeFlash)
    if (!FLASH_SENDERS.has(me.role)) $("#flash button[type=submit]").textContent = "Submit flash for approval";
  }, () => {});
  $("#logout").addEventListener("submit", logout);
  window.addEventListener("aislecast:live", refreshSoon);  // hello (after each connect), ingest, campaign
  refreshSoon();  // now, not only once the live stream says hello
});

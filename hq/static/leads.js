// A campaign's leads (GET /api/campaigns/{cid}/leads, hq.leads_api): a campaign row's
// "Leads" button opens the newest LEADS_SHOWN submitted forms, newest first, with when
// and in which store, and a column per form field (the campaign's lead forms' fields in
// their order and labels, then any other field a row carries); "Download CSV" is the
// same API with format=csv (up to 5,000 rows, a column per field). Admins and marketers
// only: other roles get no button, and a 403 (say a role changed meanwhile) is said in
// the section. HQ audit-logs every read, so the view reads when opened or refreshed,
// not at each live push; the row's Leads count keeps moving meanwhile.
// Uses el/api/notify/whoami/addRowAction/$ from console.js.
"use strict";

const LEAD_READERS = new Set(["admin", "marketer"]);
const LEADS_SHOWN = 200;
const leadsView = { campaign: "", name: "" };
const leadsUrl = (cid, query) => `/api/campaigns/${encodeURIComponent(cid)}/leads?${query}`;

// [field name, header] of the campaign's lead forms, then of fields only rows have.
function leadColumns(campaign, rows) {
  const cols = new Map();
  for (const cr of campaign?.creatives ?? []) {
    if (cr.format !== "lead") continue;
    for (const f of cr.form ?? []) if (!cols.has(f.name)) cols.set(f.name, f.label || f.name);
  }
  for (const name of [...new Set(rows.flatMap((r) => Object.keys(r.fields)))].sort()) {
    if (!cols.has(name)) cols.set(name, name);
  }
  return [...cols];
}

function leadsState(text, isError) {
  const p = $("#leads-state");
  p.textContent = text;
  p.hidden = !text;
  p.classList.toggle("error", Boolean(isError));
}

function renderLeads(campaign, rows) {
  const cols = leadColumns(campaign, rows);
  const head = el("tr", {}, el("th", { scope: "col" }, "Submitted"), el("th", { scope: "col" }, "Store"),
    ...cols.map(([name, label]) => el("th", { scope: "col", "data-column": name }, label)));
  const body = rows.map((r) => {
    const at = new Date(r.ts * 1000);
    return el("tr", { "data-lead": r.id },
      el("th", { scope: "row" }, el("time", { dateTime: at.toISOString() }, at.toLocaleString())),
      el("td", { "data-field": "store" }, r.store),
      ...cols.map(([name]) => el("td", { "data-field": name }, r.fields[name] ?? "")));
  });
  $("#leads-table").replaceChildren(el("caption", { class: "sr-only" }, `Leads of ${leadsView.name}, newest first`),
    el("thead", {}, head), el("tbody", {}, ...body));
  $("#leads-table").hidden = rows.length === 0;
  $("#leads-empty").hidden = rows.length > 0;
  $("#leads-count").textContent = rows.length >= LEADS_SHOWN
    ? `The newest ${LEADS_SHOWN}; the CSV has up to 5,000.` : `${rows.length} lead${rows.length === 1 ? "" : "s"}, newest first.`;
}

async function loadLeads() {
  const cid = leadsView.campaign;
  $("#leads").dataset.loaded = "";
  try {
    const [got, campaign] = await Promise.all([api("GET", leadsUrl(cid, `limit=${LEADS_SHOWN}`)),
      api("GET", `/api/campaigns/${encodeURIComponent(cid)}`).catch(() => null)]);
    if (cid !== leadsView.campaign) return;  // another campaign was opened meanwhile
    leadsState("");
    $("#leads-csv").hidden = false;
    renderLeads(campaign, got.leads);
  } catch (err) {
    if (cid !== leadsView.campaign) return;
    $("#leads-csv").hidden = true;
    $("#leads-table").hidden = true;
    $("#leads-empty").hidden = true;
    $("#leads-count").textContent = "";
    leadsState(err.status === 403 ? "Your role may not read leads: admins and marketers can."
      : err.status === 404 ? `Campaign ${cid} no longer exists.` : `Leads could not be read: ${err.message}`, true);
  }
  $("#leads").dataset.loaded = cid;
}

function openLeads(cid, name) {
  Object.assign(leadsView, { campaign: cid, name: name || cid });
  $("#leads-of").textContent = leadsView.name;
  $("#leads-csv").href = leadsUrl(cid, "format=csv");
  $("#leads").hidden = false;
  $("#leads-h").focus();
  return loadLeads();
}

function leadsButton(tr, actions) {
  if (actions.querySelector('[data-action="leads"]')) return;
  const b = el("button", { type: "button", class: "secondary", "data-action": "leads" }, "Leads");
  b.setAttribute("aria-label", `Leads of ${tr.dataset.name}`);
  b.addEventListener("click", () => openLeads(tr.dataset.campaign, tr.dataset.name));
  actions.append(b);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#leads-refresh").addEventListener("click", () => loadLeads());
  $("#leads-close").addEventListener("click", () => { $("#leads").hidden = true; leadsView.campaign = ""; });
  whoami().then((me) => { if (LEAD_READERS.has(me.role)) addRowAction(leadsButton); }, () => {});
});

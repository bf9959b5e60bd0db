// Flash rules from feeds (hq.feeds_api): the rules that turn news items and social
// posts into flash proposals, from GET /api/feeds/rules in the order they are tried,
// with where each comes from (hq.toml, or written here). Approvers and admins add or
// replace one (PUT /api/feeds/rules/{name}) and delete those written here; HQ's 422
// names the field a bad rule gets wrong. Editors only (the others' GET is 403).
// Uses el/api/notify/whoami/$ from console.js.
"use strict";

const RULE_WRITERS = new Set(["admin", "approver"]);
const RULE_READERS = new Set(["admin", "marketer", "approver"]);
const csv = (s) => String(s ?? "").split(",").map((x) => x.trim()).filter(Boolean);

function ruleRow(row, canWrite) {
  const r = row.rule;
  const where = row.source === "config" ? "hq.toml" : row.replaces_config ? "written here (over hq.toml's)" : "written here";
  const tr = el("tr", { "data-rule": r.name },
    el("th", { scope: "row" }, r.name),
    el("td", { "data-field": "looks_for" }, [...r.keywords, ...r.entities.map((e) => `“${e}”`)].join(", ")),
    el("td", {}, r.languages.join(", ")),
    el("td", { class: "num" }, `${r.sentiment_min} … ${r.sentiment_max}`),
    el("td", { "data-field": "flash" }, `${r.flash.title} → ${r.flash.stores.join(", ")}`),
    el("td", { "data-field": "source" }, where));
  const cell = el("td", {});
  if (canWrite && row.source === "db") {
    const del = el("button", { type: "button", class: "secondary small" }, "Delete");
    del.setAttribute("aria-label", `Delete rule ${r.name}`);
    del.addEventListener("click", () => deleteRule(r.name));
    cell.append(del);
  }
  tr.append(cell);
  return tr;
}

async function loadRules() {
  const me = await whoami();
  const rows = await api("GET", "/api/feeds/rules");
  $("#rules-empty").hidden = rows.length > 0;
  $("#rules").hidden = rows.length === 0;
  $("#rules tbody").replaceChildren(...rows.map((r) => ruleRow(r, RULE_WRITERS.has(me.role))));
}

async function deleteRule(name) {
  try {
    await api("DELETE", `/api/feeds/rules/${encodeURIComponent(name)}`);
    notify(`Rule ${name} deleted.`);
    await loadRules();
  } catch (err) { notify(`Could not delete rule ${name}: ${err.message}`, true); }
}

async function saveRule(ev) {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const name = String(f.get("name") ?? "").trim();
  const rule = { name, keywords: csv(f.get("keywords")), entities: csv(f.get("entities")),
    sentiment_min: Number(f.get("sentiment_min")), sentiment_max: Number(f.get("sentiment_max")),
    flash: { title: f.get("title"), body: f.get("body") || "", stores: csv(f.get("stores")),
      validity_s: Number(f.get("minutes")) * 60 } };
  const langs = csv(f.get("languages"));
  if (langs.length) rule.languages = langs;
  try {
    await api("PUT", `/api/feeds/rules/${encodeURIComponent(name)}`, rule);
    notify(`Rule ${name} saved: it applies from the next feed round.`);
    ev.target.reset();
    await loadRules();
  } catch (err) { notify(`Rule not saved: ${err.message}`, true); }
}

async function initRules() {
  const me = await whoami();
  if (!RULE_READERS.has(me.role)) return;
  $("#feedrules").hidden = false;
  if (RULE_WRITERS.has(me.role)) {
    $("#rule-form").hidden = false;
    $("#rule-form").addEventListener("submit", saveRule);
  }
  await loadRules();
}

document.addEventListener("DOMContentLoaded", () => { initRules().catch((err) => notify(`Feed rules: ${err.message}`, true)); });

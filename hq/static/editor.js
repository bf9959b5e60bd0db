// Campaign editor: a form generated from a description of the campaign model
// (aislecast/kernel/campaign.py) plus a JSON view of the same object, saved with
// POST /api/campaigns (new) or PUT /api/campaigns/{id} (edit). HQ validates; its 422
// problems ("caps.per_day: 0 would never offer ...", msgspec's "... at `$.caps.per_day`")
// are shown next to the field they name. HQ saves nothing it refuses, so a failed edit
// leaves the live campaign as it was. Shown to editors only (admin, marketer, approver).
// Uses el/api/notify/$ from console.js.
"use strict";

const EDITORS = new Set(["admin", "marketer", "approver"]);
const WINDOW = {
  start: { t: "str", label: "From (HH:MM)", def: "00:00" },
  end: { t: "str", label: "Until (HH:MM, exclusive)", def: "24:00" },
  days: { t: "ints", label: "Weekdays (1 = Mon; empty: every day)" },
  dates: { t: "strs", label: "Dates (YYYY-MM-DD; empty: any)" },
};
const TRIGGER = {
  kind: { t: "enum", label: "Kind", options: ["enter", "dwell", "exit", "tap", "scan", "schedule", "flash"] },
  zones: { t: "strs", label: "Zones (empty: any)" },
  min_dwell_s: { t: "num", label: "Min dwell (s)", def: 0 },
  tags: { t: "strs", label: "Tags / products (empty: any)" },
};
// A lead creative's form field (aislecast/kernel/campaign.py FormField, LEAD_FIELDS)
const LEAD_FIELD = {
  name: { t: "enum", label: "Field", options: ["name", "email", "phone", "preferred_time", "party_size", "consent_contact", "note"] },
  label: { t: "str", label: "Label", def: "" },
  required: { t: "bool", label: "Required" },
};
const CREATIVE = {
  id: { t: "str", label: "Variant id", def: "a" },
  title: { t: "str", label: "Headline", def: "" },
  body: { t: "str", label: "Variant text", def: "" },
  format: { t: "enum", label: "Format", options: ["banner", "button", "landing", "coupon", "lead"] },
  cta: { t: "str", label: "Button text", def: "Open" },
  url: { t: "optstr", label: "Link (https://…)" },
  image_url: { t: "optstr", label: "Image (https://…)" },
  coupon_code: { t: "optstr", label: "Coupon code" },
  form: { t: "list", label: "Lead form field", of: LEAD_FIELD },  // format "lead" only
};
// [legend, {field: spec}]: every field of Campaign; "trigger" is the model's trigger
// followed by its extra triggers (problems name them trigger[0], trigger[1], ...).
const CAMPAIGN_FORM = [
  ["Campaign", {
    id: { t: "str", label: "Id", def: "" },
    name: { t: "str", label: "Name", def: "" },
    status: { t: "enum", label: "Status", options: ["draft", "scheduled", "live", "paused", "ended"] },
    scenario: { t: "enum", label: "Scenario", options: ["planned", "anticipated", "location", "predictive", "interaction", "flash"], def: "location" },
    stores: { t: "strs", label: "Stores (ids, comma separated)" },
    priority: { t: "int", label: "Priority (ranking)", def: 0 },
    purpose: { t: "str", label: "Consent purpose", def: "offers" },
    validity_s: { t: "num", label: "Offer valid for (s)", def: 900 },
    holdout_pct: { t: "num", label: "Holdout (%)", def: 0 },
    countdown: { t: "bool", label: "Countdown on the phone" },
  }],
  ["Triggers", { trigger: { t: "list", label: "Trigger", of: TRIGGER, min: 1 } }],
  ["Schedule", { schedule: { t: "struct", of: {
    start: { t: "time", label: "Starts (empty: now)" },
    end: { t: "time", label: "Ends (empty: open)" },
    tz: { t: "optstr", label: "Time zone (empty: the store's)" },
    windows: { t: "list", label: "Window", of: WINDOW },
  } } }],
  ["Audience", { audience: { t: "struct", of: {
    segments: { t: "strs", label: "Segments (any of)" },
    loyalty_tiers: { t: "strs", label: "Loyalty tiers" },
    min_visits: { t: "int", label: "Min visits", def: 0 },
    purposes: { t: "strs", label: "Extra consents" },
  } } }],
  ["Creatives and variants (A/B)", { creatives: { t: "list", label: "Variant", of: CREATIVE, min: 1 } }],
  ["Caps and quiet hours", { caps: { t: "struct", of: {
    per_shopper: { t: "int", label: "Per shopper per visit", def: 1 },
    per_campaign: { t: "optint", label: "Per shopper ever" },
    per_day: { t: "optint", label: "Per shopper per day" },
    per_visit_all: { t: "optint", label: "Any campaign per visit" },
    min_gap_s: { t: "num", label: "Min gap between offers (s)", def: 0 },
    quiet: { t: "list", label: "Quiet hours", of: WINDOW },
  } } }],
  ["Budget", { budget: { t: "struct", of: {
    kind: { t: "enum", label: "Budget kind", options: ["none", "impressions", "redemptions"] },
    total: { t: "int", label: "Total", def: 0 },
  } } }],
];

const editor = { role: null, loaded: null, campaigns: [] };
const fieldId = (path) => `ed-${path.replace(/[^a-z0-9_]+/gi, "-").replace(/-$/, "")}`;
const errorBox = (path) => el("p", { class: "field-error", "data-error-for": path, hidden: true });

function defaults(spec) {
  const out = {};
  for (const [k, f] of Object.entries(spec)) {
    out[k] = f.t === "struct" ? defaults(f.of) : f.t === "list" ? (f.min ? [defaults(f.of)] : [])
      : f.t === "enum" ? (f.def ?? f.options[0]) : f.t === "bool" ? false
      : f.t === "strs" || f.t === "ints" ? [] : (f.def ?? null);
  }
  return out;
}

const toLocal = (ts) => {
  if (ts === null || ts === undefined) return "";
  const d = new Date(ts * 1000);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
};

function leaf(path, f, value) {
  const id = fieldId(path);
  let input;
  if (f.t === "enum") {
    input = el("select", { id }, ...f.options.map((o) => el("option", { value: o }, o)));
    input.value = value ?? f.options[0];
  } else if (f.t === "bool") {
    input = el("input", { id, type: "checkbox", checked: Boolean(value) });
  } else if (f.t === "time") {
    input = el("input", { id, type: "datetime-local", value: toLocal(value) });
  } else {
    const num = ["num", "int", "optint"].includes(f.t);
    const text = Array.isArray(value) ? value.join(", ") : value === null || value === undefined ? "" : String(value);
    input = el("input", { id, type: num ? "number" : "text", value: text });
    if (num) input.step = f.t === "num" ? "any" : "1";
  }
  input.dataset.path = path;
  input.dataset.type = f.t;
  const wrap = el("div", { class: f.t === "bool" ? "field check" : "field" });
  const label = el("label", { htmlFor: id }, f.label);
  if (f.t === "bool") wrap.append(input, label); else wrap.append(label, input);
  wrap.append(errorBox(path));
  return wrap;
}

function group(spec, value, prefix) {
  const nodes = [];
  for (const [k, f] of Object.entries(spec)) {
    const path = prefix ? `${prefix}.${k}` : k;
    const v = value?.[k];
    if (f.t === "struct") nodes.push(el("div", { class: "struct", "data-struct": path }, errorBox(path), ...group(f.of, v ?? defaults(f.of), path)));
    else if (f.t === "list") nodes.push(listBox(path, f, v ?? []));
    else nodes.push(leaf(path, f, v));
  }
  return nodes;
}

function listBox(path, f, items) {
  const box = el("div", { class: "list", "data-list": path });
  const render = (arr) => {
    box.replaceChildren(errorBox(path), ...arr.map((item, i) => {
      const p = `${path}[${i}]`;
      const rm = el("button", { type: "button", class: "secondary small" }, `Remove ${f.label.toLowerCase()} ${i + 1}`);
      rm.disabled = arr.length <= (f.min ?? 0);
      rm.addEventListener("click", () => { const cur = readList(box, f); cur.splice(i, 1); render(cur); });
      return el("fieldset", { class: "item", "data-item": p }, el("legend", {}, `${f.label} ${i + 1}`),
        errorBox(p), ...group(f.of, item, p), rm);
    }), (() => {
      const add = el("button", { type: "button", class: "secondary small" }, `Add ${f.label.toLowerCase()}`);
      add.addEventListener("click", () => render([...readList(box, f), defaults(f.of)]));
      return add;
    })());
  };
  box.renderItems = render;
  render(items);
  return box;
}

function readLeaf(input) {
  const t = input.dataset.type, raw = input.value.trim();
  if (t === "bool") return input.checked;
  if (t === "enum" || t === "str") return input.value;
  if (t === "optstr") return raw === "" ? null : raw;
  if (t === "strs") return raw === "" ? [] : raw.split(",").map((x) => x.trim()).filter(Boolean);
  if (t === "ints") return raw === "" ? [] : raw.split(",").map((x) => Number(x.trim()));
  if (t === "time") return raw === "" ? null : new Date(raw).getTime() / 1000;
  if (t === "optint") return raw === "" ? null : Number(raw);
  return raw === "" ? 0 : Number(raw);
}

// Read the inputs under `root` into an object, by their data-path relative to `base`.
function readInto(root, spec, base) {
  const out = {};
  for (const [k, f] of Object.entries(spec)) {
    const path = base ? `${base}.${k}` : k;
    if (f.t === "struct") out[k] = readInto(root, f.of, path);
    else if (f.t === "list") out[k] = readList(root.querySelector(`[data-list="${CSS.escape(path)}"]`), f);
    else {
      const input = root.querySelector(`[data-path="${CSS.escape(path)}"]`);
      out[k] = input ? readLeaf(input) : null;
    }
  }
  return out;
}

function readList(box, f) {
  const path = box.dataset.list;
  return [...box.querySelectorAll(":scope > fieldset.item")].map((_, i) => readInto(box, f.of, `${path}[${i}]`));
}

// The campaign the form describes: the loaded one (fields HQ keeps, like budget grants,
// survive) overlaid with every field of the form.
function formCampaign() {
  const form = $("#editor-form");
  const c = structuredClone(editor.loaded ?? {});
  for (const [, spec] of CAMPAIGN_FORM) {
    const got = readInto(form, spec, "");
    for (const [k, v] of Object.entries(got)) {
      c[k] = v && typeof v === "object" && !Array.isArray(v) && c[k] ? { ...c[k], ...v } : v;
    }
  }
  const [first, ...rest] = c.trigger;
  c.trigger = first;
  c.triggers = rest;
  return c;
}

// A saved campaign that is not on air may be submitted for approval (hq.approvals).
function showSubmit() {
  const c = editor.loaded;
  $("#editor-submit").hidden = !c || c.status === "live" || c.status === "scheduled";
}

async function submitLoaded() {
  const c = editor.loaded;
  try {
    await api("POST", `/api/campaigns/${encodeURIComponent(c.id)}/submit`,
      { comment: $("#editor-submit-comment").value, status: $("#editor-submit-target").value });
    $("#editor-submit-comment").value = "";
    $("#editor-status").textContent = `Submitted “${c.name}” (${c.id}) for approval.`;
    notify(`“${c.name}” waits for an approver.`);
  } catch (err) { notify(`Could not submit ${c.id}: ${err.message}`, true); }
}

function fillForm(c) {
  showSubmit();
  const value = { ...c, trigger: [c.trigger ?? defaults(TRIGGER), ...(c.triggers ?? [])] };
  $("#editor-fields").replaceChildren(...CAMPAIGN_FORM.map(([legend, spec]) =>
    el("fieldset", { class: "group" }, el("legend", {}, legend), ...group(spec, value, ""))));
  $("#ed-id").readOnly = editor.loaded !== null;
  $("#editor-json").value = JSON.stringify(c, null, 2);
  clearErrors();
}

function clearErrors() {
  for (const p of document.querySelectorAll("#editor [data-error-for]")) { p.textContent = ""; p.hidden = true; }
  for (const i of document.querySelectorAll("#editor [aria-invalid]")) i.removeAttribute("aria-invalid");
  $("#editor-errors").replaceChildren();
  $("#editor-errors").hidden = true;
}

// Where a problem belongs: the path before its first ": " (or msgspec's "at `$.x.y`"),
// walked up until a field or group of the form has it; "creatives[ID]" is a variant id.
function problemPath(problem, c) {
  const at = problem.match(/at `\$\.?([^`]*)`/);
  let path = at ? at[1] : problem.split(": ")[0];
  path = path.replace(/^invalid Campaign$/, "").replace(/^id\/stores$/, "stores").replace(/^trigger$/, "trigger[0]");
  path = path.replace(/^triggers\[(\d+)\]/, (_, i) => `trigger[${Number(i) + 1}]`);
  path = path.replace(/^creatives\[([^\]]+)\]/, (m, key) => {
    const i = (c.creatives ?? []).findIndex((cr) => cr.id === key);
    return i >= 0 && !/^\d+$/.test(key) ? `creatives[${i}]` : m;
  });
  while (path) {
    if (document.querySelector(`#editor [data-error-for="${CSS.escape(path)}"]`)) return path;
    const up = path.replace(/(\.[^.[\]]+|\[[^\]]*\])$/, "");
    if (up === path) break;
    path = up;
  }
  return null;
}

function showErrors(problems, c) {
  clearErrors();
  const general = [];
  for (const problem of problems) {
    const path = problemPath(problem, c);
    const box = path && document.querySelector(`#editor [data-error-for="${CSS.escape(path)}"]`);
    if (!box) { general.push(problem); continue; }
    box.textContent = box.textContent ? `${box.textContent}; ${problem}` : problem;
    box.hidden = false;
    const input = document.querySelector(`#editor [data-path="${CSS.escape(path)}"]`);
    if (input) input.setAttribute("aria-invalid", "true");
  }
  const list = $("#editor-errors");
  list.replaceChildren(...general.map((p) => el("li", {}, p)));
  list.hidden = general.length === 0;
  document.querySelector("#editor .field-error:not([hidden]), #editor-errors:not([hidden])")?.scrollIntoView({ block: "center" });
}

async function save(c) {
  const edit = editor.loaded !== null;
  const url = edit ? `/api/campaigns/${encodeURIComponent(editor.loaded.id)}` : "/api/campaigns";
  const r = await fetch(url, {
    method: edit ? "PUT" : "POST", credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": csrfToken() },
    body: JSON.stringify(c),
  });
  const data = await r.json().catch(() => ({}));
  if (r.ok) {
    editor.loaded = data;
    fillForm(data);
    $("#editor-status").textContent = `Saved “${data.name}” (${data.id}), ${data.status}.`;
    notify(`Campaign “${data.name}” saved (${data.status}).`);
    loadList();
    return;
  }
  const problems = Array.isArray(data.detail) ? data.detail : [data.detail || `HTTP ${r.status}`];
  showErrors(problems, c);
  $("#editor-status").textContent = `Not saved: HQ refused it (${problems.length} problem${problems.length > 1 ? "s" : ""}); the campaign is unchanged.`;
}

async function loadList() {
  editor.campaigns = await api("GET", "/api/campaigns");
  const sel = $("#editor-pick");
  const keep = sel.value;
  sel.replaceChildren(el("option", { value: "" }, "New campaign"),
    ...editor.campaigns.map((c) => el("option", { value: c.id }, `${c.name} (${c.id})`)));
  sel.value = editor.campaigns.some((c) => c.id === keep) ? keep : "";
}

// A new campaign: the model's defaults, saved as a draft (a marketer's must be; an
// approver makes it live).
function newCampaign() {
  const c = defaults(Object.assign({}, ...CAMPAIGN_FORM.map(([, spec]) => spec)));
  return { ...c, trigger: c.trigger[0], triggers: [], status: "draft" };
}

async function pick() {
  const id = $("#editor-pick").value;
  editor.loaded = id ? await api("GET", `/api/campaigns/${encodeURIComponent(id)}`) : null;
  $("#editor-status").textContent = id ? `Editing ${id}.` : "New campaign.";
  fillForm(editor.loaded ?? newCampaign());
}

async function initEditor() {
  const me = await whoami();
  editor.role = me.role;
  document.body.dataset.role = me.role;
  if (!EDITORS.has(me.role)) return;  // read-only roles get no editor controls at all
  const panel = $("#editor");
  panel.hidden = false;
  $("#editor-pick").addEventListener("change", pick);
  $("#editor-submit-button").addEventListener("click", submitLoaded);
  $("#editor-form").addEventListener("submit", (ev) => { ev.preventDefault(); save(formCampaign()); });
  $("#editor-to-json").addEventListener("click", () => { $("#editor-json").value = JSON.stringify(formCampaign(), null, 2); });
  $("#editor-from-json").addEventListener("click", () => {
    try { fillForm(JSON.parse($("#editor-json").value)); } catch (err) { showErrors([`JSON: ${err.message}`], {}); }
  });
  $("#editor-save-json").addEventListener("click", () => {
    let c;
    try { c = JSON.parse($("#editor-json").value); } catch (err) { showErrors([`JSON: ${err.message}`], {}); return; }
    save(c);
  });
  await loadList();
  await pick();
  window.addEventListener("aislecast:live", (ev) => { if (ev.detail.kind === "campaign") loadList(); });
}

document.addEventListener("DOMContentLoaded", () => { initEditor().catch((err) => notify(`Editor: ${err.message}`, true)); });

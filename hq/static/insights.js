// Results of one campaign: the funnel over time (uPlot, hq/static/vendor), the per-variant
// A/B readout and a store × zone heat map, all from the hourly rollups:
// GET /api/analytics/funnel?campaign=ID&by=hour|variant|zone&since=T[&store=S]
// ({"rows": [{"key", ...}]}; an hour's key is its ISO 8601 start, e.g. 2026-12-01T09:00:00Z).
// Refetched when HQ pushes an ingest that names the campaign (live.js).
// Uses el/api/$ from console.js.
"use strict";

const SERIES = [
  ["impressions", "#0b5cad"], ["deliveries", "#146c2e"], ["opens", "#8a4b00"],
  ["clicks", "#a4161a"], ["redemptions", "#6f42c1"], ["taps", "#00838f"], ["scans", "#5d4037"],
  ["leads", "#c2185b"],
];
const insights = { campaign: "", hours: 24 * 7, plot: null, renderMs: null, stores: new Map() };

// Hourly rows (sparse) -> uPlot's columns: every hour from the first asked for to now.
function hourlyColumns(rows, hours, now) {
  const end = Math.floor(now / 3600) * 3600, start = end - (hours - 1) * 3600;
  const at = new Map(rows.map((r) => [Date.parse(r.key) / 1000, r]));
  const xs = [], cols = SERIES.map(() => []);
  for (let t = start; t <= end; t += 3600) {
    xs.push(t);
    const r = at.get(t);
    SERIES.forEach(([name], i) => cols[i].push(r ? r[name] ?? 0 : 0));
  }
  return [xs, ...cols];
}

function renderChart(data) {
  const box = $("#chart");
  const t0 = performance.now();
  delete box.dataset.points;  // set again once this render is on screen
  if (insights.plot) { insights.plot.destroy(); insights.plot = null; }
  const width = Math.max(320, box.clientWidth || 900);
  insights.plot = new uPlot({
    width, height: 280, title: "Funnel per hour",
    scales: { x: { time: true } },
    series: [{}, ...SERIES.map(([name, stroke]) => ({ label: name, stroke, width: 1.5 }))],
    axes: [{}, { label: "per hour" }],
  }, data, box);
  // render time: building the plot and drawing it, up to the frame that shows it
  requestAnimationFrame(() => {
    insights.renderMs = performance.now() - t0;
    box.dataset.renderMs = insights.renderMs.toFixed(1);
    box.dataset.points = String(data[0].length);
  });
}

const rate = (n, d) => (d ? n / d : 0);
// CTR with its 95 % (Wald) interval, in percent.
function ctr(clicks, deliveries) {
  if (!deliveries) return "–";
  const p = clicks / deliveries, se = Math.sqrt((p * (1 - p)) / deliveries);
  return `${(p * 100).toFixed(1)}% [${(Math.max(0, p - 1.96 * se) * 100).toFixed(1)}, ${(Math.min(1, p + 1.96 * se) * 100).toFixed(1)}]`;
}

function renderVariants(rows) {
  const best = rows.reduce((b, r) => (rate(r.clicks, r.deliveries) > rate(b?.clicks ?? 0, b?.deliveries ?? 0) ? r : b), null);
  const body = rows.map((r) => el("tr", { "data-variant": r.key },
    el("th", { scope: "row" }, r.key, r === best && rows.length > 1 ? el("span", { class: "badge live" }, "best CTR") : ""),
    ...["impressions", "deliveries", "opens", "clicks"].map((f) => el("td", { class: "num", "data-field": f }, int(r[f]))),
    el("td", { class: "num", "data-field": "ctr" }, ctr(r.clicks, r.deliveries)),
    el("td", { class: "num", "data-field": "redemptions" }, int(r.redemptions)),
    el("td", { class: "num", "data-field": "redeem_rate" }, pct(rate(r.redemptions, r.deliveries)))));
  $("#variants-empty").hidden = rows.length > 0;
  $("#variants").hidden = rows.length === 0;
  $("#variants tbody").replaceChildren(...body);
}

function renderHeatmap(rows) {
  const stores = [...new Set(rows.map((r) => r.store ?? ""))].sort();
  const zones = [...new Set(rows.map((r) => r.key))].sort();
  const max = Math.max(1, ...rows.map((r) => r.deliveries));
  const at = new Map(rows.map((r) => [`${r.store ?? ""}/${r.key}`, r]));
  const head = el("tr", {}, el("th", { scope: "col" }, "Store"), ...zones.map((z) => el("th", { scope: "col", class: "num" }, z)));
  const body = stores.map((s) => el("tr", { "data-heat-store": s }, el("th", { scope: "row" }, s || "–"), ...zones.map((z) => {
    const n = at.get(`${s}/${z}`)?.deliveries ?? 0;
    const td = el("td", { class: "num heat", "data-zone": z }, int(n));
    td.style.setProperty("--heat", String(n / max));
    td.title = `${n} deliveries in ${z} at ${s}`;
    return td;
  })));
  $("#heatmap-empty").hidden = rows.length > 0;
  $("#heatmap").hidden = rows.length === 0;
  $("#heatmap").replaceChildren(el("caption", { class: "sr-only" }, "Deliveries per store and zone"),
    el("thead", {}, head), el("tbody", {}, ...body));
}

async function loadInsights() {
  const id = insights.campaign;
  $("#results-body").hidden = !id;
  if (!id) return;
  const since = Math.floor(Date.now() / 3600000) * 3600 - (insights.hours - 1) * 3600;
  const q = (by, store) => api("GET", `/api/analytics/funnel?campaign=${encodeURIComponent(id)}&by=${by}&since=${since}`
    + (store ? `&store=${encodeURIComponent(store)}` : ""));
  // the heat map: one zone breakdown per store of the campaign (each row tagged with it)
  const stores = insights.stores.get(id) ?? [];
  const perStore = stores.map((s) => q("zone", s).then((a) => a.rows.map((r) => ({ ...r, store: s }))));
  const [hours, variants, ...zoneLists] = await Promise.all([q("hour"), q("variant"), ...perStore]);
  const zones = { rows: zoneLists.flat() };
  if (id !== insights.campaign) return;  // another campaign was picked meanwhile
  renderChart(hourlyColumns(hours.rows, insights.hours, Date.now() / 1000));
  renderVariants(variants.rows);
  renderHeatmap(zones.rows);
  $("#results").dataset.loaded = id;
}
const loadInsightsSoon = coalesced(() => loadInsights().catch((err) => notify(`Results: ${err.message}`, true)));

// The charts' queries scan more than the table's: on connect and on ingest they wait
// CHART_DELAY_MS, so the table's numbers come first, and a burst of batches costs one
// reload. Picking a campaign or a period loads at once.
const CHART_DELAY_MS = 400;
let chartTimer = null;
function chartsLater() {
  if (chartTimer === null) chartTimer = setTimeout(() => { chartTimer = null; loadInsightsSoon(); }, CHART_DELAY_MS);
}

async function listResults() {
  const list = await api("GET", "/api/campaigns");
  insights.stores = new Map(list.map((c) => [c.id, c.stores ?? []]));
  const sel = $("#results-campaign");
  const keep = sel.value || insights.campaign;
  sel.replaceChildren(el("option", { value: "" }, "Choose a campaign"),
    ...list.map((c) => el("option", { value: c.id }, `${c.name} (${c.id})`)));
  sel.value = list.some((c) => c.id === keep) ? keep : (list[0]?.id ?? "");
  if (sel.value !== insights.campaign) { insights.campaign = sel.value; chartsLater(); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#results-campaign").addEventListener("change", (ev) => { insights.campaign = ev.target.value; loadInsightsSoon(); });
  $("#results-range").addEventListener("change", (ev) => { insights.hours = Number(ev.target.value); loadInsightsSoon(); });
  window.addEventListener("aislecast:live", (ev) => {
    const d = ev.detail;
    if (d.kind === "hello" || d.kind === "campaign") listResults().catch(() => {});
    if (d.kind === "hello") chartsLater();
    else if (d.all || (d.campaigns ?? []).includes(insights.campaign)) chartsLater();
  });
});

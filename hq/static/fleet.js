// Store health (hq.fleet_health): per store, its beacons as the gateways report them
// (TLM battery, unheard) from GET /api/stores/{id}/health, refreshed on gateway changes.
// Uses el/api/$ from console.js and coalesced from live.js.

function beaconRow(b) {
  const state = !b.reported ? "unknown" : b.unheard ? "offline" : "online";
  const word = !b.reported ? "not reported" : b.unheard ? "unheard" : "heard";
  return el("tr", { "data-beacon": b.id },
    el("th", { scope: "row" }, b.id), el("td", {}, b.zone),
    el("td", {}, el("span", { class: `badge ${state}`, "data-field": "heard" }, word)),
    el("td", {}, b.heard_by ?? "—"),
    el("td", { class: "num" }, b.rssi ?? "—"),
    el("td", { class: `num${b.low_battery ? " low" : ""}`, "data-field": "battery" },
      b.battery_mv == null ? "—" : `${b.battery_mv} mV (${b.battery_percent}%)`));
}

function storeHealth(h) {
  const gws = h.gateways.map((g) => `${g.gateway}: ${g.status}, bundle v${g.bundle_version}${g.behind ? " (behind)" : ""}`);
  const head = el("tr", {}, ...["Beacon", "Zone", "Heard", "By"].map((t) => el("th", { scope: "col" }, t)),
    ...["RSSI", "Battery"].map((t) => el("th", { scope: "col", class: "num" }, t)));
  return el("div", { class: "store", "data-store-health": h.store },
    el("h3", {}, `${h.store} `, el("span", { class: "muted" }, `HQ bundle v${h.bundle_version}`)),
    el("p", { class: "muted", "data-field": "gateways" }, gws.length ? gws.join(" · ") : "No gateway has reported yet."),
    h.beacons.length
      ? el("table", {}, el("caption", { class: "sr-only" }, `Beacons of ${h.store}`), el("thead", {}, head),
        el("tbody", {}, ...h.beacons.map(beaconRow)))
      : el("p", { class: "muted" }, "No beacons."));
}

async function refreshHealth() {
  try {
    const stores = await api("GET", "/api/stores");
    const all = await Promise.all(stores.map((s) => api("GET", `/api/stores/${encodeURIComponent(s.id)}/health`)));
    $("#health-empty").hidden = all.length > 0;
    $("#health").replaceChildren(...all.map(storeHealth));
  } catch (err) {
    // console.js reports HQ unreachable; keep the last table
  }
}
const refreshHealthSoon = coalesced(refreshHealth);

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("aislecast:live", (ev) => {
    const k = ev.detail.kind;
    if (k === "hello" || k === "gateway") refreshHealthSoon();
  });
  refreshHealthSoon();
});

// Schedule calendar: per store, this week (Monday to Sunday) with one row per campaign
// and, per day, the local hours it may run: its schedule windows (store time), cut by
// its absolute start and end. Drafts, paused and ended campaigns are listed greyed out.
// Refetched when a campaign changes (live.js). Uses el/api/$ from console.js.
"use strict";

const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

function weekDates(now = new Date()) {
  const monday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - ((now.getDay() + 6) % 7));
  return DAYS.map((_, i) => new Date(monday.getFullYear(), monday.getMonth(), monday.getDate() + i));
}
const isoDate = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;

// The windows of `c` on local date `d` (ISO weekday `wd`), as "HH:MM–HH:MM" strings;
// [] when it does not run that day.
function runsOn(c, d, wd) {
  const s = c.schedule ?? {};
  const dayStart = d.getTime() / 1000, dayEnd = dayStart + 86400;
  if ((s.start !== null && s.start !== undefined && s.start >= dayEnd) ||
      (s.end !== null && s.end !== undefined && s.end <= dayStart)) return [];
  const windows = s.windows?.length ? s.windows : [{ start: "00:00", end: "24:00", days: [], dates: [] }];
  return windows.filter((w) => (!w.days?.length || w.days.includes(wd)) && (!w.dates?.length || w.dates.includes(isoDate(d))))
    .map((w) => (w.start === "00:00" && w.end === "24:00" ? "all day" : `${w.start}–${w.end}`));
}

function storeWeek(store, campaigns, dates) {
  const mine = campaigns.filter((c) => c.stores.includes(store.id));
  const head = el("tr", {}, el("th", { scope: "col" }, "Campaign"),
    ...dates.map((d, i) => el("th", { scope: "col" }, `${DAYS[i]} ${d.getDate()}`)));
  const rows = mine.map((c) => {
    const active = c.status === "live" || c.status === "scheduled";
    return el("tr", { "data-calendar-campaign": c.id, class: active ? "" : "inactive" },
      el("th", { scope: "row" }, c.name, el("span", { class: "sub" }, c.status)),
      ...dates.map((d, i) => {
        const spans = runsOn(c, d, i + 1);
        return el("td", { class: spans.length ? "runs" : "", "data-day": String(i + 1) }, spans.join(", "));
      }));
  });
  return el("div", { class: "store-week", "data-calendar-store": store.id },
    el("h3", {}, `${store.name} `, el("span", { class: "muted" }, `${store.id} · times in ${store.tz || "store time"}`)),
    rows.length ? el("div", { class: "scroll" }, el("table", { class: "calendar" },
      el("caption", { class: "sr-only" }, `This week's campaigns at ${store.name}`),
      el("thead", {}, head), el("tbody", {}, ...rows)))
      : el("p", { class: "muted" }, "No campaign targets this store."));
}

async function loadCalendar() {
  const [campaigns, stores] = await Promise.all([api("GET", "/api/campaigns"), api("GET", "/api/console/stores")]);
  const dates = weekDates();
  $("#calendar-empty").hidden = stores.stores.length > 0;
  $("#calendar").replaceChildren(...stores.stores.map((s) => storeWeek(s, campaigns, dates)));
}
const loadCalendarSoon = coalesced(() => loadCalendar().catch((err) => notify(`Calendar: ${err.message}`, true)));

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("aislecast:live", (ev) => {
    if (ev.detail.kind === "hello" || ev.detail.kind === "campaign") loadCalendarSoon();
  });
});

// Live updates: one EventSource on /api/live (server-sent events, the session cookie
// authenticates it). Every notification is re-dispatched on window as the DOM event
// "aislecast:live" ({kind: "hello" | "ingest" | "campaign" | "approval" | "gateway", ...data}); the panels
// refetch what they show. No polling: a reconnect after a drop is EventSource's own
// (HQ asks for 2 s); a stream that HQ refused (503 when full, 401 when logged out) is
// retried here, and the header says "offline" meanwhile.
"use strict";

const LIVE_URL = "/api/live";
const LIVE_RETRY_MS = 5000;

// Back to the login page, once: after a logout or an expired session several callers
// (the logout button, a panel's 401, the live stream's 401) may ask at nearly the same
// time, and a second navigation would abort the first.
let leaving = false;
function toLogin() {
  if (leaving) return;
  leaving = true;
  window.location.assign("/console/login");
}

const live = {
  source: null,
  online: false,
  last: null,  // the last notification's detail (tests and the benchmark read it)
  status(text, offline) {
    const u = document.querySelector("#live");
    if (!u) return;
    u.textContent = text;
    u.dataset.state = offline ? "offline" : "online";
  },
  dispatch(kind, ev) {
    let data = {};
    try { data = JSON.parse(ev.data); } catch { /* a bad frame is only a hint to refetch */ }
    live.last = { kind, ...data };
    window.dispatchEvent(new CustomEvent("aislecast:live", { detail: live.last }));
  },
  connect() {
    const src = new EventSource(LIVE_URL, { withCredentials: true });
    live.source = src;
    src.addEventListener("open", () => { live.online = true; live.status("Live", false); });
    for (const kind of ["hello", "ingest", "campaign", "approval", "gateway"]) {
      src.addEventListener(kind, (ev) => live.dispatch(kind, ev));
    }
    src.addEventListener("error", () => {
      live.online = false;
      live.status("Offline: reconnecting…", true);
      if (src.readyState === EventSource.CLOSED) {  // refused: EventSource gives up, we do not
        src.close();
        setTimeout(() => fetch("/api/me", { credentials: "same-origin" }).then((r) => {
          if (r.status === 401) toLogin();
          else live.connect();
        }, () => live.connect()), LIVE_RETRY_MS);
      }
    });
  },
};

// Coalesce: a burst of notifications runs `fn` once now and once more when it ends.
function coalesced(fn) {
  let running = false, again = false;
  return async function run() {
    if (running) { again = true; return; }
    running = true;
    try { await fn(); } finally {
      running = false;
      if (again) { again = false; run(); }
    }
  };
}

document.addEventListener("DOMContentLoaded", () => live.connect());

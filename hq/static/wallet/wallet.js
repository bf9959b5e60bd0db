// The aislecast web wallet (docs/architecture.md#wallet): enrol with consent, receive
// offers over MQTT on secure WebSockets (persistent session), feedback acknowledged end
// to end, shelf tag taps and label scans reported like the reference phone
// (aislecast/apps/phone.py), a member code and the privacy controls.
"use strict";

(() => {
  const STORAGE_KEY = "aislecast.wallet.v1";
  const PREFIX = "px/v1";
  const SCHEMA_VERSION = 1;
  const ACK_TIMEOUT_MS = 10000; // as the Python phone: resend unacknowledged feedback
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const SESSION_EXPIRY_S = 86400; // as aislecast.kernel.const.MQTT_SESSION_EXPIRY_S
  const DONE_KEPT = 500; // offer ids remembered after they leave (QoS 1 redelivery)
  const FIELD_RE = /^[\x21-\x7e]{1,64}$/;
  const ID_RE = /^[0-9A-Za-z_-]{1,64}$/;
  const CODE_RE = /^[0-9A-Za-z]{4,16}$/;
  const PURPOSE_TEXT = {
    offers: "Proximity offers",
    personalisation: "Personalisation",
    analytics: "Analytics",
  };

  const $ = (id) => document.getElementById(id);
  const stats = {
    offers_shown: 0, offers_late: 0, expired_on_load: 0, duplicates: 0, bad_payloads: 0,
    feedback_sent: 0, feedback_resent: 0, feedback_acked: 0, interactions: 0, connects: 0,
    latencies_ms: [],
  };
  let config = { broker_url: null, purposes: ["offers", "personalisation", "analytics"] };
  let client = null;
  let backoffMs = BACKOFF_MIN_MS;
  let retryTimer = null;
  let stopped = false;

  // ---- state (localStorage: see docs/architecture.md#wallet for the trade-off) --------
  function load() {
    try {
      const s = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
      if (s && s.enrolment && typeof s.enrolment.inbox === "string") {
        s.offers = s.offers || {};
        s.unacked = s.unacked || {};
        s.done = s.done || [];
        return s;
      }
    } catch (err) {
      console.warn("wallet state unreadable: starting afresh", err);
    }
    return null;
  }

  let state = load();

  function save() {
    clearTimeout(saveTimer);
    saveTimer = null;
    if (state) localStorage.setItem(STORAGE_KEY, JSON.stringify(state));
  }

  // Offers and feedback arrive in bursts: one write per burst, not one per message
  // (localStorage is synchronous and the state grows with the offers on show).
  let saveTimer = null;
  function saveSoon() {
    if (saveTimer === null) saveTimer = setTimeout(save, 50);
  }

  function notice(text) {
    const n = $("notice");
    n.textContent = text;
    n.hidden = !text;
  }

  function setStatus(kind, text) {
    const s = $("status");
    s.dataset.state = kind;
    s.textContent = text;
  }

  // ---- HTTP -----------------------------------------------------------------------------
  async function getJson(path) {
    const r = await fetch(path, { credentials: "omit", cache: "no-store" });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  // A call as the shopper: the shopper's own API token (kind "shopper") that enrolment
  // returned, for this inbox only. Returns {ok, status, body}.
  async function asShopper(method, path, body) {
    const token = state.enrolment.api_token;
    if (typeof token !== "string" || !token) {
      return { ok: false, status: 0, body: { detail: "this wallet has no shopper token: join again" } };
    }
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method, headers, credentials: "omit", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let parsed = null;
    try { parsed = await r.json(); } catch (err) { parsed = null; }
    return { ok: r.ok, status: r.status, body: parsed };
  }

  function refusal(res) {
    const why = res.body && (res.body.detail || res.body.reason);
    return `HQ answered ${res.status}${why ? ": " + (typeof why === "string" ? why : JSON.stringify(why)) : ""}`;
  }

  // ---- enrolment ------------------------------------------------------------------------
  async function showEnrol() {
    $("enrol").hidden = false;
    $("wallet").hidden = true;
    setStatus("idle", "not joined");
    const box = $("stores");
    try {
      const { stores } = await getJson("/wallet/stores");
      $("stores-empty").hidden = stores.length > 0;
      for (const s of stores) {
        const label = document.createElement("label");
        const input = document.createElement("input");
        input.type = "checkbox";
        input.name = "store";
        input.value = s.id;
        label.append(input, " " + s.name);
        box.append(label);
      }
    } catch (err) {
      notice(`Cannot list the stores: ${err.message}`);
    }
  }

  async function join() {
    const consents = Array.from(document.querySelectorAll('input[name="purpose"]:checked'), (i) => i.value);
    const stores = Array.from(document.querySelectorAll('input[name="store"]:checked'), (i) => i.value);
    $("join").disabled = true;
    try {
      const r = await fetch("/wallet/enroll", {
        method: "POST", credentials: "omit", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ consents, stores }),
      });
      const body = await r.json();
      if (!r.ok) throw new Error(refusal({ status: r.status, body }));
      state = { enrolment: body, offers: {}, unacked: {}, done: [], paused: false };
      save();
      notice("");
      startWallet();
    } catch (err) {
      notice(`Could not join: ${err.message}`);
    } finally {
      $("join").disabled = false;
    }
  }

  // ---- MQTT -------------------------------------------------------------------------------
  const topic = {
    offers: () => `${PREFIX}/shoppers/${state.enrolment.inbox}/offers`,
    feedback: () => `${PREFIX}/shoppers/${state.enrolment.inbox}/feedback`,
    ack: () => `${PREFIX}/shoppers/${state.enrolment.inbox}/feedback/ack`,
    interactions: (store) => `${PREFIX}/stores/${store}/interactions/${state.enrolment.inbox}`,
  };

  function connect() {
    if (!config.broker_url) {
      setStatus("offline", "offline");
      notice("This HQ has no broker address for wallets yet (ask the operator).");
      return;
    }
    const e = state.enrolment;
    setStatus("connecting", "connecting");
    // a fixed client id (the broker forces it to the username anyway) and clean: false:
    // the broker keeps the subscriptions and queues offers while the page is closed
    client = mqtt.connect(config.broker_url, {
      clientId: e.broker_username, username: e.broker_username, password: e.broker_password,
      clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: SESSION_EXPIRY_S },
      reconnectPeriod: 0, connectTimeout: 10000, keepalive: 30, timerVariant: "native",
    });
    client.on("connect", onConnect);
    client.on("message", onMessage);
    client.on("close", onClose);
    client.on("error", (err) => {
      if (err && (err.code === 134 || err.code === 135 || err.code === 4 || err.code === 5)) {
        setStatus("refused", "refused");
        notice("The broker refused this wallet's login (opted out or erased?).");
      }
    });
  }

  function onConnect() {
    stats.connects += 1;
    client.subscribe([topic.offers(), topic.ack()], { qos: 1 }, (err) => {
      if (err) {
        notice(`Could not subscribe: ${err.message}`);
        return;
      }
      backoffMs = BACKOFF_MIN_MS;
      setStatus("online", "online");
      for (const [fid, entry] of Object.entries(state.unacked)) sendFeedback(fid, entry);
    });
  }

  function onClose() {
    if (stopped) return;
    const wait = Math.round(backoffMs * (0.5 + Math.random() / 2)); // jittered
    backoffMs = Math.min(BACKOFF_MAX_MS, backoffMs * 2);
    if ($("status").dataset.state !== "refused") {
      setStatus("offline", `offline, retrying in ${Math.ceil(wait / 1000)} s`);
    }
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => {
      if (!stopped && client) {
        setStatus("connecting", "connecting");
        client.reconnect();
      }
    }, wait);
  }

  function stopMqtt() {
    stopped = true;
    clearTimeout(retryTimer);
    if (client) client.end(true);
    client = null;
  }

  function onMessage(t, payload) {
    let msg;
    try {
      msg = JSON.parse(new TextDecoder().decode(payload));
    } catch (err) {
      stats.bad_payloads += 1;
      return;
    }
    if (t === topic.ack()) {
      if (!msg || !Array.isArray(msg.ids)) { stats.bad_payloads += 1; return; }
      for (const id of msg.ids) {
        if (state.unacked[id]) {
          delete state.unacked[id];
          stats.feedback_acked += 1;
        }
      }
      saveSoon();
      return;
    }
    onOffer(msg);
  }

  // ---- offers -------------------------------------------------------------------------------
  function validOffer(o) {
    return o && typeof o === "object" && typeof o.id === "string" && ID_RE.test(o.id)
      && typeof o.title === "string" && typeof o.expires_at === "number"
      && typeof o.issued_at === "number" && typeof o.store === "string"
      && typeof o.campaign === "string";
  }

  function onOffer(o) {
    const now = Date.now();
    if (!validOffer(o) || o.inbox !== state.enrolment.inbox) { stats.bad_payloads += 1; return; }
    if (state.offers[o.id] || state.done.includes(o.id)) { stats.duplicates += 1; return; }
    if (o.expires_at * 1000 <= now) { stats.offers_late += 1; return; } // never shown
    if (state.paused) { remember(o.id); return; } // paused: not shown
    state.offers[o.id] = o;
    renderOffer(o);
    stats.offers_shown += 1;
    stats.latencies_ms.push(Date.now() - o.issued_at * 1000);
    saveSoon();
    feedback(o, "delivered");
  }

  function remember(id) {
    state.done.push(id);
    if (state.done.length > DONE_KEPT) state.done.splice(0, state.done.length - DONE_KEPT);
  }

  function removeOffer(id) {
    delete state.offers[id];
    remember(id);
    save();
    const card = document.querySelector(`.offer[data-offer="${id}"]`);
    if (card) card.remove();
    $("offers-empty").hidden = Object.keys(state.offers).length > 0;
  }

  function button(text, onClick, label) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    if (label) b.setAttribute("aria-label", label);
    b.addEventListener("click", onClick);
    return b;
  }

  function renderOffer(o) {
    const card = document.createElement("article");
    card.className = "offer";
    card.dataset.offer = o.id;
    card.dataset.campaign = o.campaign;
    card.dataset.shownAt = String(Date.now());
    const h = document.createElement("h3");
    h.textContent = o.title;
    const body = document.createElement("p");
    body.className = "body";
    body.textContent = o.body || "";
    body.hidden = true;
    const when = document.createElement("p");
    if (o.countdown) {
      when.className = "countdown";
      when.dataset.expires = String(o.expires_at);
    } else {
      when.className = "valid";
      when.textContent = `valid until ${new Date(o.expires_at * 1000).toLocaleTimeString()}`;
    }
    const actions = document.createElement("div");
    actions.append(
      button(o.cta || "Open", () => {
        if (body.hidden) { body.hidden = false; feedback(o, "opened"); }
        else if (o.url && /^https:\/\//.test(o.url)) { feedback(o, "clicked"); window.open(o.url, "_blank", "noopener"); }
        else feedback(o, "clicked");
      }, `Open ${o.title}`),
      button("Redeem", () => redeem(o), `Redeem ${o.title}`),
      button("Dismiss", () => { feedback(o, "dismissed"); removeOffer(o.id); }, `Dismiss ${o.title}`),
    );
    card.append(h, when, body, actions);
    if (o.format === "lead" && o.form && o.form.length) card.append(AislecastLead.form(o, (f) => feedback(o, "lead", f)));
    $("offers").prepend(card);
    $("offers-empty").hidden = true;
    tick();
  }

  function tick() {
    const now = Date.now();
    for (const [id, o] of Object.entries(state ? state.offers : {})) {
      if (o.expires_at * 1000 <= now) { removeOffer(id); continue; }
    }
    for (const el of document.querySelectorAll(".countdown[data-expires]")) {
      const left = Math.max(0, Math.ceil(Number(el.dataset.expires) - now / 1000));
      const m = Math.floor(left / 60);
      const s = String(left % 60).padStart(2, "0");
      el.textContent = `ends in ${m}:${s}`;
    }
  }

  // ---- QR codes -----------------------------------------------------------------------------
  function drawQr(canvas, text) {
    const qr = qrcode(0, "M");
    qr.addData(text);
    qr.make();
    const n = qr.getModuleCount();
    const quiet = 4;
    const cell = Math.max(2, Math.floor(canvas.width / (n + 2 * quiet)));
    const size = cell * (n + 2 * quiet);
    canvas.width = canvas.height = size;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, size, size);
    ctx.fillStyle = "#000";
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < n; c++) {
        if (qr.isDark(r, c)) ctx.fillRect((c + quiet) * cell, (r + quiet) * cell, cell, cell);
      }
    }
  }

  // The code the till reads: the offer's single-use redeem_code (the gateway mints one
  // per offer), else the creative's coupon_code (a gateway without a redemption key).
  function redemptionCode(o) {
    for (const c of [o.redeem_code, o.coupon_code]) if (typeof c === "string" && c) return c;
    return null;
  }

  function redeem(o) {
    const code = redemptionCode(o);
    if (code === null) { notice("This offer has no code to show at the till."); return; }
    drawQr($("redeem-qr"), code);
    $("redeem-code").textContent = code;
    $("redeem").hidden = false;
    $("redeem").dataset.offer = o.id;
    feedback(o, "redeemed");
  }

  // ---- feedback (acknowledged end to end, as aislecast/apps/phone.py) -------------------
  function feedback(o, kind, fields) {
    const fb = {
      v: SCHEMA_VERSION, id: AislecastTokens.randomId(), offer: o.id, campaign: o.campaign,
      store: o.store, inbox: state.enrolment.inbox, kind, ts: Date.now() / 1000,
    };
    if (fields) fb.fields = fields; // a lead's form (lead.js)
    const entry = { sent: Date.now(), payload: JSON.stringify(fb) };
    state.unacked[fb.id] = entry;
    saveSoon();
    stats.feedback_sent += 1;
    sendFeedback(fb.id, entry);
  }

  function sendFeedback(fid, entry) {
    if (!client || !client.connected) return; // sent on the next connect
    entry.sent = Date.now();
    client.publish(topic.feedback(), entry.payload, { qos: 1 });
  }

  function resend() {
    const now = Date.now();
    for (const [fid, entry] of Object.entries(state.unacked)) {
      if (now - entry.sent >= ACK_TIMEOUT_MS && client && client.connected) {
        stats.feedback_resent += 1;
        sendFeedback(fid, entry);
      }
    }
  }

  // ---- tap and scan -----------------------------------------------------------------------
  function currentStore() {
    const recent = Object.values(state.offers).sort((a, b) => b.issued_at - a.issued_at)[0];
    if (recent) return recent.store;
    return (state.enrolment.stores || [])[0] || null;
  }

  // Report a shelf tag's or label's URL (https://HQ/s/CODE?src=nfc&t=TAG) as the Python
  // phone does: an InteractionReport with the current rotating token on the store's
  // interactions topic. `record` is what our aislecast.io:tag NDEF record said.
  async function reportInteraction(url, kind, record) {
    let parsed;
    try { parsed = new URL(url, location.href); } catch (err) { return { error: "not a link" }; }
    const m = parsed.pathname.match(/\/s\/([^/]+)$/);
    const code = m && CODE_RE.test(m[1]) ? m[1] : null;
    const tag = parsed.searchParams.get("t") || (record && record.id) || code;
    if (!tag || !FIELD_RE.test(tag)) return { error: "not an aislecast shelf tag or label" };
    const store = currentStore();
    if (!store) return { error: "choose a home store first" };
    const e = state.enrolment;
    const report = {
      v: SCHEMA_VERSION, id: AislecastTokens.randomId(), kind, tag, ts: Date.now() / 1000,
      token: await AislecastTokens.eidFor(e.identity_key, Date.now() / 1000, e.rotation_k),
    };
    if (code) report.code = code;
    if (record && record.z && FIELD_RE.test(record.z)) report.zone = record.z;
    if (record && record.p && FIELD_RE.test(record.p)) report.product = record.p;
    if (!client || !client.connected) return { error: "offline: try again when online" };
    client.publish(topic.interactions(store), JSON.stringify(report), { qos: 1 });
    stats.interactions += 1;
    if (kind === "scan" && code && parsed.origin === location.origin) {
      // HQ counts the label's scan at its short link, as a camera app opening it would
      fetch(parsed.href, { redirect: "manual", credentials: "omit" }).catch(() => {});
    }
    return { report, store };
  }

  async function showSenses() {
    const s = await AislecastSense.senses();
    $("nfc-start").hidden = !s.nfc;
    $("scan-start").hidden = !s.camera;
    const status = $("sense-status");
    status.dataset.nfc = String(s.nfc);
    status.dataset.camera = String(s.camera);
    if (!s.nfc && !s.camera) {
      status.textContent = "This device has neither NFC tag reading nor a camera: tapping and scanning are not available here.";
    } else if (!s.nfc) {
      status.textContent = "This device cannot read NFC tags; scan the shelf label's QR code instead.";
    } else {
      status.textContent = "Tap a shelf tag or scan its label.";
    }
  }


  // ---- member code and privacy --------------------------------------------------------------
  // The member id a till reads from the member QR: HQ issues it (once per shopper) and
  // the wallet keeps it with the enrolment.
  async function showMember() {
    if (!state.member) {
      const res = await asShopper("POST", `/api/shoppers/${state.enrolment.inbox}/member`);
      if (!res.ok || !res.body || typeof res.body.member !== "string") {
        $("member-qr").hidden = true;
        $("member-id").textContent = `No member code: ${refusal(res)}`;
        return;
      }
      state.member = res.body.member;
      save();
    }
    $("member-qr").hidden = false;
    drawQr($("member-qr"), state.member);
    $("member-id").textContent = state.member;
  }

  function renderPrivacy() {
    const box = $("consents");
    box.replaceChildren();
    const granted = new Set(state.enrolment.consents || []);
    for (const p of config.purposes) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.dataset.purpose = p;
      input.checked = granted.has(p);
      input.addEventListener("change", () => setConsent(p, input));
      label.append(input, " " + (PURPOSE_TEXT[p] || p));
      box.append(label);
    }
    $("pause").checked = !!state.paused;
  }

  function say(text) {
    $("privacy-status").textContent = text;
  }

  // The consents HQ holds now: every switch shows what HQ answered, never a guess.
  function showConsents(consents) {
    state.enrolment.consents = consents;
    save();
    for (const input of document.querySelectorAll("#consents input[data-purpose]")) {
      input.checked = consents.includes(input.dataset.purpose);
    }
  }

  async function refreshConsents() {
    const res = await asShopper("GET", `/api/shoppers/${state.enrolment.inbox}/consent`);
    if (res.ok && res.body && Array.isArray(res.body.consents)) showConsents(res.body.consents);
  }

  // One purpose changed: one POST {purpose, granted}. Withdrawing "offers" is the
  // opt-out: HQ tells the stores' gateways, which stop resolving this wallet's tokens.
  async function setConsent(purpose, input) {
    const granted = input.checked;
    input.disabled = true;
    try {
      const res = await asShopper("POST", `/api/shoppers/${state.enrolment.inbox}/consent`,
        { purpose, granted });
      if (!res.ok || !res.body || !Array.isArray(res.body.consents)) {
        input.checked = !granted;
        say(`Not changed: ${refusal(res)}`);
        return;
      }
      showConsents(res.body.consents);
      const now = res.body.consents.includes(purpose);
      say(`${PURPOSE_TEXT[purpose] || purpose}: ${now ? "allowed" : "withdrawn"}.`);
    } finally {
      input.disabled = false;
    }
  }

  // Pausing is this device's alone: HQ is not told, offers still arrive and are not shown.
  function setPaused() {
    state.paused = $("pause").checked;
    save();
    say(state.paused ? "Offers paused on this device (HQ still sends them; withdraw proximity offers to stop them)."
      : "Offers resumed on this device.");
  }

  function download(name, obj) {
    const blob = new Blob([JSON.stringify(obj, null, 2)], { type: "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  async function exportData() {
    const res = await asShopper("GET", `/api/shoppers/${state.enrolment.inbox}/export`);
    const { broker_password: _, identity_key: __, api_token: ___, ...enrolment } = state.enrolment;
    const local = { enrolment, offers: Object.values(state.offers), paused: !!state.paused };
    if (res.ok) {
      download("aislecast-my-data.json", { hq: res.body, this_device: local });
      say("Exported what HQ and this device hold about you.");
    } else {
      download("aislecast-my-data.json", { hq: null, this_device: local });
      say(`Exported what this device holds; HQ's copy is not available (${refusal(res)}).`);
    }
  }

  function forget() {
    stopMqtt();
    state = null;
    clearTimeout(saveTimer);  // a write queued for the old state must not bring it back
    saveTimer = null;
    for (const k of Object.keys(localStorage)) {
      if (k.startsWith("aislecast.")) localStorage.removeItem(k);
    }
  }

  async function erase() {
    const res = await asShopper("DELETE", `/api/shoppers/${state.enrolment.inbox}`);
    if (!res.ok) { say(`Not erased: ${refusal(res)}`); return; }
    forget();
    setStatus("idle", "erased");
    $("wallet").hidden = true;
    notice("Erased: HQ deleted your data and this device forgot you.");
  }

  // ---- start ---------------------------------------------------------------------------------
  function startWallet() {
    $("enrol").hidden = true;
    $("wallet").hidden = false;
    const now = Date.now();
    for (const [id, o] of Object.entries(state.offers)) {
      if (o.expires_at * 1000 <= now) { // expired while the page was closed: never shown
        stats.expired_on_load += 1;
        delete state.offers[id];
        remember(id);
      }
    }
    save();
    Object.values(state.offers).sort((a, b) => a.issued_at - b.issued_at).forEach(renderOffer);
    $("offers-empty").hidden = Object.keys(state.offers).length > 0;
    renderPrivacy();
    showMember();
    refreshConsents();
    showSenses();
    stopped = false;
    connect();
  }

  function wire() {
    $("join").addEventListener("click", join);
    $("redeem-close").addEventListener("click", () => { $("redeem").hidden = true; });
    const say = (text) => { $("sense-status").textContent = text; };
    $("nfc-start").addEventListener("click", () => AislecastSense.startNfc(reportInteraction, say));
    $("scan-start").addEventListener("click", () => AislecastSense.startScan($("scan-video"), reportInteraction, say));
    $("pause").addEventListener("change", setPaused);
    $("export").addEventListener("click", exportData);
    $("erase").addEventListener("click", erase);
    setInterval(tick, 250);
    window.addEventListener("pagehide", () => { if (saveTimer !== null) save(); });
    setInterval(() => { if (state) resend(); }, ACK_TIMEOUT_MS / 2);
    window.addEventListener("online", () => { if (client && !client.connected) { clearTimeout(retryTimer); client.reconnect(); } });
  }

  async function main() {
    wire();
    if ("serviceWorker" in navigator) {
      navigator.serviceWorker.register("/wallet/sw.js", { scope: "/wallet/" }).catch((err) => {
        console.warn("service worker not registered", err);
      });
    }
    try {
      config = await getJson("/wallet/config");
    } catch (err) {
      notice(`Cannot reach HQ: ${err.message}`);
    }
    if (state) startWallet(); else showEnrol();
  }

  // for tests and the benchmark: read-only views and the same report path a tag uses
  window.aislecastWallet = {
    stats,
    state: () => state,
    token: (unixTs) => AislecastTokens.eidFor(state.enrolment.identity_key, unixTs, state.enrolment.rotation_k),
    reportInteraction,
    senses: () => AislecastSense.senses(),
    memberId: () => (state && state.member) || null,
  };

  main();
})();

// Approvals (hq.approvals): the campaigns and flash messages waiting for an approver,
// from GET /api/approvals?state=submitted, each with who submitted it, when, and what
// would go live (creatives, stores, schedule). Approvers and admins get a comment box
// with Approve and Reject (POST /api/campaigns/{id}/approve|reject); a marketer sees
// the queue without them, and the state of their own submissions. HQ enforces the
// roles either way (a marketer's approve is 403). Refetched when HQ pushes a change
// (live.js: "approval", "campaign", and "hello" after each connect), never polled.
// Shown to editors only (admin, marketer, approver: those GET /api/approvals serves).
// Uses el/api/notify/whoami/$ from console.js, coalesced from live.js, DAYS from calendar.js.
"use strict";

const APPROVERS = new Set(["admin", "approver"]);
const QUEUE_EDITORS = new Set(["admin", "marketer", "approver"]);
const approvalsState = { me: null };

const when = (ts) => (ts === null || ts === undefined ? "—" : new Date(ts * 1000).toLocaleString());

function windowText(w) {
  const days = w.days?.length ? w.days.map((d) => DAYS[d - 1] ?? d).join(", ") : "every day";
  const dates = w.dates?.length ? ` on ${w.dates.join(", ")}` : "";
  return `${days}${dates} ${w.start}–${w.end}`;
}

// What going live means for `c`: from when to when, in which hours, offers valid how long.
function scheduleText(c) {
  const s = c.schedule ?? {};
  const parts = [`from ${s.start ? when(s.start) : "approval"}`, `until ${s.end ? when(s.end) : "ended"}`];
  if (s.windows?.length) parts.push(`in ${s.windows.map(windowText).join("; ")}${s.tz ? ` (${s.tz})` : " (store time)"}`);
  parts.push(`each offer valid ${Math.round(c.validity_s / 60)} min`);
  return parts.join(", ");
}

function creativeItem(cr) {
  return el("li", { "data-creative": cr.id },
    el("strong", {}, cr.title), cr.body ? ` — ${cr.body}` : "",
    el("span", { class: "sub" }, `variant ${cr.id} · ${cr.format}${cr.coupon_code ? ` · coupon ${cr.coupon_code}` : ""}${cr.url ? ` · ${cr.url}` : ""}`));
}

function approvalCard(a, c, canDecide) {
  const kind = c.scenario === "flash" ? "Flash message" : "Campaign";
  const card = el("article", { class: "approval", "data-approval": c.id },
    el("h3", {}, `${c.name} `, el("span", { class: "muted" }, `${kind} · ${c.id}`)),
    el("dl", {},
      el("dt", {}, "Submitted by"), el("dd", { "data-field": "submitted_by" }, a.submitted_by),
      el("dt", {}, "When"), el("dd", { "data-field": "submitted_at" }, when(a.submitted_at)),
      el("dt", {}, "Goes"), el("dd", { "data-field": "target" }, a.target),
      el("dt", {}, "Stores"), el("dd", { "data-field": "stores" }, c.stores.join(", ")),
      el("dt", {}, "Schedule"), el("dd", { "data-field": "schedule" }, scheduleText(c)),
      ...(a.comment ? [el("dt", {}, "Comment"), el("dd", { "data-field": "comment" }, a.comment)] : [])),
    el("ul", { class: "creatives", "data-field": "creatives" }, ...c.creatives.map(creativeItem)));
  if (!canDecide) return card;
  const id = `decide-${c.id}`;
  const box = el("textarea", { id, rows: 2, maxLength: 2000, placeholder: "Why (a rejection needs one)" });
  const approve = el("button", { type: "button", "data-action": "approve" }, "Approve");
  const reject = el("button", { type: "button", class: "secondary", "data-action": "reject" }, "Reject");
  approve.setAttribute("aria-label", `Approve ${c.name}`);
  reject.setAttribute("aria-label", `Reject ${c.name}`);
  if (a.submitted_by === approvalsState.me.actor) approve.title = "You submitted this: four-eyes approval needs another approver";
  for (const [btn, action] of [[approve, "approve"], [reject, "reject"]]) {
    btn.addEventListener("click", () => decide(c, action, box.value, [approve, reject]));
  }
  card.append(el("div", { class: "decide" }, el("label", { htmlFor: id }, `Comment on ${c.name}`), box,
    el("div", { class: "controls" }, approve, reject)));
  return card;
}

function submissionRow(a, c) {
  return el("tr", { "data-submission": c.id },
    el("th", { scope: "row" }, c.name, el("span", { class: "sub" }, c.id)),
    el("td", {}, el("span", { class: `badge ${a.state}`, "data-field": "state" }, a.state)),
    el("td", {}, when(a.submitted_at)),
    el("td", { "data-field": "decided_by" }, a.decided_by ?? "—"),
    el("td", { "data-field": "decision_comment" }, a.decision_comment || "—"));
}

async function decide(c, action, comment, buttons) {
  if (action === "reject" && !comment.trim()) {
    notify(`Say why ${c.name} is rejected, so its author can fix it.`, true);
    return;
  }
  for (const b of buttons) b.disabled = true;
  try {
    const out = await api("POST", `/api/campaigns/${encodeURIComponent(c.id)}/${action}`, { comment });
    notify(action === "approve" ? `Approved “${c.name}”: it is now ${out.campaign.status}.` : `Rejected “${c.name}”.`);
    await refreshApprovals();
  } catch (err) {
    notify(`Could not ${action} ${c.name}: ${err.message}`, true);
    for (const b of buttons) b.disabled = false;
  }
}

// Cards are rebuilt only when their content changed, so a comment being typed survives
// a refetch caused by another campaign's change.
function renderQueue(rows, canDecide) {
  const box = $("#approvals-queue");
  $("#approvals-empty").hidden = rows.length > 0;
  const keep = new Map([...box.children].map((n) => [n.dataset.approval, n]));
  box.replaceChildren(...rows.map(({ approval: a, campaign: c }) => {
    const sig = JSON.stringify([a, c, canDecide]);
    const old = keep.get(c.id);
    if (old && old.dataset.sig === sig) return old;
    const card = approvalCard(a, c, canDecide);
    card.dataset.sig = sig;
    return card;
  }));
}

function renderMine(rows) {
  const mine = rows.filter(({ approval: a }) => a.submitted_by === approvalsState.me.actor).reverse();
  $("#submissions-box").hidden = mine.length === 0;
  $("#submissions tbody").replaceChildren(...mine.slice(0, 20).map(({ approval: a, campaign: c }) => submissionRow(a, c)));
}

async function refreshApprovals() {
  if (!approvalsState.me) return;
  try {
    const [queue, all] = await Promise.all([api("GET", "/api/approvals?state=submitted"),
      api("GET", "/api/approvals?state=all")]);
    renderQueue(queue, APPROVERS.has(approvalsState.me.role));
    renderMine(all);
  } catch (err) {
    // console.js reports HQ unreachable; keep the last lists
  }
}
const refreshApprovalsSoon = coalesced(refreshApprovals);

async function initApprovals() {
  const me = await whoami();
  if (!QUEUE_EDITORS.has(me.role)) return;  // staff and analysts: no queue (HQ says 403)
  approvalsState.me = me;
  $("#approvals").hidden = false;
  $("#approvals-who").textContent = APPROVERS.has(me.role)
    ? "You may approve or reject what others submitted."
    : "An approver decides; you see the queue and what became of your submissions.";
  window.addEventListener("aislecast:live", (ev) => {
    const k = ev.detail.kind;
    if (k === "hello" || k === "approval" || k === "campaign") refreshApprovalsSoon();
  });
  await refreshApprovals();
}

document.addEventListener("DOMContentLoaded", () => { initApprovals().catch((err) => notify(`Approvals: ${err.message}`, true)); });
